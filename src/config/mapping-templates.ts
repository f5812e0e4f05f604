import nunjucks from 'nunjucks';

/**
 * The template language of `user_mapping_provider.config`: Synapse's Jinja dialect as nunjucks speaks it. It lives on
 * the ground floor because it is part of what a config file may say (as durations and URLs are): the config check and
 * identity/user-mapping.ts (which renders the templates against claims, behind its sandbox) compile with this one
 * environment, so a template the check accepts is one start-up and the first login accept too.
 */
export function createTemplateEnvironment(): nunjucks.Environment {
  const env = new nunjucks.Environment(null, { autoescape: false, throwOnUndefined: false });
  // Synapse's filter (synapse/handlers/oidc.py): the part of an email address before the '@'.
  env.addFilter('localpart_from_email', (value: unknown) => (typeof value === 'string' ? (value.split('@')[0] ?? '') : ''));
  return env;
}

/** nunjucks' parser and AST are public at run time but untyped. */
interface TemplateNode {
  findAll(type: unknown): TemplateNode[];
  readonly name?: { readonly value?: unknown };
}
const { parser, nodes } = nunjucks as unknown as {
  parser: { parse(source: string, extensions: unknown, options: unknown): TemplateNode };
  nodes: { Filter: unknown };
};

/**
 * Why a mapping template would fail, or undefined. Compiling catches syntax errors; an unknown filter compiles in
 * nunjucks and fails only when rendered, at a user's login, so the filters are looked up here as Jinja does when it
 * compiles ("No filter named ...").
 */
export function templateProblem(source: string): string | undefined {
  const env = createTemplateEnvironment();
  try {
    // eagerCompile, exactly as user-mapping.ts compiles at start-up.
    new nunjucks.Template(source, env, undefined, true);
  } catch (err: unknown) {
    return `does not compile: ${compileErrorText(err)}`;
  }
  const envInternals = env as unknown as { extensionsList: unknown; opts: unknown };
  const root = parser.parse(source, envInternals.extensionsList, envInternals.opts);
  for (const filter of root.findAll(nodes.Filter)) {
    const name = filter.name?.value;
    if (typeof name !== 'string') continue;
    try {
      env.getFilter(name);
    } catch {
      return `no filter named "${name}"`;
    }
  }
  return undefined;
}

/** nunjucks prefixes "(unknown path)" (the template has no file) and breaks lines; keep the position and the reason. */
function compileErrorText(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.replace(/^\(unknown path\)\s*/, '').replace(/\s+/g, ' ').trim();
}

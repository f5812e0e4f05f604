import type { ProblemList } from './problem-list.js';

const VARIABLE_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * Replaces `${NAME}` in every string value (never in keys) with the environment variable NAME; `$${` stands for a
 * literal `${`. Runs on the parsed YAML, so a substituted value can never inject YAML structure.
 */
export function substituteEnv(node: unknown, env: NodeJS.ProcessEnv, problems: ProblemList, path: PropertyKey[] = []): unknown {
  if (typeof node === 'string') return substituteString(node, env, problems, path);
  if (Array.isArray(node)) return node.map((item, index) => substituteEnv(item, env, problems, [...path, index]));
  if (isMapping(node)) {
    return Object.fromEntries(Object.entries(node).map(([key, value]) => [key, substituteEnv(value, env, problems, [...path, key])]));
  }
  return node;
}

function substituteString(text: string, env: NodeJS.ProcessEnv, problems: ProblemList, path: PropertyKey[]): string {
  let out = '';
  let position = 0;
  while (position < text.length) {
    const dollar = text.indexOf('$', position);
    if (dollar < 0) {
      out += text.slice(position);
      break;
    }
    out += text.slice(position, dollar);
    if (text.startsWith('$${', dollar)) {
      out += '${';
      position = dollar + 3;
    } else if (text.startsWith('${', dollar)) {
      const close = text.indexOf('}', dollar + 2);
      const name = close < 0 ? undefined : text.slice(dollar + 2, close);
      if (name === undefined || !VARIABLE_NAME.test(name)) {
        // A typo such as ${HOMESERVER-SECRET} would otherwise become the literal secret without anyone noticing.
        const reference = close < 0 ? text.slice(dollar) : text.slice(dollar, close + 1);
        problems.report(path, `"${reference}" is not a valid environment reference: use \${NAME} with letters, digits and _, or $\${ for a literal \${`);
        return text;
      }
      const value = env[name];
      if (value === undefined) problems.report(path, `environment variable ${name} is not set`);
      else out += value;
      position = close + 1;
    } else {
      out += '$';
      position = dollar + 1;
    }
  }
  return out;
}

export function isMapping(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

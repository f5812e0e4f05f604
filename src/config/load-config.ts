import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parseDocument } from 'yaml';
import { isMapping, substituteEnv } from './env-substitution.js';
import { resolveFileReferences } from './file-references.js';
import { describeIssue, formatIssues } from './format-issues.js';
import { ProblemList } from './problem-list.js';
import { configSchema, type Config } from './schema.js';
import { ConfigError } from './config-error.js';
import { deepFreeze } from './deep-freeze.js';

// Defined in config-error.ts, which the running proxy imports without this loader (config-thread.ts).
export { ConfigError };

export interface ParseOptions {
  /** Variables for `${NAME}` substitution; default process.env. */
  readonly env?: NodeJS.ProcessEnv;
  /** Folder relative `*_path` files and appservice registrations are read from; default the working directory. */
  readonly baseDir?: string;
}

/** Reads, validates and freezes the config file; relative paths inside it are relative to its folder. */
export function loadConfig(path: string, env: NodeJS.ProcessEnv = process.env): Config {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err: unknown) {
    throw new ConfigError([`${path}: cannot read the configuration file (${err instanceof Error ? err.message : String(err)})`]);
  }
  return parseConfig(text, { env, baseDir: dirname(resolve(path)) });
}

/**
 * Validates a config document: YAML, `${ENV}` references, secret and appservice registration files, the schema with
 * its cross-field rules, mapping templates, and the OP rules the provider constructor asserts. Every problem at once,
 * each with its key path; the result is frozen. A start and --check-config both run exactly this (main.ts), so
 * nothing after it may refuse a config that passed.
 */
export function parseConfig(yamlText: string, options: ParseOptions = {}): Config {
  const env = options.env ?? process.env;
  const baseDir = options.baseDir ?? process.cwd();

  const document = parseDocument(yamlText, { merge: true, uniqueKeys: true, prettyErrors: true });
  if (document.errors.length > 0) {
    // prettyErrors puts the line and column into the message's first line.
    throw new ConfigError(document.errors.map((error) => `YAML: ${firstLine(error.message).replace(/:$/, '')}`));
  }
  const raw: unknown = document.toJS({ maxAliasCount: 100 });
  if (!isMapping(raw)) throw new ConfigError(['(top level): the configuration must be a YAML mapping of keys to values']);

  const problems = new ProblemList();
  const substituted = substituteEnv(withoutEmptyValues(raw), env, problems) as Record<string, unknown>;
  resolveFileReferences(substituted, baseDir, problems);

  const result = configSchema.safeParse(substituted, { error: describeIssue });
  const lines = [...problems.lines, ...(result.success ? [] : formatIssues(result.error.issues).filter((line) => !problems.isCovered(line)))];
  if (lines.length > 0 || !result.success) throw new ConfigError(inSectionOrder(lines));
  return deepFreeze(result.data) as Config;
}

const SECTION_ORDER = Object.keys(configSchema.shape);

/** Groups the problems by top-level section, in the order example.yaml documents them; unknown sections last. */
function inSectionOrder(lines: readonly string[]): string[] {
  const rank = (line: string) => {
    const index = SECTION_ORDER.indexOf(/^[^.[:]*/.exec(line)?.[0] ?? '');
    return index < 0 ? SECTION_ORDER.length : index;
  };
  return lines.map((line, position) => ({ line, position, rank: rank(line) })).sort((a, b) => a.rank - b.rank || a.position - b.position).map(({ line }) => line);
}

/** `key:` with nothing after it means "use the default", as in Synapse's homeserver.yaml (`oidc_providers:`). */
function withoutEmptyValues(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(withoutEmptyValues);
  if (isMapping(node)) {
    return Object.fromEntries(Object.entries(node).filter(([, value]) => value !== null).map(([key, value]) => [key, withoutEmptyValues(value)]));
  }
  return node;
}

function firstLine(message: string): string {
  return message.split('\n')[0] ?? message;
}

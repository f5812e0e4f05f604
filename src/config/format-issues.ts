import type { z } from 'zod';

/** `oidc_providers[0].issuer`: dots between keys, `[i]` for list entries. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const segment of path) {
    if (typeof segment === 'number') out += `[${segment}]`;
    else out += out === '' ? String(segment) : `.${String(segment)}`;
  }
  return out === '' ? '(top level)' : out;
}

/** One line per problem; an object with several unknown keys gives one line per key, each naming its key. */
export function formatIssues(issues: readonly z.core.$ZodIssue[]): string[] {
  const problems: string[] = [];
  for (const issue of issues) {
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) problems.push(`${formatPath([...issue.path, key])}: unknown key`);
    } else if (issue.code === 'invalid_key') {
      // A map key that failed its own schema: the inner issue says why.
      problems.push(`${formatPath(issue.path)}: ${issue.issues[0]?.message ?? 'is not an accepted key'}`);
    } else {
      problems.push(`${formatPath(issue.path)}: ${issue.message}`);
    }
  }
  return problems;
}

/**
 * Messages an admin can act on, used for every parse of the config (schema-level messages still win). Zod's
 * defaults ("Invalid input: expected string, received undefined") read like a stack trace.
 */
export const describeIssue: z.core.$ZodErrorMap = (issue) => {
  switch (issue.code) {
    case 'invalid_type':
      if (issue.input === undefined) return 'is required';
      return `must be ${EXPECTED[issue.expected] ?? issue.expected} (got ${describeValue(issue.input)})`;
    case 'invalid_value':
      return issue.values.length === 1 ? `must be ${JSON.stringify(issue.values[0])}` : `must be one of: ${issue.values.map((v) => String(v)).join(', ')}`;
    case 'too_small':
      return bound(issue.origin, 'least', issue.minimum, issue.inclusive);
    case 'too_big':
      return bound(issue.origin, 'most', issue.maximum, issue.inclusive);
    default:
      return undefined;
  }
};

const EXPECTED: Readonly<Record<string, string>> = {
  string: 'a string',
  number: 'a number',
  int: 'an integer',
  boolean: 'true or false',
  array: 'a list',
  object: 'a mapping',
  record: 'a mapping',
};

function describeValue(value: unknown): string {
  if (value === null) return 'an empty value';
  if (Array.isArray(value)) return 'a list';
  switch (typeof value) {
    case 'string':
      return 'a string';
    case 'number':
      return 'a number';
    case 'boolean':
      return value ? 'true' : 'false';
    case 'object':
      return 'a mapping';
    default:
      return typeof value;
  }
}

function bound(origin: string, side: 'least' | 'most', limit: number | bigint, inclusive: boolean | undefined): string {
  const n = Number(limit);
  switch (origin) {
    case 'string':
      if (side === 'least' && n === 1) return 'must not be empty';
      return `must be at ${side} ${inclusive === false ? (side === 'least' ? n + 1 : n - 1) : n} characters long`;
    case 'array':
      if (side === 'least' && n === 1) return 'must not be an empty list';
      return `must have at ${side} ${n} entries`;
    default:
      if (inclusive === false) return `must be ${side === 'least' ? 'greater' : 'less'} than ${n}`;
      return `must be at ${side} ${n}`;
  }
}

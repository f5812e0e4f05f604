import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { isMapping } from './env-substitution.js';
import { readFailure } from './read-failure.js';

/** What the proxy uses of one Synapse appservice registration file. */
export interface AppserviceRegistration {
  readonly id: string;
  readonly asToken: string;
  readonly senderLocalpart: string;
  /** Anchored: Synapse matches a namespace regex against the whole user id. */
  readonly userNamespaces: readonly RegExp[];
  /** Some user namespace is exclusive. */
  readonly exclusiveUsers: boolean;
  readonly url: string | null;
  /** Absent counts as true, as in Synapse. */
  readonly rateLimited: boolean;
  /** MSC4190 device management (Synapse `io.element.msc4190`, tuwunel `device_management`): appservice login is off. */
  readonly msc4190: boolean;
}

export type RegistrationResult = { readonly ok: true; readonly registration: AppserviceRegistration } | { readonly ok: false; readonly problems: readonly string[] };

/**
 * Reads the registration files `appservice_config_files` points at (absolute paths) with Synapse's own rules
 * (synapse/config/appservice.py, load_appservices and _load_appservice): the proxy reads the files Synapse reads, so
 * a file Synapse refuses is refused here too, at the same moment (start-up and --check-config). One entry per path,
 * in order; each problem says which file and which field.
 */
export function readAppserviceRegistrations(paths: readonly string[]): RegistrationResult[] {
  const results = paths.map(readRegistration);
  // Synapse refuses an id or an as_token used by two files: a token must name one appservice.
  const seenIds = new Map<string, string>();
  const seenTokens = new Map<string, string>();
  return results.map((result, index) => {
    if (!result.ok) return result;
    const path = paths[index] ?? '';
    const { id, asToken } = result.registration;
    const problems: string[] = [];
    const sameId = seenIds.get(id);
    if (sameId === undefined) seenIds.set(id, path);
    else problems.push(`${path}: id "${id}" is already the id of ${sameId}`);
    const sameToken = seenTokens.get(asToken);
    if (sameToken === undefined) seenTokens.set(asToken, path);
    else problems.push(`${path}: as_token is already the as_token of ${sameToken}`);
    return problems.length === 0 ? result : { ok: false, problems };
  });
}

function readRegistration(path: string): RegistrationResult {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err: unknown) {
    return { ok: false, problems: [`cannot read ${path}: ${readFailure(err)}`] };
  }
  let doc: unknown;
  try {
    doc = parse(text);
  } catch (err: unknown) {
    return { ok: false, problems: [`${path}: not valid YAML (${firstLine(err)})`] };
  }
  if (!isMapping(doc)) return { ok: false, problems: [`${path}: must be a YAML mapping (a Synapse appservice registration)`] };

  const problems: string[] = [];
  const fail = (field: string, message: string) => problems.push(`${path}: ${field} ${message}`);
  const requiredString = (field: string): string => {
    const value = doc[field];
    if (typeof value === 'string' && value !== '') return value;
    fail(field, 'is required (a non-empty string)');
    return '';
  };
  const id = requiredString('id');
  const asToken = requiredString('as_token');
  requiredString('hs_token');
  const senderLocalpart = requiredString('sender_localpart');
  // Synapse: "url must either be a string or explicitly null, not missing, to avoid accidentally turning off push".
  if (typeof doc['url'] !== 'string' && doc['url'] !== null) fail('url', 'is required (a URL, or null for an appservice that receives no events)');

  const userNamespaces: RegExp[] = [];
  let exclusiveUsers = false;
  const namespaces = doc['namespaces'];
  if (!isMapping(namespaces)) {
    fail('namespaces', 'is required (a mapping of users, aliases, rooms)');
  } else {
    for (const kind of ['users', 'aliases', 'rooms']) {
      const entries = namespaces[kind];
      if (entries === undefined || entries === null) continue;
      if (!Array.isArray(entries)) {
        fail(`namespaces.${kind}`, 'must be a list of { exclusive, regex }');
        continue;
      }
      entries.forEach((entry: unknown, index) => {
        const at = `namespaces.${kind}[${index}]`;
        if (!isMapping(entry)) {
          fail(at, 'must be a mapping { exclusive, regex }');
          return;
        }
        if (typeof entry['exclusive'] !== 'boolean') fail(`${at}.exclusive`, 'is required (true or false)');
        const regex = entry['regex'];
        if (typeof regex !== 'string') {
          fail(`${at}.regex`, 'is required (a string)');
          return;
        }
        try {
          const pattern = new RegExp(`^(?:${regex})$`);
          if (kind === 'users') {
            userNamespaces.push(pattern);
            if (entry['exclusive'] === true) exclusiveUsers = true;
          }
        } catch (err: unknown) {
          fail(`${at}.regex`, `is not a regular expression this proxy can use (${firstLine(err)})`);
        }
      });
    }
  }
  if (problems.length > 0) return { ok: false, problems };
  const url = typeof doc['url'] === 'string' ? doc['url'] : null;
  const msc4190 = doc['io.element.msc4190'] === true || doc['org.matrix.msc4190'] === true || doc['device_management'] === true;
  return { ok: true, registration: { id, asToken, senderLocalpart, userNamespaces, exclusiveUsers, url, rateLimited: doc['rate_limited'] !== false, msc4190 } };
}

function firstLine(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.split('\n')[0] ?? text;
}

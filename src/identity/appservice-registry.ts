import { readFileSync } from 'node:fs';
import { timingSafeEqual, createHash } from 'node:crypto';
import { parse } from 'yaml';

/** An application service as Synapse loads it from its registration file (the same files, pointed at by config). */
export interface Appservice {
  readonly id: string;
  readonly senderLocalpart: string;
  readonly userNamespaces: readonly RegExp[];
  readonly asTokenDigest: Buffer;
}

export class AppserviceRegistry {
  private constructor(private readonly appservices: readonly Appservice[]) {}

  static empty(): AppserviceRegistry {
    return new AppserviceRegistry([]);
  }

  /** Reads registration YAML files; a malformed file is a start-up error naming the file and the field. */
  static load(paths: readonly string[]): AppserviceRegistry {
    return new AppserviceRegistry(paths.map(loadRegistration));
  }

  get enabled(): boolean {
    return this.appservices.length > 0;
  }

  /** The appservice owning this as_token (constant-time over all of them: no timing hint of which exists). */
  byToken(asToken: string): Appservice | undefined {
    const digest = createHash('sha256').update(asToken).digest();
    let found: Appservice | undefined;
    for (const appservice of this.appservices) {
      if (timingSafeEqual(digest, appservice.asTokenDigest) && found === undefined) found = appservice;
    }
    return found;
  }

  /** Spec: an appservice may act as its sender user and as any user matching its user namespaces. */
  static mayActAs(appservice: Appservice, userId: string, localpart: string): boolean {
    if (localpart === appservice.senderLocalpart) return true;
    return appservice.userNamespaces.some((pattern) => pattern.test(userId));
  }
}

function loadRegistration(path: string): Appservice {
  let doc: unknown;
  try {
    doc = parse(readFileSync(path, 'utf8'));
  } catch (err: unknown) {
    throw new Error(`appservice_config_files: cannot read ${path}: ${err instanceof Error ? err.message : String(err)}`);
  }
  const fail = (field: string): never => {
    throw new Error(`appservice_config_files: ${path}: ${field} is missing or invalid`);
  };
  if (typeof doc !== 'object' || doc === null) return fail('the document');
  const record = doc as Record<string, unknown>;
  const id = typeof record['id'] === 'string' ? record['id'] : fail('id');
  const asToken = typeof record['as_token'] === 'string' && record['as_token'] !== '' ? record['as_token'] : fail('as_token');
  const senderLocalpart = typeof record['sender_localpart'] === 'string' ? record['sender_localpart'] : fail('sender_localpart');
  const namespaces = (record['namespaces'] ?? {}) as Record<string, unknown>;
  const users = Array.isArray(namespaces['users']) ? (namespaces['users'] as unknown[]) : [];
  const userNamespaces = users.map((entry, index) => {
    const regex = (entry as Record<string, unknown> | null)?.['regex'];
    if (typeof regex !== 'string') return fail(`namespaces.users[${index}].regex`);
    try {
      // Synapse matches namespace regexes against the whole user id.
      return new RegExp(`^(?:${regex})$`);
    } catch {
      return fail(`namespaces.users[${index}].regex`);
    }
  });
  return { id, senderLocalpart, userNamespaces, asTokenDigest: createHash('sha256').update(asToken).digest() };
}

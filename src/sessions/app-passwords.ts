import type { Clock } from '../clock.js';
import { isNumber, isOptional, isString, readRecord, recordFormat, type Fields, type RecordLogger } from '../store/record-format.js';
import type { Store } from '../store/store.js';
import { hashToken, newSessionId, randomBase62, sameHash } from './tokens.js';

/**
 * An app password (issue 15, item 3): a generated secret a user makes on the account page for a password-only
 * client, tied to the OP grant the account page's sign-in obtained (its refresh token, sealed). Logging in with it
 * needs no password grant at the OP; re-validating its sessions spends that OP grant instead, so the OP still decides
 * whether the user may keep using Matrix.
 *
 * Only a hash of the secret is stored: the secret is 32 base62 characters (about 190 bits) of randomness, so a fast
 * hash is enough (nothing to brute-force that a slow hash would protect), as for the proxy's access tokens.
 */
export interface AppPassword {
  readonly id: string;
  readonly localpart: string;
  readonly name: string;
  readonly idpId: string;
  readonly issuer: string;
  readonly sub: string;
  /** The account's e-mail at the OP when the page's sign-in said (verified), for logins by e-mail. */
  readonly email?: string;
  readonly secretHash: string;
  /** The OP refresh token of the grant, sealed (secret-box.ts); rotated tokens are written back here. */
  readonly sealedOpRefreshToken: string;
  /** When the OP last accepted the grant (creation, or a refresh-token grant since). */
  readonly lastValidatedAt: number;
  readonly createdAt: number;
  readonly lastUsedAt?: number;
  /** Set when the OP refused the grant (user disabled, grant revoked): the app password logs nobody in any more. */
  readonly refusedAt?: number;
}

/** `mcpp_<id>_<secret>`: the prefix tells a login apart from an OP password without a store read or an OP call. */
const APP_PASSWORD_PATTERN = /^mcpp_([0-9A-Za-z]{16})_([0-9A-Za-z]{32})$/;
const NAME_MAX_LENGTH = 64;

export const appPasswordKeys = {
  record: (id: string) => `app-password:${id}`,
  ofUser: (localpart: string) => `app-passwords-of:${localpart}`,
} as const;

export const appPasswordRecord = recordFormat<AppPassword>({ name: 'app_password', version: 1, decoders: { 1: isAppPasswordFields } });

function isAppPasswordFields(f: Fields): boolean {
  return (
    isString(f.id) &&
    isString(f.localpart) &&
    isString(f.name) &&
    isString(f.idpId) &&
    isString(f.issuer) &&
    isString(f.sub) &&
    isOptional(f.email, isString) &&
    isString(f.secretHash) &&
    isString(f.sealedOpRefreshToken) &&
    isNumber(f.lastValidatedAt) &&
    isNumber(f.createdAt) &&
    isOptional(f.lastUsedAt, isNumber) &&
    isOptional(f.refusedAt, isNumber)
  );
}

/** Whether a presented password has the app-password shape (shape only: decides whether the OP is asked at all). */
export function isAppPasswordFormat(secret: string): boolean {
  return APP_PASSWORD_PATTERN.test(secret);
}

/** A display name for an app password: trimmed, printable, bounded; undefined when there is nothing usable. */
export function cleanAppPasswordName(raw: string | null): string | undefined {
  const name = (raw ?? '').replace(/[\u0000-\u001f\u007f]/g, '').trim();
  return name.length === 0 || name.length > NAME_MAX_LENGTH ? undefined : name;
}

export type CreateResult = { readonly ok: true; readonly secret: string; readonly appPassword: AppPassword } | { readonly ok: false; readonly reason: 'too_many' };

export class AppPasswords {
  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    private readonly logger: RecordLogger,
  ) {}

  async create(input: Pick<AppPassword, 'localpart' | 'name' | 'idpId' | 'issuer' | 'sub' | 'email' | 'sealedOpRefreshToken'>, maxPerUser: number): Promise<CreateResult> {
    // Two concurrent creations may both pass this count: the limit bounds storage per user, not a security property.
    if ((await this.list(input.localpart)).length >= maxPerUser) return { ok: false, reason: 'too_many' };
    const id = newSessionId();
    const secret = `mcpp_${id}_${randomBase62(32)}`;
    const now = this.clock.now();
    const appPassword: AppPassword = { ...input, id, secretHash: hashToken(secret), lastValidatedAt: now, createdAt: now };
    await this.store.set(appPasswordKeys.record(id), appPasswordRecord.encode(appPassword));
    await this.store.addToSet(appPasswordKeys.ofUser(input.localpart), id);
    return { ok: true, secret, appPassword };
  }

  async get(id: string): Promise<AppPassword | undefined> {
    const key = appPasswordKeys.record(id);
    return readRecord(appPasswordRecord, await this.store.get(key), key, this.logger);
  }

  /** The user's app passwords, oldest first. */
  async list(localpart: string): Promise<AppPassword[]> {
    const ids = await this.store.setMembers(appPasswordKeys.ofUser(localpart));
    const found: AppPassword[] = [];
    for (const id of ids) {
      const appPassword = await this.get(id);
      if (appPassword?.localpart === localpart) found.push(appPassword);
    }
    return found.sort((a, b) => a.createdAt - b.createdAt || a.id.localeCompare(b.id));
  }

  /** The app password a presented secret opens; undefined when unknown, wrong or malformed (refused ones included). */
  async verify(secret: string): Promise<AppPassword | undefined> {
    const match = APP_PASSWORD_PATTERN.exec(secret);
    if (match === null) return undefined;
    const appPassword = await this.get(match[1] ?? '');
    return appPassword !== undefined && sameHash(appPassword.secretHash, hashToken(secret)) ? appPassword : undefined;
  }

  /** Removes one of the user's app passwords; undefined when it is not theirs (or already gone). */
  async revoke(localpart: string, id: string): Promise<AppPassword | undefined> {
    const appPassword = await this.get(id);
    if (appPassword === undefined || appPassword.localpart !== localpart) return undefined;
    await this.store.delete(appPasswordKeys.record(id));
    await this.store.removeFromSet(appPasswordKeys.ofUser(localpart), id);
    return appPassword;
  }

  /**
   * Compare-and-set update (re-validation writes the rotated OP refresh token back): retried on a lost race,
   * undefined when the record is gone (revoked meanwhile).
   */
  async update(id: string, change: (current: AppPassword) => AppPassword): Promise<AppPassword | undefined> {
    const key = appPasswordKeys.record(id);
    for (let attempt = 0; attempt < 5; attempt++) {
      const raw = await this.store.get(key);
      const current = readRecord(appPasswordRecord, raw, key, this.logger);
      if (raw === undefined || current === undefined) return undefined;
      const next = change(current);
      if (await this.store.compareAndSet(key, raw, appPasswordRecord.encode(next))) return next;
    }
    throw new Error(`app password ${id}: too many concurrent updates`);
  }
}

import { isOptional, isString, readRecord, recordFormat, type Fields, type RecordLogger } from '../store/record-format.js';
import type { Store } from '../store/store.js';
import type { SessionOrigin } from './session.js';
import { isOpOrigin } from './session-store.js';
import { hashToken, isOpaqueSecret, newOpaqueSecret } from './tokens.js';

/** What a login token stands for: an identity already authenticated at the OP, waiting for `m.login.token`. */
export interface LoginGrant {
  readonly localpart: string;
  readonly origin: Extract<SessionOrigin, { kind: 'password' | 'sso' | 'token' }>;
  readonly displayName?: string;
}

export const loginTokenKeys = {
  /** The grant, under the hash of its token. */
  grant: (tokenHash: string) => `login-token:${tokenHash}`,
  bySid: (idpId: string, sid: string) => `login-tokens-by-sid:${idpId}:${sid}`,
  bySub: (idpId: string, sub: string) => `login-tokens-by-sub:${idpId}:${sub}`,
} as const;

/** Version 1 added only `v`; grants written without it (releases up to d73999c, version 0) are still redeemed. */
export const loginGrantRecord = recordFormat<LoginGrant>({ name: 'login_grant', version: 1, decoders: { 0: isLoginGrantFields, 1: isLoginGrantFields } });

function isLoginGrantFields(f: Fields): boolean {
  return isString(f.localpart) && isOpOrigin(f.origin) && isOptional(f.displayName, isString);
}

/** Single-use login tokens (`m.login.token`); only their hashes are stored. */
export class LoginTokenStore {
  constructor(
    private readonly store: Store,
    private readonly logger: RecordLogger,
  ) {}

  async mint(grant: LoginGrant, ttlMs: number): Promise<string> {
    const token = newOpaqueSecret();
    const hash = hashToken(token);
    // Indexed by OP session and subject so a back-channel logout can void tokens not yet redeemed. Issued together
    // (one round trip on Redis, issue 19): a logout that reads the index before it is written still leaves its
    // markers, which the redemption checks (op-logouts.ts grantStillUsable).
    await Promise.all([
      this.store.set(loginTokenKeys.grant(hash), loginGrantRecord.encode(grant), { ttlMs }),
      this.store.addToSet(loginTokenKeys.bySub(grant.origin.idpId, grant.origin.sub), hash, ttlMs),
      ...(grant.origin.sid === undefined ? [] : [this.store.addToSet(loginTokenKeys.bySid(grant.origin.idpId, grant.origin.sid), hash, ttlMs)]),
    ]);
    return token;
  }

  /**
   * Exactly one of any number of concurrent redemptions gets the grant; unknown, used, expired or unreadable →
   * undefined (an unreadable grant is used up all the same: it is single-use and short-lived).
   */
  async redeem(token: string): Promise<LoginGrant | undefined> {
    if (!isOpaqueSecret(token)) return undefined;
    const key = loginTokenKeys.grant(hashToken(token));
    return readRecord(loginGrantRecord, await this.store.consume(key), key, this.logger);
  }

  /** Voids every unredeemed token of an OP session (sid) or subject (sub). Returns how many were voided. */
  async voidFor(idpId: string, selector: { sid?: string; sub?: string }): Promise<number> {
    const hashes = new Set<string>();
    if (selector.sid !== undefined) for (const h of await this.store.setMembers(loginTokenKeys.bySid(idpId, selector.sid))) hashes.add(h);
    if (selector.sub !== undefined) for (const h of await this.store.setMembers(loginTokenKeys.bySub(idpId, selector.sub))) hashes.add(h);
    if (hashes.size === 0) return 0;
    return this.store.delete(...[...hashes].map(loginTokenKeys.grant));
  }
}

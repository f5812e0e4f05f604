import type { Store } from '../store/store.js';
import type { SessionOrigin } from './session.js';
import { hashToken, randomBase62 } from './tokens.js';

/** What a login token stands for: an identity already authenticated at the OP, waiting for `m.login.token`. */
export interface LoginGrant {
  readonly localpart: string;
  readonly origin: Extract<SessionOrigin, { kind: 'password' | 'sso' | 'token' }>;
  readonly displayName?: string;
}

const key = (hash: string) => `login-token:${hash}`;
const bySidKey = (idpId: string, sid: string) => `login-tokens-by-sid:${idpId}:${sid}`;
const bySubKey = (idpId: string, sub: string) => `login-tokens-by-sub:${idpId}:${sub}`;

/** Single-use login tokens (`m.login.token`); only their hashes are stored. */
export class LoginTokenStore {
  constructor(private readonly store: Store) {}

  async mint(grant: LoginGrant, ttlMs: number): Promise<string> {
    const token = randomBase62(32);
    const hash = hashToken(token);
    await this.store.set(key(hash), JSON.stringify(grant), { ttlMs });
    // Indexed by OP session and subject so a back-channel logout can void tokens not yet redeemed.
    await this.store.addToSet(bySubKey(grant.origin.idpId, grant.origin.sub), hash, ttlMs);
    if (grant.origin.sid !== undefined) await this.store.addToSet(bySidKey(grant.origin.idpId, grant.origin.sid), hash, ttlMs);
    return token;
  }

  /** Exactly one of any number of concurrent redemptions gets the grant; unknown, used or expired → undefined. */
  async redeem(token: string): Promise<LoginGrant | undefined> {
    if (!/^[0-9A-Za-z]{32}$/.test(token)) return undefined;
    const raw = await this.store.consume(key(hashToken(token)));
    return raw === undefined ? undefined : (JSON.parse(raw) as LoginGrant);
  }

  /** Voids every unredeemed token of an OP session (sid) or subject (sub). Returns how many were voided. */
  async voidFor(idpId: string, selector: { sid?: string; sub?: string }): Promise<number> {
    const hashes = new Set<string>();
    if (selector.sid !== undefined) for (const h of await this.store.setMembers(bySidKey(idpId, selector.sid))) hashes.add(h);
    if (selector.sub !== undefined) for (const h of await this.store.setMembers(bySubKey(idpId, selector.sub))) hashes.add(h);
    if (hashes.size === 0) return 0;
    return this.store.delete(...[...hashes].map(key));
  }
}

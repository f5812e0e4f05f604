import type { Clock } from '../clock.js';
import { isBoolean, isNumber, isOptional, isString, readRecord, recordFormat, type Fields, type RecordLogger } from '../store/record-format.js';
import type { Store } from '../store/store.js';
import { loggedOutAtOpSince } from './op-logouts.js';
import { hashToken, isOpaqueSecret, newOpaqueSecret, sameHash } from './tokens.js';

/**
 * A signed-in visit of the account page (issue 15): who signed in at the OP, when the OP last authenticated them
 * (`authTime`, for the actions that need a recent sign-in) and until when the page session lasts. The browser holds
 * only the id, in an HttpOnly cookie.
 *
 * Each page session also has a homeserver token: an opaque token the proxy's introspection answers as the user,
 * without a device, for the page's own reads of the homeserver's device list (GET /devices). It never leaves the
 * proxy; Synapse caches its introspection for up to 2 minutes after the page session ends.
 */
export interface AccountSession {
  readonly localpart: string;
  readonly idpId: string;
  readonly issuer: string;
  readonly sub: string;
  readonly sid?: string;
  /** When the OP last authenticated the user (its `auth_time`, else when the proxy got the answer), ms. */
  readonly authTime: number;
  /**
   * When the proxy asked the OP for this sign-in (its clock), before the code exchange: a back-channel logout of that
   * OP session at or after it ends the page session. Absent in records written before it was kept: `createdAt` then.
   */
  readonly signedInAt?: number;
  readonly createdAt: number;
  readonly expiresAt: number;
  readonly homeserverTokenHash: string;
  /** The same token, sealed (secret-box.ts) for the page's own calls: never in the store in clear. */
  readonly sealedHomeserverToken: string;
  /**
   * The sign-in's OP refresh token, sealed: an app password created in this page session takes it (and it is removed
   * here, `opGrantTaken`), so no two app passwords spend the same refresh token — at an OP that rotates them, the
   * second use of a spent token is a replay and can revoke the whole grant (RFC 9700 §4.14.2).
   */
  readonly sealedOpRefreshToken?: string;
  /** Set once an app password took the refresh token: the next one needs a new sign-in at the OP. */
  readonly opGrantTaken?: boolean;
  /** The account's verified e-mail at the OP, when the sign-in said: an app password then logs in by it too. */
  readonly email?: string;
}

const HOMESERVER_TOKEN_PREFIX = 'mcpw_';

export const accountSessionKeys = {
  session: (id: string) => `account-session:${hashToken(id)}`,
  byHomeserverToken: (token: string) => `account-hs-token:${hashToken(token)}`,
} as const;

export const accountSessionRecord = recordFormat<AccountSession>({ name: 'account_session', version: 1, decoders: { 1: isAccountSessionFields } });

function isAccountSessionFields(f: Fields): boolean {
  return (
    isString(f.localpart) &&
    isString(f.idpId) &&
    isString(f.issuer) &&
    isString(f.sub) &&
    isOptional(f.sid, isString) &&
    isNumber(f.authTime) &&
    isOptional(f.signedInAt, isNumber) &&
    isNumber(f.createdAt) &&
    isNumber(f.expiresAt) &&
    isString(f.homeserverTokenHash) &&
    isString(f.sealedHomeserverToken) &&
    isOptional(f.sealedOpRefreshToken, isString) &&
    isOptional(f.opGrantTaken, isBoolean) &&
    isOptional(f.email, isString)
  );
}

/** Whether a token presented to introspection is an account page's homeserver token (shape only). */
export function isAccountHomeserverToken(token: string): boolean {
  return token.startsWith(HOMESERVER_TOKEN_PREFIX);
}

export class AccountSessions {
  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    private readonly logger: RecordLogger,
  ) {}

  async create(
    input: Omit<AccountSession, 'createdAt' | 'expiresAt' | 'homeserverTokenHash' | 'sealedHomeserverToken'>,
    lifetimeMs: number,
    seal: (secret: string) => string,
  ): Promise<{ id: string; session: AccountSession }> {
    const id = newOpaqueSecret();
    const homeserverToken = `${HOMESERVER_TOKEN_PREFIX}${newOpaqueSecret()}`;
    const now = this.clock.now();
    const session: AccountSession = {
      ...input,
      createdAt: now,
      expiresAt: now + lifetimeMs,
      homeserverTokenHash: hashToken(homeserverToken),
      sealedHomeserverToken: seal(homeserverToken),
    };
    await Promise.all([
      this.store.set(accountSessionKeys.session(id), accountSessionRecord.encode(session), { ttlMs: lifetimeMs }),
      this.store.set(accountSessionKeys.byHomeserverToken(homeserverToken), id, { ttlMs: lifetimeMs }),
    ]);
    return { id, session };
  }

  /**
   * The live page session of a cookie value; undefined when unknown, expired, unreadable, or ended by the OP: a
   * back-channel logout of its OP session (`sid`) or subject after the page session began ends it too (OIDC
   * Back-Channel Logout 1.0 §2.7: the RP ends every session it has for that OP session). The logout's markers are
   * checked here rather than the logout finding page sessions through an index: they live at least as long as a page
   * session can (op-logouts.ts), and a read costs one more round trip on a page that is seldom visited.
   */
  async get(id: string): Promise<AccountSession | undefined> {
    if (!isOpaqueSecret(id)) return undefined;
    const key = accountSessionKeys.session(id);
    const session = readRecord(accountSessionRecord, await this.store.get(key), key, this.logger);
    if (session === undefined || this.clock.now() >= session.expiresAt) return undefined;
    const origin = { idpId: session.idpId, sub: session.sub, ...(session.sid === undefined ? {} : { sid: session.sid }) };
    // From the sign-in, not the record's creation: a logout that arrived while the sign-in was resolved and written
    // may land its markers after the sign-in's own check read them (account-sign-in.ts).
    if (await loggedOutAtOpSince(this.store, origin, session.signedInAt ?? session.createdAt)) {
      await this.store.delete(key);
      return undefined;
    }
    return session;
  }

  /** The page session a homeserver token belongs to (introspection). */
  async byHomeserverToken(token: string): Promise<AccountSession | undefined> {
    if (!isAccountHomeserverToken(token)) return undefined;
    const id = await this.store.get(accountSessionKeys.byHomeserverToken(token));
    const session = id === undefined ? undefined : await this.get(id);
    return session !== undefined && sameHash(session.homeserverTokenHash, hashToken(token)) ? session : undefined;
  }

  /**
   * Takes the page session's OP refresh token (compare-and-set: two concurrent creations cannot both get it);
   * undefined when there is none (left).
   */
  async takeOpRefreshToken(id: string): Promise<string | undefined> {
    if (!isOpaqueSecret(id)) return undefined;
    const key = accountSessionKeys.session(id);
    const raw = await this.store.get(key);
    const session = readRecord(accountSessionRecord, raw, key, this.logger);
    if (raw === undefined || session?.sealedOpRefreshToken === undefined) return undefined;
    const ttlMs = session.expiresAt - this.clock.now();
    if (ttlMs <= 0) return undefined;
    const { sealedOpRefreshToken, ...rest } = session;
    const taken = await this.store.compareAndSet(key, raw, accountSessionRecord.encode({ ...rest, opGrantTaken: true }), { ttlMs });
    return taken ? sealedOpRefreshToken : undefined;
  }

  async remove(id: string): Promise<void> {
    if (!isOpaqueSecret(id)) return;
    await this.store.delete(accountSessionKeys.session(id));
  }
}

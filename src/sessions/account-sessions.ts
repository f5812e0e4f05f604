import type { Clock } from '../clock.js';
import { isNumber, isOptional, isString, readRecord, recordFormat, type Fields, type RecordLogger } from '../store/record-format.js';
import type { Store } from '../store/store.js';
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
  readonly createdAt: number;
  readonly expiresAt: number;
  readonly homeserverTokenHash: string;
  /** The same token, sealed (secret-box.ts) for the page's own calls: never in the store in clear. */
  readonly sealedHomeserverToken: string;
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
    isNumber(f.createdAt) &&
    isNumber(f.expiresAt) &&
    isString(f.homeserverTokenHash) &&
    isString(f.sealedHomeserverToken)
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

  /** The live page session of a cookie value; undefined when unknown, expired or unreadable. */
  async get(id: string): Promise<AccountSession | undefined> {
    if (!isOpaqueSecret(id)) return undefined;
    const key = accountSessionKeys.session(id);
    const session = readRecord(accountSessionRecord, await this.store.get(key), key, this.logger);
    return session !== undefined && this.clock.now() < session.expiresAt ? session : undefined;
  }

  /** The page session a homeserver token belongs to (introspection). */
  async byHomeserverToken(token: string): Promise<AccountSession | undefined> {
    if (!isAccountHomeserverToken(token)) return undefined;
    const id = await this.store.get(accountSessionKeys.byHomeserverToken(token));
    const session = id === undefined ? undefined : await this.get(id);
    return session !== undefined && sameHash(session.homeserverTokenHash, hashToken(token)) ? session : undefined;
  }

  async remove(id: string): Promise<void> {
    if (!isOpaqueSecret(id)) return;
    await this.store.delete(accountSessionKeys.session(id));
  }
}

import { randomBytes } from 'node:crypto';
import type { LoginGrant } from './login-tokens.js';
import { isOpOrigin } from './session-store.js';
import { isOptional, isString, readRecord, recordFormat, type RecordLogger } from '../store/record-format.js';
import type { Store } from '../store/store.js';

/**
 * A browser's sign-in at this OAuth server: who the upstream OP said the user is (the SSO bridge's LoginGrant), under
 * a random id that oidc-provider uses as the `accountId` of its session, codes and grants. The token endpoint turns
 * the id back into the Matrix user and the OP origin its proxy session carries (back-channel logout, re-validation).
 * It is single use: the code exchange consumes it, so every native session holds its own OP grant (ending one
 * session revokes that session's OP refresh token, never another's) and every authorization goes through the OP
 * again (where the OP's own SSO session usually makes it a redirect, not a form). It waits at most
 * `sessions.sso_login_lifetime` for its code exchange.
 */
export type SignIn = LoginGrant;

const signInKey = (id: string): string => `oauth-sign-in:${id}`;

export const signInRecord = recordFormat<SignIn>({
  name: 'oauth_sign_in',
  version: 1,
  decoders: { 1: (f) => isString(f.localpart) && isOpOrigin(f.origin) && isOptional(f.displayName, isString) },
});

export class SignInStore {
  constructor(
    private readonly store: Store,
    private readonly logger: RecordLogger,
  ) {}

  async create(signIn: SignIn, ttlMs: number): Promise<string> {
    const id = randomBytes(24).toString('base64url');
    await this.store.set(signInKey(id), signInRecord.encode(signIn), { ttlMs });
    return id;
  }

  /** Exactly one of concurrent callers gets it (Store.consume); unknown, used or expired → undefined. */
  async consume(id: string): Promise<SignIn | undefined> {
    if (!/^[A-Za-z0-9_-]{32}$/.test(id)) return undefined;
    const key = signInKey(id);
    return readRecord(signInRecord, await this.store.consume(key), key, this.logger);
  }

  async get(id: string): Promise<SignIn | undefined> {
    if (!/^[A-Za-z0-9_-]{32}$/.test(id)) return undefined;
    const key = signInKey(id);
    return readRecord(signInRecord, await this.store.get(key), key, this.logger);
  }
}

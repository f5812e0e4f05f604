import { indexPendingSsoLogin } from './op-logouts.js';
import type { Clock } from '../clock.js';
import type { Store } from '../store/store.js';
import { hashToken, randomBase62 } from './tokens.js';

/** An SSO login between the redirect to the OP and its callback. Keyed by the hash of `state`. */
export interface PendingSsoLogin {
  readonly idpId: string;
  readonly redirectUrl: string;
  readonly nonce: string;
  readonly codeVerifier: string;
  /** Hash of the browser secret held in the SSO cookie. */
  readonly browserHash: string;
  readonly expiresAt: number;
}

/** An identity the OP confirmed, waiting for the user to press "Continue" (or whitelisted: minted at once). */
export interface PendingConfirmation {
  readonly idpId: string;
  readonly issuer: string;
  readonly sub: string;
  readonly sid?: string;
  /** The OP's refresh token, already sealed: it never sits in the store in clear. */
  readonly sealedOpRefreshToken?: string;
  readonly localpart: string;
  readonly displayName?: string;
  readonly redirectUrl: string;
  readonly browserHash: string;
  /** When the OP vouched for the user (the session's re-validation starts from here). */
  readonly validatedAt: number;
}

const pendingKey = (state: string) => `sso-pending:${hashToken(state)}`;
const confirmationKey = (id: string) => `sso-confirm:${hashToken(id)}`;

/**
 * Pending logins and confirmations, both single-use through `Store.consume`. Pending logins outlive their lifetime
 * in the store by one more lifetime, so a late callback gets "took too long" instead of "unknown link".
 */
export class SsoLoginState {
  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
  ) {}

  /** Records a new pending login; returns the values the authorization request carries. */
  async begin(input: { idpId: string; redirectUrl: string; browserHash: string; lifetimeMs: number }): Promise<{ state: string; nonce: string; codeVerifier: string }> {
    const state = randomBase62(32);
    const nonce = randomBase62(32);
    // RFC 7636 §4.1: 43 to 128 unreserved characters.
    const codeVerifier = randomBase62(64);
    const pending: PendingSsoLogin = {
      idpId: input.idpId,
      redirectUrl: input.redirectUrl,
      nonce,
      codeVerifier,
      browserHash: input.browserHash,
      expiresAt: this.clock.now() + input.lifetimeMs,
    };
    await this.store.set(pendingKey(state), JSON.stringify(pending), { ttlMs: 2 * input.lifetimeMs });
    return { state, nonce, codeVerifier };
  }

  /** Takes the pending login of `state` (once: a replayed state gets undefined). May be past `expiresAt`. */
  async takePending(state: string): Promise<PendingSsoLogin | undefined> {
    if (!/^[0-9A-Za-z]{32}$/.test(state)) return undefined;
    const raw = await this.store.consume(pendingKey(state));
    return raw === undefined ? undefined : (JSON.parse(raw) as PendingSsoLogin);
  }

  async saveConfirmation(confirmation: PendingConfirmation, ttlMs: number): Promise<string> {
    const id = randomBase62(32);
    await this.store.set(confirmationKey(id), JSON.stringify(confirmation), { ttlMs });
    // A back-channel logout of this OP session or subject must void the page waiting for "Continue".
    const origin = { idpId: confirmation.idpId, sub: confirmation.sub, ...(confirmation.sid === undefined ? {} : { sid: confirmation.sid }) };
    await indexPendingSsoLogin(this.store, origin, confirmationKey(id), ttlMs);
    return id;
  }

  /** Reads a confirmation without using it up (the page is shown; the form is not sent yet). */
  async peekConfirmation(id: string): Promise<PendingConfirmation | undefined> {
    if (!/^[0-9A-Za-z]{32}$/.test(id)) return undefined;
    const raw = await this.store.get(confirmationKey(id));
    return raw === undefined ? undefined : (JSON.parse(raw) as PendingConfirmation);
  }

  /** Uses the confirmation up: of concurrent "Continue" submissions exactly one gets it. */
  async takeConfirmation(id: string): Promise<PendingConfirmation | undefined> {
    if (!/^[0-9A-Za-z]{32}$/.test(id)) return undefined;
    const raw = await this.store.consume(confirmationKey(id));
    return raw === undefined ? undefined : (JSON.parse(raw) as PendingConfirmation);
  }
}

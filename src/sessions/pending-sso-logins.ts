import { indexPendingSsoLogin } from './op-logouts.js';
import type { Clock } from '../clock.js';
import { isFields, isNumber, isOptional, isString, readRecord, recordFormat, type Fields, type RecordLogger } from '../store/record-format.js';
import type { Store } from '../store/store.js';
import { hashToken, isOpaqueSecret, newOpaqueSecret, randomBase62 } from './tokens.js';

/** An SSO login between the redirect to the OP and its callback. Keyed by the hash of `state`. */
export interface PendingSsoLogin {
  readonly idpId: string;
  readonly redirectUrl: string;
  readonly nonce: string;
  readonly codeVerifier: string;
  /** Hash of the browser secret held in the SSO cookie. */
  readonly browserHash: string;
  readonly expiresAt: number;
  /** Absent: a login (the callback mints a login token). Otherwise the re-authentication this OP round trip is for. */
  readonly purpose?: SsoPurpose;
}

/**
 * Why the browser went to the OP, when not to log in: `uia` completes the m.login.sso stage of a User-Interactive
 * Auth session (the fallback page); `account` signs in to the account page and goes back to `returnTo` (a path of
 * the page). `requestedAt` is when the proxy asked; with `fresh` (and always for `uia`) the OP's `auth_time` must
 * not be older.
 */
export type SsoPurpose =
  | { readonly kind: 'uia'; readonly uiaSessionId: string; readonly requestedAt: number }
  | { readonly kind: 'account'; readonly returnTo: string; readonly fresh: boolean; readonly requestedAt: number };

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

export const ssoLoginKeys = {
  pending: (state: string) => `sso-pending:${hashToken(state)}`,
  confirmation: (id: string) => `sso-confirm:${hashToken(id)}`,
} as const;

/*
 * Version 1 of both records added only `v`. Those written without it (releases up to d73999c, version 0) are still
 * read: a login started before an upgrade finishes after it. Version 2 of the pending login added `purpose`: an
 * older replica must not take a re-authentication for a login, so it reads version 2 as unknown.
 */
export const pendingSsoLoginRecord = recordFormat<PendingSsoLogin>({
  name: 'sso_pending',
  version: 2,
  decoders: { 0: isPendingFields, 1: isPendingFields, 2: (f) => isPendingFields(f) && isOptional(f.purpose, isSsoPurpose) },
});
export const pendingConfirmationRecord = recordFormat<PendingConfirmation>({
  name: 'sso_confirmation',
  version: 1,
  decoders: { 0: isConfirmationFields, 1: isConfirmationFields },
});

function isPendingFields(f: Fields): boolean {
  return isString(f.idpId) && isString(f.redirectUrl) && isString(f.nonce) && isString(f.codeVerifier) && isString(f.browserHash) && isNumber(f.expiresAt);
}

function isSsoPurpose(value: unknown): boolean {
  if (!isFields(value) || !isNumber(value.requestedAt)) return false;
  if (value.kind === 'uia') return isString(value.uiaSessionId);
  return value.kind === 'account' && isString(value.returnTo) && typeof value.fresh === 'boolean';
}

function isConfirmationFields(f: Fields): boolean {
  return (
    isString(f.idpId) &&
    isString(f.issuer) &&
    isString(f.sub) &&
    isOptional(f.sid, isString) &&
    isOptional(f.sealedOpRefreshToken, isString) &&
    isString(f.localpart) &&
    isOptional(f.displayName, isString) &&
    isString(f.redirectUrl) &&
    isString(f.browserHash) &&
    isNumber(f.validatedAt)
  );
}

/**
 * Pending logins and confirmations, both single-use through `Store.consume`. Pending logins outlive their lifetime
 * in the store by one more lifetime, so a late callback gets "took too long" instead of "unknown link". An
 * unreadable record reads as unknown (with a warning).
 */
export class SsoLoginState {
  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    private readonly logger: RecordLogger,
  ) {}

  /** Records a new pending login; returns the values the authorization request carries. */
  async begin(input: {
    idpId: string;
    redirectUrl: string;
    browserHash: string;
    lifetimeMs: number;
    purpose?: SsoPurpose;
  }): Promise<{ state: string; nonce: string; codeVerifier: string }> {
    const state = newOpaqueSecret();
    const nonce = newOpaqueSecret();
    // RFC 7636 §4.1: 43 to 128 unreserved characters.
    const codeVerifier = randomBase62(64);
    const pending: PendingSsoLogin = {
      idpId: input.idpId,
      redirectUrl: input.redirectUrl,
      nonce,
      codeVerifier,
      browserHash: input.browserHash,
      expiresAt: this.clock.now() + input.lifetimeMs,
      ...(input.purpose === undefined ? {} : { purpose: input.purpose }),
    };
    await this.store.set(ssoLoginKeys.pending(state), pendingSsoLoginRecord.encode(pending), { ttlMs: 2 * input.lifetimeMs });
    return { state, nonce, codeVerifier };
  }

  /** Reads the pending login of `state` without using it up (the callback's checks come first). */
  async peekPending(state: string): Promise<PendingSsoLogin | undefined> {
    if (!isOpaqueSecret(state)) return undefined;
    const key = ssoLoginKeys.pending(state);
    return readRecord(pendingSsoLoginRecord, await this.store.get(key), key, this.logger);
  }

  /** Takes the pending login of `state` (once: a replayed state gets undefined). May be past `expiresAt`. */
  async takePending(state: string): Promise<PendingSsoLogin | undefined> {
    if (!isOpaqueSecret(state)) return undefined;
    const key = ssoLoginKeys.pending(state);
    return readRecord(pendingSsoLoginRecord, await this.store.consume(key), key, this.logger);
  }

  async saveConfirmation(confirmation: PendingConfirmation, ttlMs: number): Promise<string> {
    const id = newOpaqueSecret();
    // A back-channel logout of this OP session or subject must void the page waiting for "Continue". Record and
    // index are issued together (one round trip on Redis, issue 19): a logout that reads the index before it is
    // written still leaves its markers, which the login token minted from this page is checked against.
    const origin = { idpId: confirmation.idpId, sub: confirmation.sub, ...(confirmation.sid === undefined ? {} : { sid: confirmation.sid }) };
    await Promise.all([
      this.store.set(ssoLoginKeys.confirmation(id), pendingConfirmationRecord.encode(confirmation), { ttlMs }),
      indexPendingSsoLogin(this.store, origin, ssoLoginKeys.confirmation(id), ttlMs),
    ]);
    return id;
  }

  /** Reads a confirmation without using it up (the page is shown; the form is not sent yet). */
  async peekConfirmation(id: string): Promise<PendingConfirmation | undefined> {
    if (!isOpaqueSecret(id)) return undefined;
    const key = ssoLoginKeys.confirmation(id);
    return readRecord(pendingConfirmationRecord, await this.store.get(key), key, this.logger);
  }

  /** Uses the confirmation up: of concurrent "Continue" submissions exactly one gets it. */
  async takeConfirmation(id: string): Promise<PendingConfirmation | undefined> {
    if (!isOpaqueSecret(id)) return undefined;
    const key = ssoLoginKeys.confirmation(id);
    return readRecord(pendingConfirmationRecord, await this.store.consume(key), key, this.logger);
  }
}

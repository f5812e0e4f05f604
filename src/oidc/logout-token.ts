import type { ProtectedHeaderParameters } from 'jose';
import type { LogoutTokenClaims } from './upstream.js';

export const BACKCHANNEL_LOGOUT_EVENT = 'http://schemas.openid.net/event/backchannel-logout';

/** §2.6 allows "a reasonable" skew; 5 minutes is what most OPs and RPs use. */
const MAX_IAT_FUTURE_SECONDS = 5 * 60;
/**
 * Without `exp`, an old token could be replayed once its `jti` is forgotten; the receiver remembers jtis for 10
 * minutes (compat/backchannel-logout.ts), so older tokens without `exp` are refused.
 */
const MAX_IAT_AGE_WITHOUT_EXP_SECONDS = 5 * 60;

/**
 * `typ` values accepted (§2.4 recommends `logout+jwt`; RFC 8725 §3.11). Plain `JWT` and no `typ` stay accepted:
 * Keycloak and older OPs send those, and an ID token replayed as a logout token fails on `events` anyway.
 */
const ACCEPTED_TYP = new Set(['logout+jwt', 'application/logout+jwt', 'jwt']);

export class LogoutTokenRejected extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LogoutTokenRejected';
  }
}

export interface LogoutTokenExpectations {
  readonly issuer: string;
  readonly clientId: string;
  readonly nowSeconds: number;
}

/**
 * The claim checks of OpenID Connect Back-Channel Logout 1.0 §2.6 (steps 3–5; the signature is step 2 and checked
 * before). `jti` replay (step 6, optional in the spec) is the caller's, with the store.
 */
export function checkLogoutToken(header: ProtectedHeaderParameters, claims: Record<string, unknown>, expected: LogoutTokenExpectations): LogoutTokenClaims {
  if (header.typ !== undefined && !ACCEPTED_TYP.has(String(header.typ).toLowerCase())) {
    throw new LogoutTokenRejected(`typ ${String(header.typ)} is not a logout token type`);
  }
  if (claims['iss'] !== expected.issuer) throw new LogoutTokenRejected('iss is not the issuer of this provider');
  const aud = claims['aud'];
  const audiences = typeof aud === 'string' ? [aud] : Array.isArray(aud) ? aud : [];
  if (!audiences.includes(expected.clientId)) throw new LogoutTokenRejected('aud does not contain this client_id');

  const iat = claims['iat'];
  if (typeof iat !== 'number' || !Number.isFinite(iat)) throw new LogoutTokenRejected('iat is missing');
  if (iat > expected.nowSeconds + MAX_IAT_FUTURE_SECONDS) throw new LogoutTokenRejected('iat is too far in the future');
  const exp = claims['exp'];
  if (exp !== undefined) {
    if (typeof exp !== 'number' || !Number.isFinite(exp)) throw new LogoutTokenRejected('exp is not a number');
    if (exp <= expected.nowSeconds) throw new LogoutTokenRejected('the token has expired');
  } else if (iat < expected.nowSeconds - MAX_IAT_AGE_WITHOUT_EXP_SECONDS) {
    throw new LogoutTokenRejected('iat is too old for a token without exp');
  }

  const sub = claims['sub'];
  const sid = claims['sid'];
  if (sub !== undefined && (typeof sub !== 'string' || sub === '')) throw new LogoutTokenRejected('sub is not a string');
  if (sid !== undefined && (typeof sid !== 'string' || sid === '')) throw new LogoutTokenRejected('sid is not a string');
  if (sub === undefined && sid === undefined) throw new LogoutTokenRejected('neither sub nor sid is present');

  const events = claims['events'];
  if (typeof events !== 'object' || events === null || Array.isArray(events)) throw new LogoutTokenRejected('events is missing');
  const event = (events as Record<string, unknown>)[BACKCHANNEL_LOGOUT_EVENT];
  if (typeof event !== 'object' || event === null || Array.isArray(event)) {
    throw new LogoutTokenRejected(`events does not contain the ${BACKCHANNEL_LOGOUT_EVENT} member`);
  }
  // §2.6 step 5: a nonce means this is (or was crafted from) an ID token.
  if (claims['nonce'] !== undefined) throw new LogoutTokenRejected('a nonce is present');

  const jti = claims['jti'];
  if (typeof jti !== 'string' || jti === '') throw new LogoutTokenRejected('jti is missing');

  return {
    iss: expected.issuer,
    jti,
    iat,
    ...(typeof sub === 'string' ? { sub } : {}),
    ...(typeof sid === 'string' ? { sid } : {}),
    ...(typeof exp === 'number' ? { exp } : {}),
  };
}

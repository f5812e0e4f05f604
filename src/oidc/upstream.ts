/**
 * What the rest of the proxy knows about an upstream OpenID Provider. Only `oidc/` imports openid-client; every
 * other folder talks to this interface, and gets `UpstreamError` (never an openid-client error) on failure.
 */
export interface UpstreamProvider {
  readonly idpId: string;
  readonly idpName: string;
  /** Issuer identifier as configured (discovery is checked against it). */
  readonly issuer: string;

  /** RFC 6749 §4.3 resource owner password grant. Bad credentials → UpstreamError('invalid_grant'). */
  passwordGrant(username: string, password: string): Promise<UpstreamGrant>;
  /** Refresh-token grant (re-validation). Revoked/disabled user → UpstreamError('invalid_grant'). */
  refreshGrant(refreshToken: string): Promise<UpstreamGrant>;
  /** RFC 7009 revocation; resolves quietly when the OP has no revocation endpoint. */
  revoke(token: string, hint: 'refresh_token' | 'access_token'): Promise<void>;
  /** RFC 7662 introspection of a token the OP issued (native OIDC clients). */
  introspect(token: string): Promise<UpstreamIntrospection>;

  /** OIDC userinfo for an access token the OP issued; the answer's `sub` must equal `expectedSub`. */
  userinfo(accessToken: string, expectedSub: string): Promise<Readonly<Record<string, unknown>>>;

  /** Authorization request URL for the SSO flow (code + PKCE S256). */
  authorizationUrl(request: AuthorizationRequest): Promise<URL>;
  /** Exchanges the callback's code; checks state, nonce, issuer (RFC 9207 `iss` when present), PKCE. */
  exchangeCode(callbackUrl: URL, expected: ExpectedCallback): Promise<UpstreamGrant>;

  /** Validates an OIDC Back-Channel Logout token (§2.6) and returns its claims. Invalid → UpstreamError('invalid_token'). */
  verifyLogoutToken(logoutToken: string): Promise<LogoutTokenClaims>;

  /** The OP's metadata (discovered or as configured), for the homeserver-facing metadata document. */
  metadata(): Promise<Readonly<Record<string, unknown>>>;
}

export interface UpstreamGrant {
  readonly sub: string;
  /** OP session id (`sid` claim of the ID token) when the OP sent one. */
  readonly sid?: string;
  /** ID token claims merged with userinfo (userinfo wins), the input of the mapping templates. */
  readonly claims: Readonly<Record<string, unknown>>;
  /**
   * True when `claims` are the ID token's alone although the OP serves userinfo (`user_profile_method: auto`). An OP
   * that follows OIDC Core §5.4 puts profile claims only in userinfo when it issues an access token, so a claim the
   * templates miss may be there.
   */
  readonly userinfoSkipped: boolean;
  readonly accessToken: string;
  readonly refreshToken?: string;
  readonly expiresInSeconds?: number;
}

export interface UpstreamIntrospection {
  readonly active: boolean;
  readonly sub?: string;
  readonly scope?: string;
  readonly clientId?: string;
  readonly username?: string;
  /** Seconds since epoch. */
  readonly exp?: number;
  readonly claims: Readonly<Record<string, unknown>>;
}

export interface AuthorizationRequest {
  readonly redirectUri: string;
  readonly state: string;
  readonly nonce: string;
  readonly codeVerifier: string;
  readonly prompt?: string;
  /** OIDC Core §3.1.2.1 `max_age` in seconds: the OP must re-authenticate older sign-ins and send `auth_time`. */
  readonly maxAge?: number;
  /** OIDC Core §3.1.2.1 `login_hint`: the login identifier the user will likely use at the OP (a hint only). */
  readonly loginHint?: string;
}

export interface ExpectedCallback {
  readonly redirectUri: string;
  readonly state: string;
  readonly nonce: string;
  readonly codeVerifier: string;
}

export interface LogoutTokenClaims {
  readonly iss: string;
  readonly sub?: string;
  readonly sid?: string;
  readonly jti: string;
  readonly iat: number;
  readonly exp?: number;
}

export type UpstreamErrorKind =
  | 'invalid_grant' // credentials or grant rejected by the OP (wrong password, revoked refresh token, disabled user)
  | 'unavailable' // network error, timeout, 5xx: the OP could not answer
  | 'invalid_response' // the OP answered something we must not trust (bad signature, nonce, issuer, shape)
  | 'unsupported' // the OP lacks what was asked (no introspection endpoint, no password grant)
  | 'invalid_token'; // a token presented to us (logout token) failed validation

/** For the admin, not the client: what the OP answered and what that most likely means. */
export interface UpstreamDiagnosis {
  readonly status?: number;
  /** The first characters of the OP's answer body. */
  readonly bodyStart?: string;
  /** The likely cause in the admin's terms, with the setting to check. */
  readonly likelyCause: string;
  /** The same, as a word a program can test. */
  readonly cause: UpstreamCause;
}

/** `token_refused`: the OP refused a refresh token or code, but not with RFC 6749's invalid_grant (Dex: invalid_request). */
export type UpstreamCause = 'client_authentication' | 'grant_type' | 'scope' | 'token_refused' | 'op_failing' | 'unreachable' | 'unknown';

export interface UpstreamErrorDetails {
  /** The HTTP status the OP answered with, when it answered. */
  readonly status?: number;
  /** The RFC 6749 §5.2 `error` code, when the OP sent one. */
  readonly oauthError?: string;
  /** Set when the OP (or the way to it) misbehaved in a way the admin should hear about. */
  readonly diagnosis?: UpstreamDiagnosis;
}

export class UpstreamError extends Error {
  readonly kind: UpstreamErrorKind;
  readonly idpId: string;
  readonly status?: number;
  readonly oauthError?: string;
  readonly diagnosis?: UpstreamDiagnosis;
  constructor(kind: UpstreamErrorKind, idpId: string, message: string, cause?: unknown, details: UpstreamErrorDetails = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'UpstreamError';
    this.kind = kind;
    this.idpId = idpId;
    if (details.status !== undefined) this.status = details.status;
    if (details.oauthError !== undefined) this.oauthError = details.oauthError;
    if (details.diagnosis !== undefined) this.diagnosis = details.diagnosis;
  }
}

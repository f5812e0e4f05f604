import {
  allowInsecureRequests,
  authorizationCodeGrant,
  buildAuthorizationUrl,
  calculatePKCECodeChallenge,
  Configuration,
  customFetch,
  discovery,
  fetchUserInfo,
  genericGrantRequest,
  refreshTokenGrant,
  skipSubjectCheck,
  tokenIntrospection,
  tokenRevocation,
  type ServerMetadata,
  type TokenEndpointResponse,
  type TokenEndpointResponseHelpers,
} from 'openid-client';
import type { Logger } from 'pino';
import { systemClock, type Clock } from '../clock.js';
import { outboundFetch, type OutboundBody } from '../outbound/http-client.js';
import { ClientKeyError, createClientAuth, type ClientAuthMethod, type ClientSecretJwtKey } from './client-authentication.js';
import { checkLogoutToken, LogoutTokenRejected } from './logout-token.js';
import { JwsRejected, SigningKeys } from './signing-keys.js';
import {
  UpstreamError,
  type AuthorizationRequest,
  type ExpectedCallback,
  type LogoutTokenClaims,
  type UpstreamGrant,
  type UpstreamIntrospection,
  type UpstreamProvider,
} from './upstream.js';
import { ThrottledWarnings } from './throttled-warnings.js';
import { readOpAnswer, toUpstreamError } from './upstream-error-translation.js';

export type { ClientSecretJwtKey } from './client-authentication.js';

/**
 * What this module needs from one `oidc_providers` entry, in Synapse's own key names so the validated config block
 * is passed straight in. Optional keys take Synapse's defaults (pkce_method excepted: we default to `always`).
 */
export interface ProviderSettings {
  readonly idp_id: string;
  readonly idp_name?: string | undefined;
  readonly issuer: string;
  /** Default true. */
  readonly discover?: boolean | undefined;
  readonly client_id: string;
  readonly client_secret?: string | undefined;
  /** With `private_key_jwt`: the client assertion key. With the client_secret methods: Apple-style generated secret. */
  readonly client_secret_jwt_key?: ClientSecretJwtKey | undefined;
  /** Default client_secret_basic. */
  readonly client_auth_method?: ClientAuthMethod | undefined;
  /** Default ['openid']. */
  readonly scopes?: readonly string[] | undefined;
  readonly authorization_endpoint?: string | undefined;
  readonly token_endpoint?: string | undefined;
  readonly userinfo_endpoint?: string | undefined;
  readonly jwks_uri?: string | undefined;
  readonly introspection_endpoint?: string | undefined;
  readonly revocation_endpoint?: string | undefined;
  readonly end_session_endpoint?: string | undefined;
  /** Relaxes the https requirement for a non-loopback OP. Signatures and the issuer are still checked. */
  readonly skip_verification?: boolean | undefined;
  /** Default auto: userinfo only when the token response has no ID token. */
  readonly user_profile_method?: 'auto' | 'userinfo_endpoint' | undefined;
  /** Overrides what the OP advertises; `none` is dropped whatever is listed. */
  readonly id_token_signing_alg_values_supported?: readonly string[] | undefined;
  readonly additional_authorization_parameters?: Readonly<Record<string, string>> | undefined;
  /** Default always (S256). */
  readonly pkce_method?: 'auto' | 'always' | 'never' | undefined;
}

export interface UpstreamProviderDeps {
  readonly logger: Logger;
  readonly clock?: Clock;
  /** Every request to the OP (discovery, token, userinfo, JWKS, …) gives up after this long. Default 10 s. */
  readonly fetchTimeoutMs?: number;
  /** The same unusable OP answer is logged at most once per this interval. Default 60 s. */
  readonly warningIntervalMs?: number;
}

const DEFAULT_FETCH_TIMEOUT_MS = 10_000;
/** Algorithms jose verifies; anything else an OP advertises is ignored rather than failing at run time. */
const VERIFIABLE_ALGS = new Set(['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519', 'HS256', 'HS384', 'HS512']);
const ENDPOINT_KEYS = [
  'authorization_endpoint',
  'token_endpoint',
  'userinfo_endpoint',
  'jwks_uri',
  'introspection_endpoint',
  'revocation_endpoint',
  'end_session_endpoint',
] as const;

interface Resolved {
  readonly configuration: Configuration;
  readonly metadata: Readonly<Record<string, unknown>>;
  readonly idTokenAlgs: readonly string[];
  readonly keys: SigningKeys;
  readonly pkce: boolean;
}

type TokenResponse = TokenEndpointResponse & TokenEndpointResponseHelpers;

export function createUpstreamProvider(settings: ProviderSettings, deps: UpstreamProviderDeps): UpstreamProvider {
  return new OpenIdProvider(settings, deps);
}

/** OIDC Core §3.1.3.7: the admin's list (already in `metadata`), else the OP's, else RS256; never `none`; HMAC only with a client secret. */
export function acceptedIdTokenAlgs(metadata: Readonly<Record<string, unknown>>, hasClientSecret: boolean): string[] {
  const advertised = metadata['id_token_signing_alg_values_supported'];
  const candidates = Array.isArray(advertised) ? advertised.filter((alg): alg is string => typeof alg === 'string') : ['RS256'];
  return candidates.filter((alg) => VERIFIABLE_ALGS.has(alg) && (!alg.startsWith('HS') || hasClientSecret));
}

export function isLoopbackHost(hostname: string): boolean {
  return hostname === 'localhost' || hostname === '[::1]' || hostname === '::1' || /^127(\.\d{1,3}){3}$/.test(hostname);
}

class OpenIdProvider implements UpstreamProvider {
  readonly idpId: string;
  readonly idpName: string;
  readonly issuer: string;

  private readonly clock: Clock;
  private readonly timeoutMs: number;
  private readonly opFetch: ReturnType<typeof opFetchWithin>;
  private readonly allowHttp: boolean;
  private readonly scope: string;
  private readonly log: Logger;
  private resolved: Promise<Resolved> | undefined;
  private readonly warnings: ThrottledWarnings;

  constructor(
    private readonly settings: ProviderSettings,
    deps: UpstreamProviderDeps,
  ) {
    this.idpId = settings.idp_id;
    this.idpName = settings.idp_name ?? settings.idp_id;
    this.issuer = settings.issuer;
    this.clock = deps.clock ?? systemClock;
    this.timeoutMs = deps.fetchTimeoutMs ?? DEFAULT_FETCH_TIMEOUT_MS;
    this.opFetch = opFetchWithin(this.timeoutMs);
    this.scope = (settings.scopes ?? ['openid']).join(' ');
    this.log = deps.logger.child({ idp_id: settings.idp_id });
    this.warnings = new ThrottledWarnings(this.log, this.clock, deps.warningIntervalMs);

    const issuerUrl = new URL(settings.issuer);
    const loopback = isLoopbackHost(issuerUrl.hostname);
    if (issuerUrl.protocol === 'http:' && !loopback && settings.skip_verification !== true) {
      throw new Error(`oidc_providers.${settings.idp_id}: issuer ${issuerUrl.origin} is plain http; use https, or set skip_verification: true`);
    }
    if (settings.skip_verification === true) {
      this.log.warn({ event: 'oidc.skip_verification' }, 'skip_verification is set: plain-http OP endpoints are accepted for this provider');
    }
    this.allowHttp = issuerUrl.protocol === 'http:' || settings.skip_verification === true;

    const method = settings.client_auth_method ?? 'client_secret_basic';
    if (method === 'private_key_jwt' && settings.client_secret_jwt_key === undefined) {
      throw new Error(`oidc_providers.${settings.idp_id}: client_auth_method private_key_jwt needs client_secret_jwt_key`);
    }
    if ((method === 'client_secret_basic' || method === 'client_secret_post') && settings.client_secret === undefined && settings.client_secret_jwt_key === undefined) {
      throw new Error(`oidc_providers.${settings.idp_id}: client_auth_method ${method} needs client_secret or client_secret_jwt_key`);
    }
  }

  async passwordGrant(username: string, password: string): Promise<UpstreamGrant> {
    const resolved = await this.resolve();
    this.requireEndpoint(resolved, 'token_endpoint', 'password grant');
    const tokens = await this.call('password grant', () => genericGrantRequest(resolved.configuration, 'password', { username, password, scope: this.scope }), [password]);
    return this.toGrant(resolved, tokens, 'password grant');
  }

  async refreshGrant(refreshToken: string): Promise<UpstreamGrant> {
    const resolved = await this.resolve();
    this.requireEndpoint(resolved, 'token_endpoint', 'refresh grant');
    const tokens = await this.call('refresh grant', () => refreshTokenGrant(resolved.configuration, refreshToken), [refreshToken]);
    return this.toGrant(resolved, tokens, 'refresh grant');
  }

  async revoke(token: string, hint: 'refresh_token' | 'access_token'): Promise<void> {
    const resolved = await this.resolve();
    if (typeof resolved.metadata['revocation_endpoint'] !== 'string') return;
    await this.call('revocation', () => tokenRevocation(resolved.configuration, token, { token_type_hint: hint }), [token]);
  }

  async introspect(token: string): Promise<UpstreamIntrospection> {
    const resolved = await this.resolve();
    this.requireEndpoint(resolved, 'introspection_endpoint', 'introspection');
    const answer = await this.call('introspection', () => tokenIntrospection(resolved.configuration, token), [token]);
    const claims: Record<string, unknown> = { ...answer };
    return {
      active: answer.active === true,
      claims,
      ...(typeof answer.sub === 'string' ? { sub: answer.sub } : {}),
      ...(typeof answer.scope === 'string' ? { scope: answer.scope } : {}),
      ...(typeof answer.client_id === 'string' ? { clientId: answer.client_id } : {}),
      ...(typeof answer.username === 'string' ? { username: answer.username } : {}),
      ...(typeof answer.exp === 'number' ? { exp: answer.exp } : {}),
    };
  }

  async userinfo(accessToken: string, expectedSub: string): Promise<Readonly<Record<string, unknown>>> {
    const resolved = await this.resolve();
    this.requireEndpoint(resolved, 'userinfo_endpoint', 'userinfo');
    const answer = await this.call('userinfo', () => fetchUserInfo(resolved.configuration, accessToken, expectedSub));
    return { ...answer };
  }

  async authorizationUrl(request: AuthorizationRequest): Promise<URL> {
    const resolved = await this.resolve();
    this.requireEndpoint(resolved, 'authorization_endpoint', 'authorization request');
    // Admin-supplied extras first, so they can never override the parameters the security of the flow rests on.
    const parameters = new URLSearchParams(this.settings.additional_authorization_parameters ?? {});
    parameters.set('response_type', 'code');
    parameters.set('client_id', this.settings.client_id);
    parameters.set('redirect_uri', request.redirectUri);
    parameters.set('scope', this.scope);
    parameters.set('state', request.state);
    parameters.set('nonce', request.nonce);
    if (resolved.pkce) {
      parameters.set('code_challenge', await calculatePKCECodeChallenge(request.codeVerifier));
      parameters.set('code_challenge_method', 'S256');
    } else {
      parameters.delete('code_challenge');
      parameters.delete('code_challenge_method');
    }
    if (request.prompt !== undefined) parameters.set('prompt', request.prompt);
    if (request.maxAge !== undefined) parameters.set('max_age', String(request.maxAge));
    if (request.loginHint !== undefined) parameters.set('login_hint', request.loginHint);
    return this.call('authorization request', async () => buildAuthorizationUrl(resolved.configuration, parameters));
  }

  async exchangeCode(callbackUrl: URL, expected: ExpectedCallback): Promise<UpstreamGrant> {
    const resolved = await this.resolve();
    this.requireEndpoint(resolved, 'token_endpoint', 'code exchange');
    // The token request's redirect_uri must be the one sent in the authorization request, not however the proxy
    // happens to see its own URL behind a load balancer.
    const current = new URL(expected.redirectUri);
    current.search = callbackUrl.search;
    current.hash = '';
    const expectsIdToken = this.scope.split(' ').includes('openid');
    const tokens = await this.call('code exchange', () =>
      authorizationCodeGrant(resolved.configuration, current, {
        expectedState: expected.state,
        ...(expectsIdToken ? { expectedNonce: expected.nonce } : {}),
        ...(resolved.pkce ? { pkceCodeVerifier: expected.codeVerifier } : {}),
      }),
      [current.searchParams.get('code') ?? ''],
    );
    return this.toGrant(resolved, tokens, 'code exchange');
  }

  async verifyLogoutToken(logoutToken: string): Promise<LogoutTokenClaims> {
    const resolved = await this.resolve();
    let verified;
    try {
      verified = await resolved.keys.verify(logoutToken, resolved.idTokenAlgs, this.settings.client_secret);
    } catch (err: unknown) {
      if (err instanceof JwsRejected) throw new UpstreamError('invalid_token', this.idpId, `logout token: ${err.message}`, err);
      throw err;
    }
    try {
      return checkLogoutToken(verified.header, verified.payload, {
        issuer: String(resolved.metadata['issuer']),
        clientId: this.settings.client_id,
        nowSeconds: Math.floor(this.clock.now() / 1000),
      });
    } catch (err: unknown) {
      if (err instanceof LogoutTokenRejected) throw new UpstreamError('invalid_token', this.idpId, `logout token: ${err.message}`, err);
      throw err;
    }
  }

  async metadata(): Promise<Readonly<Record<string, unknown>>> {
    return (await this.resolve()).metadata;
  }

  /** Discovery (or the configured endpoints) once; a failure is not cached, the next call tries again. */
  private resolve(): Promise<Resolved> {
    this.resolved ??= this.load().catch((err: unknown) => {
      this.resolved = undefined;
      const translated = toUpstreamError(this.idpId, 'discovery', err);
      this.log.warn({ event: 'oidc.discovery_failed', kind: translated.kind, err: translated.message }, 'oidc.discovery_failed');
      // A misbehaving discovery endpoint is, to callers, an OP that cannot be used right now.
      throw translated.kind === 'unavailable' ? translated : new UpstreamError('unavailable', this.idpId, translated.message, translated);
    });
    return this.resolved;
  }

  private async load(): Promise<Resolved> {
    const { settings } = this;
    let metadata: Record<string, unknown>;
    if (settings.discover ?? true) {
      const discovered = await discovery(new URL(settings.issuer), settings.client_id, undefined, undefined, {
        execute: this.allowHttp ? [allowInsecureRequests] : [],
        timeout: this.timeoutMs / 1000,
        [customFetch]: this.opFetch,
      });
      metadata = Object.fromEntries(Object.entries(discovered.serverMetadata()).filter(([, value]) => typeof value !== 'function'));
    } else {
      metadata = { issuer: settings.issuer };
    }
    // As in Synapse, endpoints in the provider block win over discovered ones.
    for (const key of ENDPOINT_KEYS) {
      const configured = settings[key];
      if (configured !== undefined) metadata[key] = configured;
    }
    if (settings.id_token_signing_alg_values_supported !== undefined) {
      metadata['id_token_signing_alg_values_supported'] = [...settings.id_token_signing_alg_values_supported];
    }
    Object.freeze(metadata);

    const idTokenAlgs = acceptedIdTokenAlgs(metadata, this.settings.client_secret !== undefined);
    const pkce = this.usesPkce(metadata);
    const serverMetadata = { ...metadata, id_token_signing_alg_values_supported: [...idTokenAlgs] } as ServerMetadata;
    const configuration = new Configuration(
      serverMetadata,
      settings.client_id,
      settings.client_secret === undefined ? {} : { client_secret: settings.client_secret },
      await this.clientAuth(),
    );
    if (this.allowHttp) allowInsecureRequests(configuration);
    // No signal from openid-client (its `signal(timeout)` makes an AbortSignal.timeout per request when `timeout`
    // is set); opFetch gives every request the same time limit with a plain timer instead.
    configuration.timeout = 0;
    configuration[customFetch] = this.opFetch;

    const keys = new SigningKeys({
      idpId: this.idpId,
      jwksUri: typeof metadata['jwks_uri'] === 'string' ? metadata['jwks_uri'] : undefined,
      clock: this.clock,
      fetchTimeoutMs: this.timeoutMs,
      allowHttp: this.allowHttp,
    });
    this.log.debug({ event: 'oidc.metadata_loaded', discovered: settings.discover ?? true, id_token_algs: idTokenAlgs }, 'oidc.metadata_loaded');
    return { configuration, metadata, idTokenAlgs, keys, pkce };
  }

  private async clientAuth() {
    const { settings } = this;
    try {
      return await createClientAuth({
        clientId: settings.client_id,
        issuer: settings.issuer,
        method: settings.client_auth_method ?? (settings.client_secret === undefined && settings.client_secret_jwt_key === undefined ? 'none' : 'client_secret_basic'),
        clientSecret: settings.client_secret,
        clientSecretJwtKey: settings.client_secret_jwt_key,
        clock: this.clock,
      });
    } catch (err: unknown) {
      if (err instanceof ClientKeyError) throw new UpstreamError('invalid_response', this.idpId, err.message, err);
      throw err;
    }
  }

  private usesPkce(metadata: Readonly<Record<string, unknown>>): boolean {
    switch (this.settings.pkce_method ?? 'always') {
      case 'always':
        return true;
      case 'never':
        return false;
      case 'auto': {
        const methods = metadata['code_challenge_methods_supported'];
        return Array.isArray(methods) && methods.includes('S256');
      }
    }
  }

  private requireEndpoint(resolved: Resolved, key: (typeof ENDPOINT_KEYS)[number], operation: string): void {
    if (typeof resolved.metadata[key] !== 'string') {
      throw new UpstreamError('unsupported', this.idpId, `${operation}: the OP has no ${key} (discovered or configured)`);
    }
  }

  /** Runs one request to the OP; a failure is translated once, and an OP misbehaving is told to the admin (throttled). */
  private async call<T>(operation: string, run: () => Promise<T>, secrets: readonly string[] = []): Promise<T> {
    try {
      return await run();
    } catch (err: unknown) {
      const clientSecret = this.settings.client_secret === undefined ? [] : [this.settings.client_secret];
      const translated = toUpstreamError(this.idpId, operation, err, await readOpAnswer(err, [...secrets, ...clientSecret]));
      const diagnosis = translated.diagnosis;
      if (diagnosis !== undefined) {
        this.warnings.warn(
          `${operation}|${diagnosis.status ?? 'no answer'}|${diagnosis.likelyCause}`,
          { event: 'oidc.op_answer_unusable', operation, kind: translated.kind, status: diagnosis.status, body_start: diagnosis.bodyStart, likely_cause: diagnosis.likelyCause },
          `${translated.message} — likely cause: ${diagnosis.likelyCause}`,
        );
      }
      throw translated;
    }
  }

  /**
   * openid-client has checked the ID token's claims (iss, aud, exp, iat, sub, azp, nonce) and its alg against
   * `idTokenAlgs`; over a direct TLS channel it skips the signature (OIDC Core §3.1.3.7 step 6 allows that), but we
   * check it anyway: a plain-http loopback OP and HS256 OPs deserve no less.
   */
  private async toGrant(resolved: Resolved, tokens: TokenResponse, operation: string): Promise<UpstreamGrant> {
    let idClaims: Record<string, unknown> | undefined;
    if (tokens.id_token !== undefined) {
      try {
        await resolved.keys.verify(tokens.id_token, resolved.idTokenAlgs, this.settings.client_secret);
      } catch (err: unknown) {
        if (err instanceof JwsRejected) throw new UpstreamError('invalid_response', this.idpId, `${operation}: ID token ${err.message}`, err);
        throw err;
      }
      idClaims = { ...tokens.claims() };
    }

    let claims: Record<string, unknown> = idClaims ?? {};
    const wantsUserinfo = this.settings.user_profile_method === 'userinfo_endpoint' || idClaims === undefined;
    const servesUserinfo = typeof resolved.metadata['userinfo_endpoint'] === 'string';
    if (wantsUserinfo) {
      if (typeof resolved.metadata['userinfo_endpoint'] === 'string') {
        const expectedSub = typeof idClaims?.['sub'] === 'string' ? idClaims['sub'] : skipSubjectCheck;
        const userinfo = await this.call(`${operation} (userinfo)`, () => fetchUserInfo(resolved.configuration, tokens.access_token, expectedSub));
        claims = { ...claims, ...userinfo };
      } else if (idClaims === undefined) {
        throw new UpstreamError('invalid_response', this.idpId, `${operation}: the OP returned no ID token and has no userinfo endpoint`);
      }
    }

    const sub = claims['sub'];
    if (typeof sub !== 'string' || sub === '') throw new UpstreamError('invalid_response', this.idpId, `${operation}: the identity has no sub`);
    const sid = idClaims?.['sid'];
    return {
      sub,
      claims: Object.freeze(claims),
      userinfoSkipped: !wantsUserinfo && servesUserinfo,
      accessToken: tokens.access_token,
      ...(typeof sid === 'string' && sid !== '' ? { sid } : {}),
      ...(typeof tokens.refresh_token === 'string' ? { refreshToken: tokens.refresh_token } : {}),
      ...(typeof tokens.expires_in === 'number' ? { expiresInSeconds: tokens.expires_in } : {}),
    };
  }
}

/**
 * openid-client's requests (token, refresh, revocation, introspection, userinfo, discovery) over the proxy's
 * outbound client: the password grant is on every password login's path, and fetch costs several times the CPU
 * (src/outbound/http-client.ts). openid-client never streams a request body.
 */
function opFetchWithin(timeoutMs: number) {
  return function opFetch(url: string, options: { body: OutboundBody | ReadableStream; headers: Record<string, string>; method: string; redirect: 'manual'; signal?: AbortSignal }): Promise<Response> {
    if (options.body instanceof ReadableStream) return fetch(url, { ...options, duplex: 'half', signal: options.signal ?? AbortSignal.timeout(timeoutMs) } as RequestInit);
    // A caller's own signal (openid-client's polling signal) still applies, besides the time limit.
    return outboundFetch(url, { method: options.method, headers: options.headers, body: options.body, redirect: 'manual', signal: options.signal, timeoutMs });
  };
}

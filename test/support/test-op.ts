import { generateKeyPairSync, randomBytes, randomUUID, timingSafeEqual, type KeyObject } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { CompactSign, type JWK } from 'jose';
import Provider, {
  errors,
  interactionPolicy,
  type Account,
  type ClientMetadata,
  type Configuration,
  type KoaContextWithOIDC,
  type TokenEndpointGrantContext,
} from 'oidc-provider';

/**
 * A real OpenID Provider (panva's certified `oidc-provider`) running in-process on 127.0.0.1 for tests.
 *
 * Choices worth knowing:
 * - The OAuth 2.0 password grant (RFC 6749 §4.3) is registered with `registerGrantType`; it issues tokens through the
 *   provider's own models (Grant, Session, AccessToken, RefreshToken, IdToken), so the built-in refresh_token,
 *   revocation and introspection endpoints treat them like any other token. It ALWAYS issues a refresh token when the
 *   client may use the refresh_token grant (as Keycloak's direct grant does); without `offline_access` the tokens
 *   expire with the OP session, with it they outlive it (Keycloak's offline tokens behave the same).
 * - A disabled user is unknown to `findAccount`, so oidc-provider itself refuses refresh tokens of that user
 *   (`invalid_grant`); introspection of their tokens answers `active: false` (as Keycloak does).
 * - ID tokens carry the scope claims (`conformIdTokenClaims: false`), like Keycloak and authentik.
 * - Login page (`/interaction/:uid`): a plain form with fields `login` (username or email) and `password`, submitted
 *   by a button with id `submit`; the password is checked. Consent is implicit (first-party client). `prompt=create`
 *   is accepted and shows the same form (recorded in the request log).
 * - `offline_access` in an authorization request yields a refresh token without a consent page, as with Keycloak
 *   (oidc-provider wants prompt=consent for it: the wrapper adds that prompt and answers the consent itself).
 * - Matrix scopes (`urn:matrix:client:api:*`, `urn:matrix:client:device:<id>`) are grantable: oidc-provider 9 has no
 *   dynamic scopes, so a device scope is added to the provider's scope set the first time it is requested.
 */

export interface TestOpUser {
  /** Login name; also the `preferred_username` claim. */
  readonly username: string;
  readonly password: string;
  readonly sub: string;
  readonly email: string;
  readonly name: string;
  readonly groups: readonly string[];
  readonly extraClaims?: Readonly<Record<string, unknown>>;
}

export interface TestOpClientOptions {
  readonly clientId: string;
  /** Absent → a public client (`token_endpoint_auth_method: none`). */
  readonly clientSecret?: string;
  readonly authMethod?: 'client_secret_basic' | 'client_secret_post' | 'private_key_jwt' | 'none';
  /** Public keys of a private_key_jwt client. */
  readonly jwks?: { readonly keys: readonly JWK[] };
  readonly idTokenAlg?: 'RS256' | 'HS256';
  readonly redirectUris?: readonly string[];
  readonly backchannelLogoutUri?: string;
  /** Default ['authorization_code', 'refresh_token', 'password']. */
  readonly grantTypes?: readonly string[];
}

export interface TestOpOptions {
  /** Clients in addition to the default one (`matrix-compat-proxy`). */
  readonly clients?: readonly TestOpClientOptions[];
  /** Users in addition to alice and bob. */
  readonly users?: readonly TestOpUser[];
  /** How the default client's ID tokens (and logout tokens) are signed. Default RS256. */
  readonly idTokenAlg?: 'RS256' | 'HS256';
  /** Rotate refresh tokens on every use (the old one then fails with invalid_grant). Default false. */
  readonly rotateRefreshTokens?: boolean;
  /** Register the default client's `backchannel_logout_uri` (needs `proxyBaseUrl` or `backchannelLogoutUri`). Default true. */
  readonly backchannelLogout?: boolean;
  /** The proxy under test: redirect and back-channel logout URIs of the default client are derived from it. */
  readonly proxyBaseUrl?: string;
  readonly idpId?: string;
  /** Exact redirect URIs of the default client. Without it, any URI under `${proxyBaseUrl}/_matrix-compat-proxy/` is accepted. */
  readonly redirectUris?: readonly string[];
  readonly backchannelLogoutUri?: string;
  /** Default 300. */
  readonly accessTokenTtlSeconds?: number;
  /**
   * Longer user names get RFC 6749 invalid_request at the password grant, as OPs with a user-name length limit
   * answer (Keycloak: 255). Default: no limit.
   */
  readonly maxUsernameLength?: number;
  /** OP behaviours met in the field that break the RFCs (issue 13); the OP is otherwise unchanged. */
  readonly quirks?: TestOpQuirks;
}

export interface TestOpQuirks {
  /**
   * Reads client_secret_basic credentials as they are, without the form-decoding of RFC 6749 §2.3.1, and answers
   * 400 with an empty body when they name no client (as the OP of issue 13 did for `matrix%2Dproxy`).
   */
  readonly rawBasicCredentials?: boolean;
  /** Answers refused credentials and refresh tokens (`invalid_grant`) with this status and an empty body (e.g. 403). */
  readonly refusedGrantStatus?: number;
  /** OIDC Core §5.4: when an access token is issued, the ID token carries no profile claims; userinfo has them. */
  readonly profileClaimsOnlyInUserinfo?: boolean;
}

export interface RequestRecord {
  readonly method: string;
  readonly path: string;
  /** Whether the request carried an Authorization header (client_secret_basic vs client_secret_post). */
  readonly authorizationHeader: boolean;
  /** The Authorization header exactly as received. */
  readonly authorization?: string;

  /** Set for token endpoint requests the OP parsed. */
  grantType?: string;
  status?: number;
}

export interface BackchannelDelivery {
  readonly clientId: string;
  readonly sub: string;
  readonly sid: string | undefined;
  readonly ok: boolean;
  readonly error?: string;
}

/** What `setDown` simulates: a 503 from a load balancer, a socket reset, or an OP that never answers. */
export type OutageMode = 'error' | 'reset' | 'hang';

export interface TestOp {
  readonly issuer: string;
  readonly port: number;
  readonly clientId: string;
  readonly clientSecret: string;
  /** The default client's first redirect URI (when it has exact ones) — for flows driven without the proxy. */
  readonly redirectUri: string;
  readonly backchannelLogoutUri: string | undefined;
  readonly users: { readonly alice: TestOpUser; readonly bob: TestOpUser; readonly [username: string]: TestOpUser | undefined };
  /** The oidc-provider instance, for what this wrapper does not cover. */
  readonly provider: Provider;

  disableUser(username: string): void;
  enableUser(username: string): void;
  /** Changes a user's password (the OP-side "password reset"). */
  setPassword(username: string, password: string): void;

  /** Every HTTP request the OP received, in order (also those answered while "down"). */
  readonly requests: readonly RequestRecord[];
  /** Requests whose path ends with `pathSuffix` (and, when given, with that grant_type). */
  requestCount(pathSuffix: string, grantType?: string): number;
  clearRequests(): void;

  /** `false` → normal service; `true` = 'error' (503 to everything). */
  setDown(down: boolean | OutageMode): void;
  /**
   * Makes the token endpoint answer every request with this status and body (an OP quirk seen in the field: 400 with
   * an empty body for a disabled grant type, an HTML error page, …); `undefined` restores normal answers.
   */
  answerTokenRequests(answer: { readonly status: number; readonly body?: string; readonly contentType?: string } | undefined): void;
  /** Rewrites successful token endpoint responses (to forge bad ID tokens from a real OP); `undefined` stops it. */
  interceptTokenResponses(rewrite: ((body: Record<string, unknown>) => Record<string, unknown>) | undefined): void;

  /**
   * The OP itself builds, signs and POSTs a logout token to the client's `backchannel_logout_uri`
   * (oidc-provider's `Client#backchannelLogout`, the code its end_session endpoint runs). Always carries `sub`;
   * carries `sid` when given (the client requires it). Rejects when the receiver does not answer 200/204.
   */
  sendBackchannelLogout(target: { readonly sub: string; readonly sid?: string; readonly clientId?: string }): Promise<void>;
  /**
   * Ends OP sessions as an admin would: each session of that sid (or of that user) is destroyed at the OP — tokens
   * bound to it stop refreshing unless issued for offline_access — and every client of the session with a
   * back-channel logout URI gets a logout token from the OP. Resolves with the number of sessions ended.
   */
  endSessions(target: { readonly sid: string } | { readonly username: string }): Promise<number>;
  /** Back-channel logout deliveries the OP made (from any path), oldest first. */
  readonly backchannelDeliveries: readonly BackchannelDelivery[];

  /** A valid logout token claim set for the default client (Back-Channel Logout 1.0 §2.4); override anything. */
  logoutTokenClaims(overrides?: Record<string, unknown>): Record<string, unknown>;
  /**
   * Signs EXACTLY the given claims as a JWS — the fallback for tokens the real OP would never produce (negative tests).
   * key: 'op' (default: the OP's published signing key), 'unpublished' (same kid, other key material: bad signature),
   * a kid from `publishNewKey()`, or 'client_secret' (HS256 with the default client's secret).
   */
  signJwt(claims: Record<string, unknown>, options?: { readonly key?: string; readonly header?: Record<string, unknown> }): Promise<string>;
  /** `signJwt` under the name the other test suites look for (typ logout+jwt unless the header says otherwise). */
  signLogoutToken(claims: Record<string, unknown>, options?: { readonly key?: string; readonly header?: Record<string, unknown> }): Promise<string>;
  /** Adds a new signing key to the OP's published JWKS (not used by the OP itself); returns its kid. */
  publishNewKey(): string;

  /** A cookie-keeping HTTP client that plays the browser in front of the OP's login and logout pages. */
  browser(): TestOpBrowser;

  stop(): Promise<void>;
}

export interface TestOpBrowser {
  /**
   * Follows an authorization URL through the OP's login form with these credentials (skipped when the OP session
   * already exists) and resolves with the URL the OP finally redirects to (the client's callback with code/state/iss,
   * or with error=...). Rejects if the password is refused.
   */
  authorize(authorizationUrl: URL | string, credentials?: { readonly login: string; readonly password: string }): Promise<URL>;
  /** RP-initiated logout at the OP's end_session endpoint, confirmed: the OP sends back-channel logout tokens. */
  logout(options?: { readonly idTokenHint?: string; readonly clientId?: string }): Promise<void>;
}

const DEFAULT_CLIENT_ID = 'matrix-compat-proxy';
const BACKCHANNEL_EVENT = 'http://schemas.openid.net/event/backchannel-logout';
// Any RFC 6749 scope-token as the device part, as an OP with dynamic scopes grants it: the proxy must do the checking.
const MATRIX_DEVICE_SCOPE = /^urn:(matrix:client|matrix:org\.matrix\.msc2967\.client):device:[\x21\x23-\x5B\x5D-\x7E]{1,255}$/;
const MATRIX_STATIC_SCOPES = ['urn:matrix:client:api:*', 'urn:matrix:org.matrix.msc2967.client:api:*', 'urn:synapse:admin:*'];

interface SigningKey {
  readonly kid: string;
  readonly privateKey: KeyObject;
  readonly publicJwk: JWK;
}

interface UserState {
  user: TestOpUser;
  disabled: boolean;
}

/** OP sessions this wrapper created or saw, so an admin-style "end session" can find them by sid or user. */
interface KnownSession {
  readonly uid: string;
  readonly sub: string;
  readonly sids: Map<string, string>; // clientId → sid
}

function defaultUsers(): TestOpUser[] {
  return [
    {
      username: 'alice',
      password: 'alice-correct-horse',
      sub: '5f0e8a52-1b7c-4c1e-9a51-a11ce0000001',
      email: 'alice@example.test',
      name: 'Alice Liddell',
      groups: ['matrix-users', 'admins'],
    },
    {
      username: 'bob',
      password: 'bob-battery-staple',
      sub: '0d2c6f7e-9e3a-4a7b-8b8d-b0b000000002',
      email: 'bob@example.test',
      name: 'Bob Builder',
      groups: ['matrix-users'],
    },
  ];
}

function newSigningKey(): SigningKey {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const kid = randomUUID();
  const jwk = { ...(publicKey.export({ format: 'jwk' }) as JWK), kid, alg: 'RS256', use: 'sig' };
  return { kid, privateKey, publicJwk: jwk };
}

function constantTimeEquals(a: string, b: string): boolean {
  const left = Buffer.from(a);
  const right = Buffer.from(b);
  return left.length === right.length && timingSafeEqual(left, right);
}

function htmlEscape(value: string): string {
  return value.replace(/[&<>"']/g, (char) => `&#${char.charCodeAt(0)};`);
}

function page(title: string, body: string): string {
  return `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${htmlEscape(title)}</title></head><body>${body}</body></html>`;
}

/**
 * The raw-credentials quirk: takes `id:secret` from the Basic header literally and hands oidc-provider (which
 * form-decodes, as RFC 6749 §2.3.1 says) a header that decodes to exactly those values. False when the literal id
 * names no client the OP knows.
 */
function readBasicAsIs(req: IncomingMessage, knownClientIds: ReadonlySet<string>): boolean {
  const decoded = Buffer.from((req.headers.authorization ?? '').slice(6).trim(), 'base64').toString('latin1');
  const colon = decoded.indexOf(':');
  if (colon < 0) return false;
  const id = decoded.slice(0, colon);
  const secret = decoded.slice(colon + 1);
  if (!knownClientIds.has(id)) return false;
  req.headers.authorization = `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;
  return true;
}

async function readForm(req: IncomingMessage): Promise<URLSearchParams> {
  const chunks: Buffer[] = [];
  for await (const chunk of req as AsyncIterable<Buffer>) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

export async function startTestOp(options: TestOpOptions = {}): Promise<TestOp> {
  const userStates = new Map<string, UserState>();
  for (const user of [...defaultUsers(), ...(options.users ?? [])]) userStates.set(user.username.toLowerCase(), { user, disabled: false });
  const bySub = (sub: string): UserState | undefined => [...userStates.values()].find((state) => state.user.sub === sub);
  const byLogin = (login: string): UserState | undefined => {
    const needle = login.trim().toLowerCase();
    return userStates.get(needle) ?? [...userStates.values()].find((state) => state.user.email.toLowerCase() === needle);
  };

  const signingKey = newSigningKey();
  let unpublishedKey: SigningKey | undefined;
  const extraKeys = new Map<string, SigningKey>();

  // The issuer must be known before the provider exists: bind first, then build the provider around the port.
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const issuer = `http://127.0.0.1:${port}`;

  const clientSecret = randomBytes(32).toString('base64url');
  const ownPrefix = options.proxyBaseUrl === undefined ? undefined : `${options.proxyBaseUrl.replace(/\/+$/, '')}/_matrix-compat-proxy/`;
  const idpId = options.idpId ?? 'testop';
  const exactRedirectUris = options.redirectUris ?? (ownPrefix === undefined ? [`${issuer}/test-callback`] : []);
  const redirectUriPrefix = options.redirectUris === undefined ? ownPrefix : undefined;
  const registeredRedirectUris = exactRedirectUris.length > 0 ? [...exactRedirectUris] : [`${ownPrefix}sso/callback/${idpId}`];
  const backchannelLogoutUri =
    options.backchannelLogout === false ? undefined : (options.backchannelLogoutUri ?? (ownPrefix === undefined ? undefined : `${ownPrefix}backchannel-logout/${idpId}`));

  const idTokenAlg = options.idTokenAlg ?? 'RS256';
  const defaultClient: ClientMetadata = {
    client_id: DEFAULT_CLIENT_ID,
    client_secret: clientSecret,
    grant_types: ['authorization_code', 'refresh_token', 'password'],
    response_types: ['code'],
    redirect_uris: registeredRedirectUris,
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: idTokenAlg,
    ...(backchannelLogoutUri === undefined ? {} : { backchannel_logout_uri: backchannelLogoutUri, backchannel_logout_session_required: true }),
    ...(options.proxyBaseUrl === undefined ? {} : { post_logout_redirect_uris: [`${options.proxyBaseUrl.replace(/\/+$/, '')}/`] }),
  };
  const extraClients: ClientMetadata[] = (options.clients ?? []).map((client) => ({
    client_id: client.clientId,
    ...(client.clientSecret === undefined ? {} : { client_secret: client.clientSecret }),
    grant_types: [...(client.grantTypes ?? ['authorization_code', 'refresh_token', 'password'])],
    response_types: ['code'],
    redirect_uris: [...(client.redirectUris ?? [`${issuer}/test-callback/${client.clientId}`])],
    token_endpoint_auth_method: client.authMethod ?? (client.clientSecret === undefined ? 'none' : 'client_secret_basic'),
    ...(client.jwks === undefined ? {} : { jwks: { keys: [...client.jwks.keys] } as never }),
    id_token_signed_response_alg: client.idTokenAlg ?? 'RS256',
    ...(client.backchannelLogoutUri === undefined ? {} : { backchannel_logout_uri: client.backchannelLogoutUri, backchannel_logout_session_required: true }),
  }));
  const usesHs256 = idTokenAlg === 'HS256' || (options.clients ?? []).some((client) => client.idTokenAlg === 'HS256');

  // oidc-provider keeps this very Set (it only converts arrays), which is what lets device scopes be added on sight.
  const scopes = new Set(['openid', 'offline_access', 'profile', 'email', 'groups', ...MATRIX_STATIC_SCOPES]);
  const admitMatrixScopes = (requested: string | undefined): void => {
    for (const scope of (requested ?? '').split(' ')) if (MATRIX_DEVICE_SCOPE.test(scope)) scopes.add(scope);
  };

  const accountFor = (state: UserState): Account => ({
    accountId: state.user.sub,
    claims: () => ({
      sub: state.user.sub,
      preferred_username: state.user.username,
      name: state.user.name,
      email: state.user.email,
      email_verified: true,
      groups: [...state.user.groups],
      ...state.user.extraClaims,
    }),
  });

  const knownSessions = new Map<string, KnownSession>();
  const deliveries: BackchannelDelivery[] = [];

  const basePolicy = interactionPolicy.base();
  // `prompt=create` (OIDC Prompt Create 1.0) is what the proxy sends for action=register.
  basePolicy.add(new interactionPolicy.Prompt({ name: 'create', requestable: true }));

  const configuration: Configuration = {
    clients: [defaultClient, ...extraClients],
    jwks: { keys: [{ ...(signingKey.privateKey.export({ format: 'jwk' }) as JWK), kid: signingKey.kid, alg: 'RS256', use: 'sig' }] as never },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    scopes: scopes as ReadonlySet<string>,
    claims: {
      openid: ['sub'],
      profile: ['name', 'preferred_username'],
      email: ['email', 'email_verified'],
      groups: ['groups'],
      sid: null,
      auth_time: null,
    },
    conformIdTokenClaims: options.quirks?.profileClaimsOnlyInUserinfo === true,
    pkce: { required: () => true },
    rotateRefreshToken: options.rotateRefreshTokens === true,
    ttl: {
      AccessToken: options.accessTokenTtlSeconds ?? 300,
      AuthorizationCode: 60,
      IdToken: 3600,
      Interaction: 600,
      RefreshToken: 14 * 24 * 3600,
      Grant: 14 * 24 * 3600,
      Session: 14 * 24 * 3600,
    },
    enabledJWA: { idTokenSigningAlgValues: usesHs256 ? ['RS256', 'HS256'] : ['RS256'] },
    interactions: {
      url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
      policy: basePolicy,
    },
    features: {
      devInteractions: { enabled: false },
      introspection: { enabled: true, allowedPolicy: async () => true },
      revocation: { enabled: true, allowedPolicy: async (_ctx, client, token) => token.clientId === client.clientId },
      backchannelLogout: { enabled: true },
      rpInitiatedLogout: {
        enabled: true,
        logoutSource: async (ctx, form) => {
          ctx.body = page('Sign out', `${form}<button id="logout" type="submit" form="op.logoutForm" value="yes" name="logout">Sign out</button>`);
        },
        postLogoutSuccessSource: async (ctx) => {
          ctx.body = page('Signed out', '<p>You are signed out.</p>');
        },
      },
      userinfo: { enabled: true },
    },
    clientBasedCORS: () => false,
    // Back-channel logout goes to the proxy on loopback, which oidc-provider's SSRF guard (its own dispatcher) refuses.
    fetch: (url, init) => globalThis.fetch(url, { ...init, dispatcher: undefined } as unknown as RequestInit),
    findAccount: (_ctx, sub) => {
      const state = bySub(sub);
      return state === undefined || state.disabled ? undefined : accountFor(state);
    },
    // First-party client: consent is implied, for every scope asked.
    loadExistingGrant: async (ctx) => {
      const client = ctx.oidc.client;
      const session = ctx.oidc.session;
      if (client === undefined || session?.accountId === undefined) return undefined;
      const grantId = (ctx.oidc.result?.['consent'] as { grantId?: string } | undefined)?.grantId ?? session.grantIdFor(client.clientId);
      const existing = grantId === undefined ? undefined : await ctx.oidc.provider.Grant.find(grantId);
      const grant = existing ?? new ctx.oidc.provider.Grant({ clientId: client.clientId, accountId: session.accountId });
      grant.addOIDCScope([...ctx.oidc.requestParamScopes].filter((scope) => scopes.has(scope)));
      await grant.save();
      return grant;
    },
    extraTokenClaims: async (_ctx, token) => {
      const state = 'accountId' in token && typeof token.accountId === 'string' ? bySub(token.accountId) : undefined;
      return state === undefined ? undefined : { username: state.user.username };
    },
    renderError: async (ctx, out) => {
      ctx.type = 'html';
      ctx.body = page('Error', `<h1 id="error">${htmlEscape(String(out.error))}</h1><p>${htmlEscape(String(out.error_description ?? ''))}</p>`);
    },
  };

  const provider = new Provider(issuer, configuration);
  provider.on('backchannel.success', (_ctx: unknown, client: { clientId: string }, sub: string, sid: string | undefined) => {
    deliveries.push({ clientId: client.clientId, sub, sid, ok: true });
  });
  provider.on('backchannel.error', (_ctx: unknown, err: Error, client: { clientId: string }, sub: string, sid: string | undefined) => {
    deliveries.push({ clientId: client.clientId, sub, sid, ok: false, error: err.message });
  });
  provider.on('session.saved', (session) => {
    if (session.accountId === undefined) return;
    const sids = new Map<string, string>();
    for (const [clientId, authorization] of Object.entries(session.authorizations ?? {})) if (authorization.sid !== undefined) sids.set(clientId, authorization.sid);
    knownSessions.set(session.uid, { uid: session.uid, sub: session.accountId, sids });
  });
  provider.on('session.destroyed', (session) => knownSessions.delete(session.uid));

  if (redirectUriPrefix !== undefined) {
    // The proxy's callback path belongs to another part of the code base: accept any URI under its own prefix.
    const clientPrototype = provider.Client.prototype as { redirectUriAllowed(uri: string): boolean; clientId: string };
    const exact = clientPrototype.redirectUriAllowed;
    clientPrototype.redirectUriAllowed = function redirectUriAllowed(uri: string): boolean {
      return exact.call(this, uri) || (this.clientId === DEFAULT_CLIENT_ID && uri.startsWith(redirectUriPrefix) && !uri.includes('#'));
    };
  }

  const requests: RequestRecord[] = [];
  const recordOf = new WeakMap<IncomingMessage, RequestRecord>();
  let rewriteTokenResponse: ((body: Record<string, unknown>) => Record<string, unknown>) | undefined;

  provider.use(async (ctx: KoaContextWithOIDC, next: () => Promise<void>) => {
    if (ctx.method === 'GET' && ctx.path === '/auth') {
      const scope = typeof ctx.query['scope'] === 'string' ? ctx.query['scope'] : undefined;
      admitMatrixScopes(scope);
      // OIDC Core §11 lets an OP grant offline_access without a consent prompt under "other conditions"; Keycloak
      // does for every client. oidc-provider drops the scope unless prompt=consent: ask for it, consent is implied.
      const prompt = typeof ctx.query['prompt'] === 'string' ? ctx.query['prompt'] : '';
      const prompts = prompt.split(' ').filter((value) => value !== '');
      if (scope?.split(' ').includes('offline_access') && !prompts.includes('none') && !prompts.includes('consent')) {
        ctx.query = { ...ctx.query, prompt: [...prompts, 'consent'].join(' ') };
      }
    }
    try {
      await next();
    } finally {
      const record = recordOf.get(ctx.req);
      const oidc = ctx.oidc as KoaContextWithOIDC['oidc'] | undefined;
      if (record !== undefined) {
        record.status = ctx.status;
        const grantType = oidc?.route === 'token' ? oidc.params?.['grant_type'] : undefined;
        if (typeof grantType === 'string') record.grantType = grantType;
      }
    }
    const body = ctx.body as Record<string, unknown> | undefined;
    const refusedStatus = options.quirks?.refusedGrantStatus;
    if (ctx.oidc?.route === 'token' && refusedStatus !== undefined && ctx.status === 400 && body?.['error'] === 'invalid_grant') {
      ctx.body = '';
      ctx.status = refusedStatus;
      const record = recordOf.get(ctx.req);
      if (record !== undefined) record.status = refusedStatus;
      return;
    }
    if (ctx.oidc?.route === 'token' && ctx.status === 200 && rewriteTokenResponse !== undefined && body !== undefined) {
      ctx.body = rewriteTokenResponse({ ...body });
    }
    if (ctx.oidc?.route === 'introspection' && body?.['active'] === true && typeof body['sub'] === 'string' && bySub(body['sub'])?.disabled === true) {
      ctx.body = { active: false };
    }
  });

  provider.registerGrantType(
    'password',
    async (ctx: TokenEndpointGrantContext<{ username?: string; password?: string }>) => {
      const { params, client } = ctx.oidc;
      if (typeof params.username !== 'string' || typeof params.password !== 'string') {
        throw new errors.InvalidRequest('username and password are required');
      }
      if (options.maxUsernameLength !== undefined && params.username.length > options.maxUsernameLength) {
        throw new errors.InvalidRequest('username is too long');
      }
      const state = byLogin(params.username);
      if (state === undefined || state.disabled || !constantTimeEquals(state.user.password, params.password)) {
        throw new errors.InvalidGrant('invalid user credentials');
      }
      const account = accountFor(state);
      ctx.oidc.entity('Account', account);

      admitMatrixScopes(params.scope);
      const asked = new Set((params.scope ?? 'openid').split(' ').filter((scope) => scope !== ''));
      const granted = [...asked].filter((scope) => scopes.has(scope) && (scope !== 'offline_access' || client.grantTypeAllowed('refresh_token')));
      const scope = granted.join(' ');

      const grant = new provider.Grant({ accountId: account.accountId, clientId: client.clientId });
      grant.addOIDCScope(granted);
      const grantId = await grant.save();
      ctx.oidc.entity('Grant', grant);

      // A real OP session, so the ID token has a `sid` that end_session / back-channel logout can refer to.
      const loginTs = Math.floor(Date.now() / 1000);
      const session = new provider.Session();
      session.loginAccount({ accountId: account.accountId, loginTs });
      session.ensureClientContainer(client.clientId);
      const sid = randomUUID();
      session.sidFor(client.clientId, sid);
      session.grantIdFor(client.clientId, grantId);
      await session.save(14 * 24 * 3600);

      const expiresWithSession = !asked.has('offline_access');
      const accessToken = new provider.AccessToken({
        accountId: account.accountId,
        client,
        grantId,
        gty: 'password',
        scope,
        sessionUid: session.uid,
        sid,
        expiresWithSession,
      });
      ctx.oidc.entity('AccessToken', accessToken);
      const accessTokenValue = await accessToken.save();

      let refreshTokenValue: string | undefined;
      if (client.grantTypeAllowed('refresh_token')) {
        const refreshToken = new provider.RefreshToken({
          accountId: account.accountId,
          client,
          grantId,
          gty: 'password',
          scope,
          sessionUid: session.uid,
          sid,
          expiresWithSession,
          authTime: loginTs,
          rotations: 0,
        });
        ctx.oidc.entity('RefreshToken', refreshToken);
        refreshTokenValue = await refreshToken.save();
      }

      let idTokenValue: string | undefined;
      if (asked.has('openid')) {
        const claims = options.quirks?.profileClaimsOnlyInUserinfo === true ? { sub: account.accountId } : await account.claims('id_token', scope, {}, []);
        const idToken = new provider.IdToken({ ...claims, auth_time: loginTs }, { ctx });
        (idToken as unknown as { scope: string }).scope = scope;
        idToken.set('sid', sid);
        idTokenValue = await idToken.issue({ use: 'idtoken' });
      }

      ctx.body = {
        access_token: accessTokenValue,
        token_type: 'Bearer',
        expires_in: accessToken.expiration,
        scope,
        ...(refreshTokenValue === undefined ? {} : { refresh_token: refreshTokenValue }),
        ...(idTokenValue === undefined ? {} : { id_token: idTokenValue }),
      };
    },
    ['username', 'password', 'scope'],
  );

  const handleInteraction = async (req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> => {
    const details = await provider.interactionDetails(req, res);
    const showForm = (status: number, message?: string): void => {
      res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
      res.end(
        page(
          'Sign in',
          `<h1>Sign in to the test OP</h1>${message === undefined ? '' : `<p id="error">${htmlEscape(message)}</p>`}` +
            `<form method="post" action="/interaction/${htmlEscape(details.uid)}/login">` +
            `<label>Username or email <input name="login" autocomplete="username" autofocus></label>` +
            `<label>Password <input name="password" type="password" autocomplete="current-password"></label>` +
            `<button id="submit" type="submit">Sign in</button></form>`,
        ),
      );
    };
    if (req.method === 'GET' && url.pathname === `/interaction/${details.uid}`) {
      if (details.prompt.name === 'login' || details.prompt.name === 'create') return showForm(200);
      if (details.prompt.name === 'consent') {
        // First-party client: consent is implied, for every scope asked.
        const accountId = details.session?.accountId;
        const clientId = details.params['client_id'];
        if (accountId === undefined || typeof clientId !== 'string') throw new Error('consent without a session');
        const grant = (details.grantId === undefined ? undefined : await provider.Grant.find(details.grantId)) ?? new provider.Grant({ accountId, clientId });
        const missing = (details.prompt.details['missingOIDCScope'] as string[] | undefined) ?? [];
        if (missing.length > 0) grant.addOIDCScope(missing);
        const missingClaims = (details.prompt.details['missingOIDCClaims'] as string[] | undefined) ?? [];
        if (missingClaims.length > 0) grant.addOIDCClaims(missingClaims);
        return provider.interactionFinished(req, res, { consent: { grantId: await grant.save() } }, { mergeWithLastSubmission: true });
      }
      return provider.interactionFinished(req, res, { error: 'access_denied', error_description: `unsupported prompt ${details.prompt.name}` });
    }
    if (req.method === 'POST' && url.pathname === `/interaction/${details.uid}/login`) {
      const form = await readForm(req);
      const state = byLogin(form.get('login') ?? '');
      if (state === undefined || state.disabled || !constantTimeEquals(state.user.password, form.get('password') ?? '')) {
        return showForm(401, 'Invalid username or password.');
      }
      return provider.interactionFinished(
        req,
        res,
        { login: { accountId: state.user.sub }, ...(details.prompt.name === 'create' ? { create: {} } : {}) },
        { mergeWithLastSubmission: false },
      );
    }
    res.writeHead(404).end();
  };

  let outage: OutageMode | undefined;
  let tokenAnswer: { readonly status: number; readonly body?: string; readonly contentType?: string } | undefined;
  const hanging = new Set<ServerResponse>();
  const opCallback = provider.callback();

  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', issuer);
    const record: RequestRecord = {
      method: req.method ?? 'GET',
      path: url.pathname,
      authorizationHeader: req.headers.authorization !== undefined,
      ...(req.headers.authorization === undefined ? {} : { authorization: req.headers.authorization }),
    };
    requests.push(record);
    recordOf.set(req, record);
    if (options.quirks?.rawBasicCredentials === true && /^basic /i.test(req.headers.authorization ?? '')) {
      if (!readBasicAsIs(req, new Set([defaultClient.client_id, ...extraClients.map((client) => client.client_id)]))) {
        record.status = 400;
        res.writeHead(400).end();
        return;
      }
    }
    switch (outage) {
      case 'error':
        record.status = 503;
        res.writeHead(503, { 'content-type': 'text/html' }).end('<h1>503 Service Unavailable</h1>');
        return;
      case 'reset':
        req.socket.destroy();
        return;
      case 'hang':
        hanging.add(res);
        res.on('close', () => hanging.delete(res));
        return;
      case undefined:
        break;
    }
    if (tokenAnswer !== undefined && req.method === 'POST' && url.pathname === '/token') {
      record.status = tokenAnswer.status;
      res.writeHead(tokenAnswer.status, tokenAnswer.contentType === undefined ? {} : { 'content-type': tokenAnswer.contentType }).end(tokenAnswer.body ?? '');
      return;
    }
    if (url.pathname.startsWith('/interaction/')) {
      handleInteraction(req, res, url).catch((err: unknown) => {
        if (!res.headersSent) res.writeHead(400, { 'content-type': 'text/html' });
        res.end(page('Error', `<p id="error">${htmlEscape(err instanceof Error ? err.message : String(err))}</p>`));
      });
      return;
    }
    if (req.method === 'GET' && url.pathname === '/jwks' && extraKeys.size > 0) {
      res.writeHead(200, { 'content-type': 'application/jwk-set+json' });
      res.end(JSON.stringify({ keys: [signingKey.publicJwk, ...[...extraKeys.values()].map((key) => key.publicJwk)] }));
      return;
    }
    void opCallback(req, res);
  });

  const clientById = async (clientId: string): Promise<{ backchannelLogout(sub: string, sid?: string): Promise<void>; backchannelLogoutUri?: string }> => {
    const client = await provider.Client.find(clientId);
    if (client === undefined) throw new Error(`unknown client ${clientId}`);
    return client as unknown as { backchannelLogout(sub: string, sid?: string): Promise<void>; backchannelLogoutUri?: string };
  };

  const deliver = async (clientId: string, sub: string, sid: string | undefined): Promise<void> => {
    const client = await clientById(clientId);
    if (client.backchannelLogoutUri === undefined) return;
    try {
      await client.backchannelLogout(sub, sid);
      deliveries.push({ clientId, sub, sid, ok: true });
    } catch (err: unknown) {
      deliveries.push({ clientId, sub, sid, ok: false, error: err instanceof Error ? err.message : String(err) });
      throw err;
    }
  };

  const keyFor = async (key: string): Promise<{ alg: string; kid?: string; material: KeyObject | Uint8Array }> => {
    if (key === 'op') return { alg: 'RS256', kid: signingKey.kid, material: signingKey.privateKey };
    if (key === 'unpublished') {
      unpublishedKey ??= { ...newSigningKey(), kid: signingKey.kid };
      return { alg: 'RS256', kid: unpublishedKey.kid, material: unpublishedKey.privateKey };
    }
    if (key === 'client_secret') return { alg: 'HS256', material: new TextEncoder().encode(clientSecret) };
    const extra = extraKeys.get(key);
    if (extra === undefined) throw new Error(`unknown key ${key}`);
    return { alg: 'RS256', kid: extra.kid, material: extra.privateKey };
  };

  const op: TestOp = {
    issuer,
    port,
    clientId: DEFAULT_CLIENT_ID,
    clientSecret,
    redirectUri: registeredRedirectUris[0] as string,
    backchannelLogoutUri,
    users: Object.fromEntries([...userStates.values()].map((state) => [state.user.username, state.user])) as TestOp['users'],
    provider,

    disableUser(username) {
      const state = userStates.get(username.toLowerCase());
      if (state === undefined) throw new Error(`unknown user ${username}`);
      state.disabled = true;
    },
    enableUser(username) {
      const state = userStates.get(username.toLowerCase());
      if (state === undefined) throw new Error(`unknown user ${username}`);
      state.disabled = false;
    },
    setPassword(username, password) {
      const state = userStates.get(username.toLowerCase());
      if (state === undefined) throw new Error(`unknown user ${username}`);
      state.user = { ...state.user, password };
    },

    requests,
    requestCount(pathSuffix, grantType) {
      return requests.filter((record) => record.path.endsWith(pathSuffix) && (grantType === undefined || record.grantType === grantType)).length;
    },
    clearRequests() {
      requests.length = 0;
    },

    setDown(down) {
      outage = down === false ? undefined : down === true ? 'error' : down;
      if (outage === undefined) {
        for (const res of hanging) res.destroy();
        hanging.clear();
      }
    },
    answerTokenRequests(answer) {
      tokenAnswer = answer;
    },
    interceptTokenResponses(rewrite) {
      rewriteTokenResponse = rewrite;
    },

    async sendBackchannelLogout({ sub, sid, clientId = DEFAULT_CLIENT_ID }) {
      await deliver(clientId, sub, sid);
    },
    async endSessions(target) {
      const matching = [...knownSessions.values()].filter((known) =>
        'sid' in target ? [...known.sids.values()].includes(target.sid) : known.sub === userStates.get(target.username.toLowerCase())?.user.sub,
      );
      for (const known of matching) {
        const session = await provider.Session.findByUid(known.uid);
        await session?.destroy();
        knownSessions.delete(known.uid);
        for (const [clientId, sid] of known.sids) await deliver(clientId, known.sub, sid);
      }
      return matching.length;
    },
    backchannelDeliveries: deliveries,

    logoutTokenClaims(overrides = {}) {
      return {
        iss: issuer,
        aud: DEFAULT_CLIENT_ID,
        iat: Math.floor(Date.now() / 1000),
        exp: Math.floor(Date.now() / 1000) + 120,
        jti: randomUUID(),
        sub: defaultUsers()[0]?.sub,
        sid: randomUUID(),
        events: { [BACKCHANNEL_EVENT]: {} },
        ...overrides,
      };
    },
    async signJwt(claims, signOptions = {}) {
      const { alg, kid, material } = await keyFor(signOptions.key ?? 'op');
      const header = { alg, ...(kid === undefined ? {} : { kid }), typ: 'logout+jwt', ...signOptions.header };
      return new CompactSign(new TextEncoder().encode(JSON.stringify(claims))).setProtectedHeader(header as { alg: string }).sign(material);
    },
    signLogoutToken(claims, signOptions) {
      return op.signJwt(claims, signOptions);
    },
    publishNewKey() {
      const key = newSigningKey();
      extraKeys.set(key.kid, key);
      return key.kid;
    },

    browser() {
      return createBrowser(issuer);
    },

    async stop() {
      for (const res of hanging) res.destroy();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
  return op;
}

/** A minimal browser: keeps cookies per host (paths ignored), follows redirects by hand, submits the OP's forms. */
function createBrowser(issuer: string): TestOpBrowser {
  const jar = new Map<string, Map<string, string>>();
  const origin = new URL(issuer).origin;

  const send = async (url: URL, init: { method?: string; form?: URLSearchParams } = {}): Promise<Response> => {
    const cookies = jar.get(url.host);
    const headers: Record<string, string> = {};
    if (cookies !== undefined && cookies.size > 0) headers['cookie'] = [...cookies].map(([name, value]) => `${name}=${value}`).join('; ');
    if (init.form !== undefined) headers['content-type'] = 'application/x-www-form-urlencoded';
    const response = await fetch(url, { method: init.method ?? 'GET', headers, redirect: 'manual', ...(init.form === undefined ? {} : { body: init.form.toString() }) });
    for (const line of response.headers.getSetCookie()) {
      const [pair] = line.split(';');
      const separator = pair?.indexOf('=') ?? -1;
      if (pair === undefined || separator < 0) continue;
      const name = pair.slice(0, separator).trim();
      const value = pair.slice(separator + 1).trim();
      const hostCookies = jar.get(url.host) ?? new Map<string, string>();
      jar.set(url.host, hostCookies);
      if (value === '' || /expires=Thu, 01 Jan 1970/i.test(line)) hostCookies.delete(name);
      else hostCookies.set(name, value);
    }
    return response;
  };

  /** Follows redirects while they stay on the OP; returns the first response that is not one, or the off-OP target. */
  const follow = async (start: Response, from: URL): Promise<{ response?: Response; url: URL }> => {
    let response = start;
    let url = from;
    for (let hops = 0; hops < 20; hops += 1) {
      const location = response.headers.get('location');
      if (response.status < 300 || response.status >= 400 || location === null) return { response, url };
      url = new URL(location, url);
      if (url.origin !== origin) return { url };
      response = await send(url);
    }
    throw new Error('too many redirects at the test OP');
  };

  return {
    async authorize(authorizationUrl, credentials) {
      const start = new URL(authorizationUrl);
      let { response, url } = await follow(await send(start), start);
      if (response === undefined) return url;
      const html = await response.text();
      const action = /<form method="post" action="([^"]+)"/.exec(html)?.[1];
      if (action === undefined) throw new Error(`the OP answered ${response.status} without a login form: ${html.slice(0, 300)}`);
      if (credentials === undefined) throw new Error('the OP asks for a login but no credentials were given');
      const submitUrl = new URL(action.replaceAll('&#47;', '/'), url);
      const submitted = await send(submitUrl, { method: 'POST', form: new URLSearchParams({ login: credentials.login, password: credentials.password }) });
      ({ response, url } = await follow(submitted, submitUrl));
      if (response === undefined) return url;
      throw new Error(`login at the OP failed with ${response.status}: ${(await response.text()).slice(0, 300)}`);
    },

    async logout(logoutOptions = {}) {
      const endSession = new URL('/session/end', issuer);
      if (logoutOptions.idTokenHint !== undefined) endSession.searchParams.set('id_token_hint', logoutOptions.idTokenHint);
      if (logoutOptions.clientId !== undefined) endSession.searchParams.set('client_id', logoutOptions.clientId);
      const shown = await send(endSession);
      const html = await shown.text();
      const xsrf = /name="xsrf" value="([^"]+)"/.exec(html)?.[1];
      if (xsrf === undefined) throw new Error(`no logout form at the OP (${shown.status}): ${html.slice(0, 300)}`);
      const confirm = new URL('/session/end/confirm', issuer);
      const done = await send(confirm, { method: 'POST', form: new URLSearchParams({ xsrf, logout: 'yes' }) });
      if (done.status !== 303 && done.status !== 302 && done.status !== 200) throw new Error(`logout at the OP failed with ${done.status}`);
    },
  };
}

import { createHash, createPrivateKey, createPublicKey, hkdfSync, randomBytes, type JsonWebKey } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import type { Context } from 'koa';
import Provider, { errors, interactionPolicy, type Configuration, type KoaContextWithOIDC } from 'oidc-provider';
import { encryptionKeysOf } from '../config/encryption-keys.js';
import type { Config } from '../config/schema.js';
import { asTokenEndpointError } from '../errors/render.js';
import { bodyLimitsOf, readBodyText } from '../http/body.js';
import { OAUTH_PREFIX } from '../http/own-prefix.js';
import { clientAddress } from '../http/request-state.js';
import { sendPage } from '../pages/html-page.js';
import { continueToSignInPage, userCodeConfirmPage, userCodeDonePage, userCodeEntryPage, type UserCodeProblem } from '../pages/oauth-pages.js';
import type { RevalidationDeps } from '../sessions/revalidation.js';
import { checkClientMetadata, DEVICE_CODE_GRANT_TYPE, hasRedirectUris } from './client-registration-rules.js';
import { API_SCOPE, isDeviceScope, parseMatrixScopes, UNSTABLE_API_SCOPE } from './matrix-scopes.js';
import { providerStoreAdapter } from './provider-store-adapter.js';
import { refreshGrant } from './refresh-grant.js';
import { asPublicRequest, issuerOf, OAUTH_ROUTES } from './oauth-routes.js';
import type { AuthorizationServer } from '../app-deps.js';
import { SignInStore } from '../sessions/oauth-sign-ins.js';
import { grantStillUsable, signInChecks } from '../sessions/op-logouts.js';
import type { BindingStore } from '../identity/bindings.js';
import type { HomeserverAdapter } from '../provisioning/homeserver-adapter.js';
import { SessionStartRefused, startRefusalText, type StartRefusal } from '../sessions/session-lifecycle.js';

/**
 * The homeserver's OAuth 2.0 server for native clients (native_clients: serve; MSC2964 authorization code + PKCE,
 * MSC2965 metadata, MSC2966 registration, MSC2967 scopes), built on oidc-provider for the protocol and on the
 * proxy's own sessions for the tokens:
 *
 * - oidc-provider runs registration, the authorization endpoint, PKCE, codes, ID tokens and its browser session;
 *   its state lives in the proxy's Store (provider-store-adapter.ts);
 * - sign-in goes through the SSO bridge to the upstream OP (interaction.ts), recorded as a SignIn;
 * - at the code exchange the access and refresh tokens oidc-provider minted are thrown away and replaced by a
 *   proxy session's (SessionLifecycle.start creates the device at the homeserver first). So a native session IS a
 *   proxy session: introspection, the admin API, /logout/all, back-channel logout and re-validation treat both alike;
 * - refresh (with rotation) and revocation are the proxy's own (token-grants.ts, revoke.ts);
 * - the device authorization grant (RFC 8628, MSC4341) is oidc-provider's deviceFlow: the user types the code on
 *   the proxy's own pages (<issuer>/device), signs in through the same interaction as the code flow, and the token
 *   endpoint swaps the tokens for a proxy session exactly as at the code exchange.
 */
export type { AuthorizationServer } from '../app-deps.js';

export interface AuthorizationServerDeps extends RevalidationDeps {
  readonly config: Config;
  /** The code exchange checks the sign-in still stands (binding, account) as `m.login.token` does. */
  readonly bindings: BindingStore;
  readonly homeserver: Pick<HomeserverAdapter, 'queryUser'>;
}

const ID_TOKEN_TTL_S = 3600;
const CODE_TTL_S = 60;
const INTERACTION_TTL_S = 30 * 60;
/** Where GET <issuer>/device?user_code=… keeps the code it prefills (see the middleware). */
const PREFILLED_USER_CODE = Symbol('prefilled user code');
/** Where GET <issuer>/device?retry=… keeps why the browser was sent back to a fresh form (see the middleware). */
const RETRY_PROBLEM = Symbol('retry problem');
const RETRY_PROBLEMS: ReadonlySet<string> = new Set<UserCodeProblem>(['form', 'lost']);

export function createAuthorizationServer(deps: AuthorizationServerDeps): AuthorizationServer {
  const { config } = deps;
  const issuer = issuerOf(config);
  const signIns = new SignInStore(deps.store, deps.logger);
  const signInTtlS = Math.ceil(config.sessions.sso_login_lifetime / 1000);
  const signingKey = config.oauth_server.signing_key;
  if (signingKey === undefined) throw new Error('oauth_server.signing_key is required with native_clients: serve');

  // oidc-provider grants only scopes in its configured set. Device scopes carry a client-chosen id, so each valid
  // one is admitted into the provider's own set (it copies the one it is given) when a request names it.
  const scopes = new Set(['openid', API_SCOPE, UNSTABLE_API_SCOPE]);
  // Request bodies as handle() read them, for the middleware that must see a parameter before oidc-provider does.
  const bodies = new WeakMap<IncomingMessage, URLSearchParams>();
  const devicePollIntervalMs = config.oauth_server.device_code_poll_interval;
  const admitted = new Map<string, number>();
  const admitDeviceScopes = async (scope: unknown): Promise<void> => {
    if (typeof scope !== 'string') return;
    const providerScopes = await configuredScopesOf(provider);
    const parsed = parseMatrixScopes(scope);
    if (!parsed.ok) return;
    const now = deps.clock.now();
    for (const token of scope.split(' ')) {
      if (!isDeviceScope(token)) continue;
      providerScopes.add(token);
      admitted.set(token, now);
    }
    // Bounded: a device scope only has to stay admitted for one authorization (its interaction and code).
    for (const [token, at] of admitted) {
      if (now - at < INTERACTION_TTL_S * 1000) break;
      admitted.delete(token);
      providerScopes.delete(token);
    }
  };

  const policy = interactionPolicy.base();
  // OIDC "Initiating User Registration via OpenID Connect 1.0": prompt=create starts at the OP's registration.
  policy.add(new interactionPolicy.Prompt({ name: 'create', requestable: true }));

  const configuration: Configuration = {
    adapter: providerStoreAdapter({ store: deps.store, clock: deps.clock, logger: deps.logger, grantIndexTtlMs: config.sessions.sso_login_lifetime }),
    clients: [],
    // RFC 7591's default response_types (["code"]) would make every device-only client a code client needing
    // redirect URIs before the MSC2966 check below sees it; that check applies the default to code clients itself.
    clientDefaults: { grant_types: ['authorization_code'], id_token_signed_response_alg: 'RS256', response_types: [], token_endpoint_auth_method: 'none' },
    jwks: { keys: [signingJwk(signingKey)] as never },
    cookies: {
      // Not oidc-provider's default names: an OP on the same host (cookies ignore ports) that is itself built on
      // oidc-provider would overwrite them, and the browser would lose its sign-in here between the OP and back.
      names: { session: 'mcp_oauth_session', interaction: 'mcp_oauth_interaction', resume: 'mcp_oauth_resume' },
      // The current key signs; cookies signed before a key rotation still verify (sessions.previous_encryption_keys).
      keys: encryptionKeysOf(config).map(cookieKey),
      long: { signed: true, secure: config.public_baseurl.startsWith('https:'), sameSite: 'lax' },
      short: { signed: true, secure: config.public_baseurl.startsWith('https:'), sameSite: 'lax' },
    },
    scopes: scopes as ReadonlySet<string>,
    claims: { openid: ['sub'] },
    responseTypes: ['code'],
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: false },
      // RFC 8628 on oidc-provider's own implementation (codes, user-code lookup, CSRF token of its pages, the
      // authorization_pending / access_denied / expired_token answers); the pages are the proxy's.
      deviceFlow: {
        enabled: true,
        charset: 'base-20',
        mask: '****-****',
        deviceInfo: (ctx) => ({ ua: ctx.get('user-agent') }),
        userCodeInputSource: async (ctx, _form, _out, err) => {
          const prefilled = (ctx.state as Record<symbol, unknown>)[PREFILLED_USER_CODE];
          const typed = (err as { userCode?: unknown } | undefined)?.userCode;
          const userCode = typeof typed === 'string' ? typed : typeof prefilled === 'string' ? prefilled : undefined;
          const retry = (ctx.state as Record<symbol, unknown>)[RETRY_PROBLEM] as UserCodeProblem | undefined;
          const page = userCodeEntryPage({ action: ctx.oidc.urlFor('code_verification'), xsrf: xsrfOf(ctx), userCode, problem: userCodeProblemOf(err) ?? retry });
          sendPage(ctx as unknown as Context, { ...page, status: err === undefined ? 200 : ctx.status });
        },
        userCodeConfirmSource: async (ctx, _form, client, deviceInfo, userCode) => {
          const clientUri = typeof client.clientUri === 'string' ? client.clientUri : undefined;
          const clientHost = clientUri === undefined ? undefined : new URL(clientUri).host;
          const agent = (deviceInfo as { ua?: unknown } | undefined)?.ua;
          sendPage(
            ctx as unknown as Context,
            userCodeConfirmPage({
              action: ctx.oidc.urlFor('code_verification'),
              xsrf: xsrfOf(ctx),
              userCode,
              clientName: typeof client.clientName === 'string' ? client.clientName : (clientHost ?? client.clientId),
              clientHost,
              clientHostVerified: hasRedirectUris(client.redirectUris),
              deviceAgent: typeof agent === 'string' ? agent : undefined,
            }),
          );
        },
        successSource: async (ctx) => {
          const client = ctx.oidc.client;
          sendPage(ctx as unknown as Context, userCodeDonePage({ clientName: typeof client?.clientName === 'string' ? client.clientName : 'The app' }));
          deps.logger.info({ event: 'oauth.device_verified', client_id: client?.clientId }, 'oauth.device_verified');
        },
      },
      registration: { enabled: true },
      revocation: { enabled: false },
      introspection: { enabled: false },
      userinfo: { enabled: false },
      rpInitiatedLogout: { enabled: false },
    },
    // Every registration passes MSC2966's rules first (the validator sees the whole metadata, not just its key).
    extraClientMetadata: {
      properties: ['matrix_checked'],
      validator(ctx, key, _value, metadata) {
        if (key !== 'matrix_checked' || (ctx as KoaContextWithOIDC | undefined)?.oidc?.route !== 'registration') return;
        const result = checkClientMetadata(metadata as Record<string, unknown>);
        if (!result.ok) {
          throw result.error === 'invalid_redirect_uri' ? new errors.InvalidRedirectUri(result.description) : new errors.InvalidClientMetadata(result.description);
        }
        Object.assign(metadata, result.metadata);
      },
    },
    findAccount: async (_ctx, id) => {
      const signIn = await signIns.get(id);
      if (signIn === undefined) return undefined;
      // The ID token's sub is this id (oidc-provider uses the accountId): opaque, one per sign-in. Matrix clients
      // learn who they are from /whoami, as MSC2964 has them do.
      return { accountId: id, claims: () => ({ sub: id }) };
    },
    loadExistingGrant: async (ctx) => {
      // First-party clients (config: their client_uri's origin) are trusted with what they ask: no consent page.
      const client = ctx.oidc.client;
      const session = ctx.oidc.session;
      if (client === undefined || session?.accountId === undefined) return undefined;
      const existingId = (ctx.oidc.result?.['consent'] as { grantId?: string } | undefined)?.grantId;
      if (existingId !== undefined) return ctx.oidc.provider.Grant.find(existingId);
      // A client without redirect URIs (device grant only) has nothing tying it to its client_uri: anyone can
      // register one naming a first-party app's address, so it always gets the consent page (RFC 8628 §5.4).
      if (!hasRedirectUris(client.redirectUris) || !isFirstParty(client.clientUri, config.oauth_server.first_party_client_uris)) return undefined;
      const grant = new ctx.oidc.provider.Grant({ clientId: client.clientId, accountId: session.accountId });
      grant.addOIDCScope([...ctx.oidc.requestParamOIDCScopes].join(' '));
      await grant.save();
      return grant;
    },
    interactions: { url: (_ctx, interaction) => `${OAUTH_PREFIX}${OAUTH_ROUTES.interaction}/${interaction.uid}`, policy },
    ttl: {
      AccessToken: 60,
      AuthorizationCode: CODE_TTL_S,
      IdToken: ID_TOKEN_TTL_S,
      Interaction: INTERACTION_TTL_S,
      Session: signInTtlS,
      Grant: signInTtlS,
      RefreshToken: 60,
      DeviceCode: Math.ceil(config.oauth_server.device_code_lifetime / 1000),
    },
    // Matrix clients in browsers (Element Web) call the token and registration endpoints cross-origin.
    clientBasedCORS: () => true,
    renderError: async (ctx, out) => {
      ctx.type = 'html';
      ctx.body = `<!DOCTYPE html><meta charset="utf-8"><title>Error</title><h1 id="error">${escape(String(out.error))}</h1><p>${escape(String(out.error_description ?? ''))}</p>`;
    },
  };

  const provider = new Provider(issuer, configuration);
  // Refresh is the proxy session's rotation, not oidc-provider's (its refresh tokens are never handed out).
  provider.registerGrantType('refresh_token', refreshGrant(deps), ['refresh_token', 'scope']);
  // The proxy answers for the public URL whatever the listener saw (handle() sets the forwarded headers).
  provider.proxy = true;

  provider.use(async (ctx, next) => {
    const body = bodies.get(ctx.req);
    if (ctx.method === 'POST' && ctx.path === OAUTH_ROUTES.deviceAuthorization) {
      // MSC2967 for the device grant, refused here rather than after the user signed in for nothing.
      const scope = body?.get('scope') ?? '';
      const parsed = parseMatrixScopes(scope);
      const problem = !parsed.ok ? parsed.description : !parsed.api ? `The scope must include ${API_SCOPE}` : undefined;
      if (problem !== undefined) {
        ctx.status = 400;
        ctx.set('Cache-Control', 'no-store');
        ctx.body = { error: 'invalid_scope', error_description: problem };
        return;
      }
      await admitDeviceScopes(scope);
    }
    const resumption = ctx.path.startsWith(`${OAUTH_ROUTES.codeVerification}/`) && ctx.path !== OAUTH_ROUTES.deviceAuthorization;
    const devicePage = ctx.path === OAUTH_ROUTES.codeVerification ? 'entry' : resumption ? 'resume' : undefined;
    if (devicePage !== undefined && !(ctx.method === 'GET' && devicePage === 'entry')) {
      // A post or a resumption without the browser session the device pages live in (the form's CSRF token, the
      // sign-in): a cross-site form (the session cookie is SameSite=lax, so it stays home), another browser, or an
      // expired session. oidc-provider cannot show its form again then (it fails saving a session it never
      // stored), so the browser goes back to a fresh form, told why.
      const sessionId = ctx.cookies.get(provider.cookieName('session'), { signed: true });
      if (sessionId === undefined || (await provider.Session.find(sessionId)) === undefined) {
        ctx.status = 303;
        ctx.set('Cache-Control', 'no-store');
        ctx.redirect(`${issuer}${OAUTH_ROUTES.codeVerification}?retry=${devicePage === 'entry' ? 'form' : 'lost'}`);
        return;
      }
    }
    if (ctx.method === 'POST' && ctx.path === OAUTH_ROUTES.codeVerification) {
      // The user's code names the device code, whose request carries the device scope (any replica may get this).
      const userCode = body?.get('user_code');
      const code = userCode === undefined || userCode === null ? undefined : await provider.DeviceCode.findByUserCode(normalisedUserCode(userCode), { ignoreExpiration: true });
      await admitDeviceScopes(code?.params?.['scope']);
    }
    if (ctx.method === 'POST' && ctx.path === OAUTH_ROUTES.token && body?.get('grant_type') === DEVICE_CODE_GRANT_TYPE) {
      const deviceCode = body.get('device_code');
      const code = deviceCode === null ? undefined : await provider.DeviceCode.find(deviceCode, { ignoreExpiration: true });
      await admitDeviceScopes(code?.params?.['scope']);
    }
    if (ctx.method === 'GET' && ctx.path === OAUTH_ROUTES.codeVerification) {
      // verification_uri_complete (RFC 8628 §3.3.1): oidc-provider would submit the code with an inline script,
      // which the pages' CSP forbids and which would skip the user's look at it. Prefill the form instead.
      const state = ctx.state as Record<symbol, unknown>;
      if (typeof ctx.query['user_code'] === 'string') state[PREFILLED_USER_CODE] = ctx.query['user_code'];
      const retry = ctx.query['retry'];
      if (typeof retry === 'string' && RETRY_PROBLEMS.has(retry)) state[RETRY_PROBLEM] = retry;
      ctx.querystring = '';
    }
    if (resumption) {
      // Resuming a device sign-in (after the login or consent step): admit the device scope it asked for.
      const uid = ctx.path.slice(OAUTH_ROUTES.codeVerification.length + 1);
      const interaction = await provider.Interaction.find(uid);
      await admitDeviceScopes(interaction?.params['scope']);
    }
    if (ctx.method === 'GET' && ctx.path === OAUTH_ROUTES.authorization) {
      // MSC2967: refuse what the MSC refuses (a second device scope, a device id outside the grammar) up front.
      const scope = ctx.query['scope'];
      if (typeof scope === 'string') {
        const parsed = parseMatrixScopes(scope);
        if (!parsed.ok) {
          ctx.status = 400;
          ctx.type = 'html';
          ctx.body = `<!DOCTYPE html><meta charset="utf-8"><title>Error</title><h1 id="error">invalid_scope</h1><p>${escape(parsed.description)}</p>`;
          return;
        }
      }
      await admitDeviceScopes(scope);
    }
    if (ctx.path.startsWith(`${OAUTH_ROUTES.authorization}/`)) {
      // Resuming an authorization on any replica: admit the device scope the interaction asked for.
      const uid = ctx.path.slice(OAUTH_ROUTES.authorization.length + 1);
      const interaction = await provider.Interaction.find(uid);
      await admitDeviceScopes(interaction?.params['scope']);
    }
    await next();
    const grantType = ctx.oidc?.params?.['grant_type'];
    if (ctx.oidc?.route === 'token' && ctx.status === 200 && (grantType === 'authorization_code' || grantType === DEVICE_CODE_GRANT_TYPE)) {
      await replaceTokensWithSession(ctx as KoaContextWithOIDC, deps, signIns);
    }
    if (ctx.oidc?.route === 'token' && grantType === DEVICE_CODE_GRANT_TYPE && (ctx.body as { error?: unknown } | undefined)?.error === 'authorization_pending') {
      await slowDownFastPolling(ctx as KoaContextWithOIDC, deps, devicePollIntervalMs);
    }
    if (ctx.oidc?.route === 'code_verification' && ctx.method === 'POST' && ctx.status >= 300 && ctx.status < 400) {
      // The confirmed code goes on to sign-in, possibly at the OP's origin: see continueToSignInPage.
      const location = ctx.response.get('Location');
      ctx.remove('Location');
      sendPage(ctx as unknown as Context, continueToSignInPage({ next: location }));
      ctx.set('Refresh', `0; url=${location}`);
    }
    if (ctx.oidc?.route === 'device_authorization' && ctx.status === 200) {
      // RFC 8628 §3.2: oidc-provider leaves `interval` out (clients then use 5 s); say what this server enforces.
      ctx.body = { ...(ctx.body as Record<string, unknown>), interval: Math.ceil(devicePollIntervalMs / 1000) };
    }
  });

  return {
    provider,
    issuer,
    publicBaseUrl: config.public_baseurl,
    signIns,
    async handle(ctx) {
      asPublicRequest(ctx.req, { publicBaseUrl: config.public_baseurl });
      // oidc-provider (proxy = true) reads the client's address from X-Forwarded-For: give it the one the proxy
      // determined (trusted proxies applied), never a header the client wrote itself.
      ctx.req.headers['x-forwarded-for'] = clientAddress(ctx);
      // The body is read here, by the proxy's one body reader (size limit, and a 408 before the close for a body
      // that trickles), then replayed to oidc-provider, which would otherwise read it without a deadline.
      const text = ctx.method === 'POST' ? await readBodyText(ctx, bodyLimitsOf(config)) : undefined;
      const req = text === undefined ? ctx.req : replayed(ctx.req, text);
      if (text !== undefined && ctx.is('application/x-www-form-urlencoded') !== false) bodies.set(req, new URLSearchParams(text));
      const full = ctx.req.url ?? '/';
      const base = new URL(issuer).pathname;
      (req as { originalUrl?: string }).originalUrl = full;
      req.url = full.slice(base.length) || '/';
      ctx.respond = false;
      await provider.callback()(req, ctx.res);
    },
  };
}

function isFirstParty(clientUri: unknown, firstParty: readonly string[]): boolean {
  if (typeof clientUri !== 'string') return false;
  try {
    const origin = new URL(clientUri).origin;
    return firstParty.some((entry) => new URL(entry).origin === origin);
  } catch {
    return false;
  }
}

/**
 * The scope set oidc-provider filters requests with. It is internal (oidc-provider 9 copies the configured Set and
 * exposes no API to extend it); read through its own weak-cache module, so a version that moves it fails loudly
 * here, at the first authorization, and in test/integration/oauth-server.test.ts.
 */
async function configuredScopesOf(provider: Provider): Promise<Set<string>> {
  const internals = (await import('oidc-provider/lib/helpers/weak_cache.js' as string)) as { default: (p: Provider) => { configuration?: { scopes?: unknown } } | undefined };
  const scopes = internals.default(provider)?.configuration?.scopes;
  if (!(scopes instanceof Set)) throw new Error('oidc-provider internals changed: configuration.scopes is not a Set');
  return scopes as Set<string>;
}

/** A request whose body was already read, as a stream oidc-provider can read again (same headers, socket, URL). */
function replayed(original: IncomingMessage, body: string): IncomingMessage {
  const bytes = Buffer.from(body, 'utf8');
  const headers = { ...original.headers, 'content-length': String(bytes.length) };
  delete headers['transfer-encoding'];
  return Object.assign(Readable.from([bytes]), {
    headers,
    rawHeaders: original.rawHeaders,
    method: original.method,
    url: original.url,
    httpVersion: original.httpVersion,
    httpVersionMajor: original.httpVersionMajor,
    httpVersionMinor: original.httpVersionMinor,
    socket: original.socket,
    connection: original.socket,
  }) as unknown as IncomingMessage;
}

/**
 * The code exchange went through (oidc-provider checked the code, PKCE S256, the redirect URI and the client):
 * create the device and the proxy session, and answer with its tokens instead of oidc-provider's, which are
 * destroyed. The ID token stays oidc-provider's, signed with the configured key.
 */
async function replaceTokensWithSession(ctx: KoaContextWithOIDC, deps: AuthorizationServerDeps, signIns: SignInStore): Promise<void> {
  const body = ctx.body as Record<string, unknown>;
  // The authorization code, or the device code of the device authorization grant: both carry the sign-in's id.
  const code = ctx.oidc.entities.AuthorizationCode ?? ctx.oidc.entities.DeviceCode;
  const client = ctx.oidc.client;
  const discard = async () => {
    await ctx.oidc.entities.AccessToken?.destroy();
    await ctx.oidc.entities.RefreshToken?.destroy();
  };
  // oidc-provider's own tokens of this exchange are never handed out: they go whatever the failure (best effort: in a
  // store outage the answer is the outage, not a second error).
  const fail = async (status: number, error: string, description: string, headers: Readonly<Record<string, string>> = {}) => {
    await discard().catch((err: unknown) => deps.logger.warn({ event: 'oauth.token_discard_failed', err }, 'oauth.token_discard_failed'));
    ctx.status = status;
    ctx.set('Cache-Control', 'no-store');
    ctx.set(headers);
    ctx.body = { error, error_description: description };
  };
  // A failure thrown here is past oidc-provider's error handling: answered in RFC 6749 §5.2 shape by the same mapping
  // as every other route (an account the homeserver refuses is invalid_grant, an outage 503).
  const failOn = async (err: unknown) => {
    const error = asTokenEndpointError(err);
    deps.logger[error.status === 500 ? 'error' : 'warn']({ event: 'oauth.code_exchange_failed', err }, 'oauth.code_exchange_failed');
    return fail(error.status, error.error, error.description, error.headers);
  };
  if (code === undefined || client === undefined || typeof code.accountId !== 'string') return fail(500, 'server_error', 'The code exchange lost its code');
  const grantType = ctx.oidc.params?.['grant_type'];
  // Single use: each native session gets its own OP grant (see sessions/oauth-sign-ins.ts).
  let signIn;
  try {
    signIn = await signIns.consume(code.accountId);
  } catch (err: unknown) {
    return failOn(err);
  }
  if (signIn === undefined) return fail(400, 'invalid_grant', 'The sign-in behind this code has ended or was used');
  const granted = parseMatrixScopes(typeof body['scope'] === 'string' ? body['scope'] : (code.scope ?? ''));
  if (!granted.ok) return fail(400, 'invalid_scope', granted.description);
  if (!granted.api) return fail(400, 'invalid_scope', `The grant does not include ${API_SCOPE}`);
  // The checks m.login.token makes (CVE-2023-32682 class), now rather than at the login step: between the sign-in
  // and this exchange (consent, a device code waiting for its poll) the binding may have been removed or the account
  // deactivated. The session's write step reads the binding and the OP's logout markers once more.
  let usable;
  try {
    usable = await grantStillUsable(deps, signIn);
  } catch (err: unknown) {
    return failOn(err);
  }
  if (!usable.ok) return fail(400, 'invalid_grant', refusalText(usable.reason));
  // MSC2967: the client allocates the device id; one that asked for none gets one allocated here.
  const deviceId = granted.deviceId ?? randomBytes(8).toString('hex').toUpperCase().slice(0, 10);
  const lifetimeMs = deps.config.sessions.refreshable_access_token_lifetime;
  let issued;
  try {
    issued = await deps.lifecycle.start(
      {
        localpart: signIn.localpart,
        deviceId,
        ...(client.clientName === undefined ? {} : { deviceDisplayName: String(client.clientName) }),
        origin: signIn.origin,
        oauthClientId: client.clientId,
        ...(ctx.ip === '' ? {} : { ip: ctx.ip }),
        ...(ctx.get('user-agent') === '' ? {} : { userAgent: ctx.get('user-agent') }),
        refreshableLifetimeMs: lifetimeMs,
      },
      // A back-channel logout of the OP session this sign-in came from, since it was made, ends it here too; so does
      // a removal of its binding. A refused session's device goes only when its id was made up here (a client's own
      // MSC2967 device id may hold its earlier E2EE keys).
      { freshDevice: granted.deviceId === undefined, check: signInChecks(deps.bindings, signIn.origin, usable.binding) },
    );
  } catch (err: unknown) {
    if (err instanceof SessionStartRefused) {
      return fail(400, 'invalid_grant', refusalText(err.reason));
    }
    return failOn(err);
  }
  await discard();
  deps.logger.info({ event: 'oauth.code_exchanged', grant_type: grantType, client_id: client.clientId, localpart: signIn.localpart, device_id: deviceId, session_id: issued.session.id }, 'oauth.code_exchanged');
  ctx.body = {
    ...body,
    access_token: issued.accessToken,
    refresh_token: issued.refreshToken,
    expires_in: Math.floor(lifetimeMs / 1000),
    token_type: 'Bearer',
  };
}

function refusalText(reason: StartRefusal | 'deactivated'): string {
  return reason === 'deactivated' ? 'The account has been deactivated' : startRefusalText(reason);
}

/**
 * RFC 8628 §3.5 slow_down: a device polling for a pending code faster than the interval it was told is told to back
 * off (and adds 5 s itself). One token per interval per device code, kept in the store so every replica agrees; a
 * fifth of the interval is allowed as jitter between the client's clock and arrival here.
 */
async function slowDownFastPolling(ctx: KoaContextWithOIDC, deps: AuthorizationServerDeps, intervalMs: number): Promise<void> {
  const deviceCode = ctx.oidc.params?.['device_code'];
  if (typeof deviceCode !== 'string') return;
  const key = `rate:device-poll:${createHash('sha256').update(deviceCode).digest('base64url')}`;
  const polled = await deps.store.takeToken(key, { burst: 1, perSecond: 1000 / (intervalMs * 0.8) }, deps.clock.now());
  if (polled.allowed) return;
  ctx.body = { error: 'slow_down', error_description: `poll at most every ${Math.ceil(intervalMs / 1000)} seconds` };
}

/** oidc-provider's CSRF secret for its device pages (set by its generateXsrf before a page is rendered). */
function xsrfOf(ctx: KoaContextWithOIDC): string {
  const state = ctx.oidc.session?.state as { secret?: unknown } | undefined;
  return typeof state?.secret === 'string' ? state.secret : '';
}

/** Which explanation the code page shows again, from oidc-provider's re-render error (its class names). */
function userCodeProblemOf(err: unknown): UserCodeProblem | undefined {
  if (err === undefined) return undefined;
  const name = (err as { name?: unknown }).name;
  if (name === 'NoCodeError' || name === 'NotFoundError') return 'wrong';
  if (name === 'ExpiredError') return 'expired';
  if (name === 'AlreadyUsedError') return 'used';
  if (name === 'AbortedError') return 'cancelled';
  if ((err as { error?: unknown }).error === 'invalid_request') return 'form';
  return 'error';
}

/** oidc-provider's user-code normalisation (lib/helpers/user_codes.js): case-insensitive, separators dropped. */
function normalisedUserCode(input: string): string {
  return input.toUpperCase().replace(/\W/g, '');
}

/** The RSA signing key as a private JWK with a stable kid derived from the public key (replicas agree). */
function signingJwk(pem: string): JsonWebKey {
  const privateKey = createPrivateKey(pem);
  const jwk = privateKey.export({ format: 'jwk' });
  const publicDer = createPublicKey(privateKey).export({ format: 'der', type: 'spki' });
  const kid = hkdfLabel(publicDer, 'oauth-signing-kid').subarray(0, 12).toString('base64url');
  return { ...jwk, kid, alg: 'RS256', use: 'sig' };
}

/** oidc-provider's cookie-signing key, derived from sessions.encryption_key so replicas agree without a new secret. */
function cookieKey(secret: string): string {
  return hkdfLabel(Buffer.from(secret, 'utf8'), 'oauth-cookie-key').toString('base64url');
}

function hkdfLabel(material: Buffer, info: string): Buffer {
  return Buffer.from(hkdfSync('sha256', material, Buffer.alloc(0), info, 32));
}

function escape(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

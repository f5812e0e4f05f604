import type { Context } from 'koa';
import type Router from '@koa/router';
import type { Logger } from 'pino';
import type { AppDeps } from '../app-deps.js';
import { OWN_PREFIX } from '../own-paths.js';
import { MatrixError, type MatrixErrcode } from '../errors/matrix-error.js';
import { HomeserverError } from '../homeserver/adapter.js';
import { resolveAccount, type AccountRefusal, type ResolvedAccount } from '../identity/account-resolver.js';
import { MappingError } from '../identity/user-mapping.js';
import { UpstreamError, type UpstreamGrant } from '../oidc/upstream.js';
import { sendPage, sendRedirect } from '../pages/html-page.js';
import type { FailureMessageKey } from '../pages/messages.js';
import { confirmationPage, failurePage, pickerPage } from '../pages/sso-pages.js';
import { sameHash } from '../sessions/tokens.js';
import { provisionAccount, resolveOrFail } from './login.js';
import { bindingHash, browserBinding, csrfTokenFor, type BrowserBinding } from './sso-browser-binding.js';
import { SsoLoginState, type PendingConfirmation, type PendingSsoLogin } from './sso-login-state.js';
import { destinationLabel, formActionSource, isWhitelisted, parseRedirectUrl, withLoginToken } from './sso-redirect-url.js';
import { clientAddress } from './client-address.js';
import { readBodyText } from '../errors/json-body.js';

/**
 * m.login.sso through the upstream OP (Matrix C-S spec, "Client login via SSO"):
 *   GET /login/sso/redirect[/{idpId}]  → 302 to the OP (or the provider picker), state bound to a browser cookie
 *   GET  OWN_PREFIX/sso/callback/{idpId} → code exchange, account mapping, provisioning → confirmation page
 *   GET  OWN_PREFIX/sso/confirm/{id}     → "Continue to <host>?"
 *   POST OWN_PREFIX/sso/confirm/{id}     → 303 to redirectUrl with a fresh single-use loginToken
 * Every answer is an HTML page or a redirect: these routes are visited by a browser, not called by a client.
 */

/** Why an SSO step failed; each maps to one page (messages.ts) and one status in `ssoError`. */
type SsoFailure = Exclude<FailureMessageKey, 'internal'>;

class SsoError extends MatrixError {
  constructor(
    readonly failure: SsoFailure,
    status: number,
    errcode: MatrixErrcode,
    cause?: unknown,
  ) {
    super(status, errcode, `SSO login failed: ${failure}`, {}, cause);
  }
}

function ssoError(failure: SsoFailure, cause?: unknown): SsoError {
  switch (failure) {
    case 'missing_redirect_url':
      return new SsoError(failure, 400, 'M_MISSING_PARAM', cause);
    case 'invalid_redirect_url':
      return new SsoError(failure, 400, 'M_INVALID_PARAM', cause);
    case 'unknown_provider':
      return new SsoError(failure, 404, 'M_NOT_FOUND', cause);
    case 'unknown_state':
    case 'expired':
    case 'confirmation_unknown':
      return new SsoError(failure, 400, 'M_UNKNOWN', cause);
    case 'cookie_mismatch':
    case 'wrong_callback':
    case 'csrf':
    case 'op_denied':
    case 'op_rejected':
    case 'requirements_not_met':
    case 'registration_disabled':
    case 'no_localpart':
    case 'mapping_failed':
    case 'localpart_taken':
      return new SsoError(failure, 403, 'M_FORBIDDEN', cause);
    case 'deactivated':
      return new SsoError(failure, 403, 'M_USER_DEACTIVATED', cause);
    case 'op_error':
      return new SsoError(failure, 502, 'M_UNKNOWN', cause);
    case 'rate_limited':
      return new SsoError(failure, 429, 'M_LIMIT_EXCEEDED', cause);
    case 'op_unavailable':
    case 'homeserver_unavailable':
      return new SsoError(failure, 503, 'M_UNKNOWN', cause);
  }
}

interface SsoContext {
  readonly deps: AppDeps;
  readonly logins: SsoLoginState;
  readonly binding: BrowserBinding;
}

// ---------------------------------------------------------------------------------------------------------------
// GET /login/sso/redirect[/{idpId}]

async function getSsoRedirect(ctx: Context, sso: SsoContext, version: string, idpIdParam: string | undefined): Promise<void> {
  const { deps } = sso;
  const requestedIdp = idpIdParam === undefined || idpIdParam === '' ? undefined : idpIdParam;
  if (requestedIdp !== undefined && !deps.providers.has(requestedIdp)) throw ssoError('unknown_provider');
  const target = parseRedirectUrl(singleQueryValue(ctx, 'redirectUrl'));
  if (!target.ok) throw ssoError(target.reason === 'missing' ? 'missing_redirect_url' : 'invalid_redirect_url');
  // MSC3824 / spec v1.18 `action`; the unstable name is what matrix-js-sdk also sends.
  const register = (singleQueryValue(ctx, 'action') ?? singleQueryValue(ctx, 'org.matrix.msc3824.action')) === 'register';

  let idpId = requestedIdp;
  if (idpId === undefined) {
    const offered = deps.config.oidc_providers.filter((provider) => deps.providers.has(provider.idp_id));
    if (offered.length > 1) {
      const entries = offered.map((provider) => ({
        name: provider.idp_name,
        href: `/_matrix/client/${version}/login/sso/redirect/${encodeURIComponent(provider.idp_id)}?redirectUrl=${encodeURIComponent(target.url.href)}${register ? '&action=register' : ''}`,
      }));
      sendPage(ctx, pickerPage(deps.config.server_name, entries));
      return;
    }
    idpId = offered[0]?.idp_id;
  }
  const provider = idpId === undefined ? undefined : deps.providers.get(idpId);
  if (idpId === undefined || provider === undefined) throw ssoError('unknown_provider');

  // Each start writes a pending login to the store: unauthenticated writes get a per-IP bucket of their own.
  try {
    await deps.throttle.checkSsoStart(clientAddress(ctx));
  } catch (err: unknown) {
    if (err instanceof MatrixError && err.errcode === 'M_LIMIT_EXCEEDED') throw ssoError('rate_limited', err);
    throw err;
  }
  const lifetimeMs = deps.config.sessions.sso_login_lifetime;
  const secret = sso.binding.issue(ctx, lifetimeMs);
  const { state, nonce, codeVerifier } = await sso.logins.begin({ idpId, redirectUrl: target.url.href, browserHash: bindingHash(secret), lifetimeMs });
  let authorizationUrl: URL;
  try {
    authorizationUrl = await provider.authorizationUrl({
      redirectUri: callbackUri(deps, idpId),
      state,
      nonce,
      codeVerifier,
      // The OIDC "prompt=create" extension is what the spec's OAuth API uses for registration too.
      ...(register ? { prompt: 'create' } : {}),
    });
  } catch (err: unknown) {
    if (err instanceof UpstreamError) throw ssoError('op_unavailable', err);
    throw err;
  }
  logOf(ctx, deps).info({ event: 'sso.redirect', idp_id: idpId, register }, 'sso.redirect');
  sendRedirect(ctx, authorizationUrl.href, 302);
}

// ---------------------------------------------------------------------------------------------------------------
// GET OWN_PREFIX/sso/callback/{idpId}

async function getSsoCallback(ctx: Context, sso: SsoContext, idpId: string): Promise<void> {
  const { deps } = sso;
  const provider = deps.providers.get(idpId);
  const policy = deps.policies.get(idpId);
  if (provider === undefined || policy === undefined) throw ssoError('unknown_provider');

  const { state, pending } = await takePendingLogin(ctx, sso, idpId);

  const opError = singleQueryValue(ctx, 'error');
  if (opError !== undefined) {
    logOf(ctx, deps).info({ event: 'sso.op_error', idp_id: idpId, op_error: opError.slice(0, 64) }, 'sso.op_error');
    deps.metrics.logins.inc({ type: 'sso', outcome: 'rejected' });
    // OIDC Core §3.1.2.6: these mean the user did not (or could not) sign in, not that the OP is broken.
    const userSide = ['access_denied', 'login_required', 'interaction_required', 'consent_required', 'account_selection_required'];
    throw ssoError(userSide.includes(opError) ? 'op_denied' : 'op_error');
  }

  const redirectUri = callbackUri(deps, idpId);
  const callbackUrl = new URL(redirectUri);
  callbackUrl.search = ctx.querystring;
  let grant: UpstreamGrant;
  try {
    grant = await provider.exchangeCode(callbackUrl, {
      redirectUri,
      state,
      nonce: pending.nonce,
      codeVerifier: pending.codeVerifier,
    });
  } catch (err: unknown) {
    if (!(err instanceof UpstreamError)) throw err;
    deps.metrics.logins.inc({ type: 'sso', outcome: err.kind === 'unavailable' ? 'error' : 'rejected' });
    throw ssoError(err.kind === 'unavailable' ? 'op_unavailable' : 'op_rejected', err);
  }

  let account: ResolvedAccount;
  try {
    // Typed as AccountRefusal → SsoFailure: every refusal the resolver can give has a page of its own.
    account = await resolveOrFail(deps, idpId, () => resolveAccount(policy, grant, deps), (failure: AccountRefusal) => ssoError(failure), grant);
    await provisionAccount(deps, account);
  } catch (err: unknown) {
    deps.metrics.logins.inc({ type: 'sso', outcome: err instanceof MatrixError && err.status < 500 ? 'rejected' : 'error' });
    throw err;
  }

  const confirmation: PendingConfirmation = {
    idpId,
    issuer: policy.issuer,
    sub: grant.sub,
    ...(grant.sid === undefined ? {} : { sid: grant.sid }),
    ...(grant.refreshToken === undefined ? {} : { sealedOpRefreshToken: deps.keys.seal(grant.refreshToken) }),
    localpart: account.localpart,
    ...(account.identity.displayName === undefined ? {} : { displayName: account.identity.displayName }),
    redirectUrl: pending.redirectUrl,
    browserHash: pending.browserHash,
    validatedAt: deps.clock.now(),
  };
  deps.metrics.logins.inc({ type: 'sso', outcome: 'ok' });
  logOf(ctx, deps).info({ event: 'sso.callback.ok', idp_id: idpId, localpart: account.localpart, first_login: account.firstLogin }, 'sso.callback.ok');

  // Synapse's sso.client_whitelist: trusted clients skip the confirmation page.
  if (isWhitelisted(pending.redirectUrl, deps.config.sso.client_whitelist)) {
    sendRedirect(ctx, withLoginToken(pending.redirectUrl, await mintLoginToken(deps, confirmation)), 302);
    return;
  }
  const id = await sso.logins.saveConfirmation(confirmation, deps.config.sessions.sso_login_lifetime);
  sendRedirect(ctx, `${deps.config.public_baseurl}${OWN_PREFIX.slice(1)}/sso/confirm/${id}`, 302);
}

/** State (single use), expiry, provider (one callback path per provider, against mix-up), browser binding. */
async function takePendingLogin(ctx: Context, sso: SsoContext, idpId: string): Promise<{ state: string; pending: PendingSsoLogin }> {
  const state = singleQueryValue(ctx, 'state');
  const pending = state === undefined ? undefined : await sso.logins.takePending(state);
  if (state === undefined || pending === undefined) throw ssoError('unknown_state');
  if (sso.deps.clock.now() >= pending.expiresAt) throw ssoError('expired');
  if (pending.idpId !== idpId) throw ssoError('wrong_callback');
  if (!sso.binding.matches(ctx, pending.browserHash)) throw ssoError('cookie_mismatch');
  return { state, pending };
}

// ---------------------------------------------------------------------------------------------------------------
// GET and POST OWN_PREFIX/sso/confirm/{id}

async function getSsoConfirm(ctx: Context, sso: SsoContext, id: string): Promise<void> {
  const confirmation = await sso.logins.peekConfirmation(id);
  if (confirmation === undefined) throw ssoError('confirmation_unknown');
  const secret = sso.binding.read(ctx);
  if (secret === undefined || !sameHash(bindingHash(secret), confirmation.browserHash)) throw ssoError('cookie_mismatch');
  const target = new URL(confirmation.redirectUrl);
  sendPage(
    ctx,
    confirmationPage({
      userId: `@${confirmation.localpart}:${sso.deps.config.server_name}`,
      destination: destinationLabel(target),
      redirectUrl: confirmation.redirectUrl,
      csrfToken: csrfTokenFor(id, secret),
      formAction: formActionSource(target),
    }),
  );
}

async function postSsoConfirm(ctx: Context, sso: SsoContext, id: string): Promise<void> {
  const { deps } = sso;
  const form = await readForm(ctx);
  const confirmation = await sso.logins.peekConfirmation(id);
  if (confirmation === undefined) throw ssoError('confirmation_unknown');
  const secret = sso.binding.read(ctx);
  if (secret === undefined || !sameHash(bindingHash(secret), confirmation.browserHash)) throw ssoError('cookie_mismatch');
  const csrfToken = form.get('csrf_token');
  if (csrfToken === null || !sameHash(csrfToken, csrfTokenFor(id, secret))) throw ssoError('csrf');
  // Checked first, used up last: a forged POST cannot burn someone's confirmation, and a double click mints one token.
  const taken = await sso.logins.takeConfirmation(id);
  if (taken === undefined) throw ssoError('confirmation_unknown');
  const token = await mintLoginToken(deps, taken);
  logOf(ctx, deps).info({ event: 'sso.confirmed', idp_id: taken.idpId, localpart: taken.localpart }, 'sso.confirmed');
  // 303: the browser follows with a GET, as a client expects on its redirect URL.
  sendRedirect(ctx, withLoginToken(taken.redirectUrl, token), 303);
}

function mintLoginToken(deps: AppDeps, confirmation: PendingConfirmation): Promise<string> {
  return deps.loginTokens.mint(
    {
      localpart: confirmation.localpart,
      origin: {
        kind: 'sso',
        idpId: confirmation.idpId,
        issuer: confirmation.issuer,
        sub: confirmation.sub,
        ...(confirmation.sid === undefined ? {} : { sid: confirmation.sid }),
        ...(confirmation.sealedOpRefreshToken === undefined ? {} : { sealedOpRefreshToken: confirmation.sealedOpRefreshToken }),
        lastValidatedAt: confirmation.validatedAt,
      },
      ...(confirmation.displayName === undefined ? {} : { displayName: confirmation.displayName }),
    },
    deps.config.sessions.login_token_lifetime,
  );
}

// ---------------------------------------------------------------------------------------------------------------
// Helpers

/** The redirect_uri registered at the OP: one per provider, so a response can only land on its own provider's path. */
export function callbackUri(deps: Pick<AppDeps, 'config'>, idpId: string): string {
  return `${deps.config.public_baseurl}${OWN_PREFIX.slice(1)}/sso/callback/${encodeURIComponent(idpId)}`;
}

/** A query parameter given once; repeated parameters count as absent (no guessing which one was meant). */
function singleQueryValue(ctx: Context, name: string): string | undefined {
  const value = ctx.query[name];
  return typeof value === 'string' ? value : undefined;
}

const FORM_LIMIT_BYTES = 4096;

async function readForm(ctx: Context): Promise<URLSearchParams> {
  const type = ctx.get('content-type').split(';')[0]?.trim().toLowerCase();
  if (type !== 'application/x-www-form-urlencoded') throw ssoError('csrf');
  try {
    return new URLSearchParams(await readBodyText(ctx, FORM_LIMIT_BYTES));
  } catch (err: unknown) {
    // Oversized or too slow: no honest confirmation form looks like that.
    if (err instanceof MatrixError && !(err instanceof SsoError)) throw ssoError('csrf', err);
    throw err;
  }
}

function logOf(ctx: Context, deps: AppDeps): Logger {
  return (ctx.state['log'] as Logger | undefined) ?? deps.logger;
}

/** The SSO routes answer with pages, never Matrix JSON: every failure becomes the page that explains it. */
function asPage(deps: AppDeps, handler: (ctx: Context) => Promise<void>) {
  return async function renderSsoPage(ctx: Context): Promise<void> {
    try {
      await handler(ctx);
    } catch (err: unknown) {
      const { failure, error, detail } = classify(err);
      const log = logOf(ctx, deps);
      if (error.status >= 500) log.error({ err, failure }, 'sso.failed');
      else log.info({ event: 'sso.refused', failure, status: error.status, reason: error.cause === undefined ? undefined : String(error.cause) }, 'sso.refused');
      const requestId = ctx.response.get('X-Request-Id');
      if (error.cause instanceof MatrixError) ctx.set(error.cause.headers());
      sendPage(
        ctx,
        failurePage(failure, {
          status: error.status,
          errcode: error.errcode,
          ...(requestId === '' ? {} : { requestId }),
          ...(detail === undefined ? {} : { detail }),
        }),
      );
    }
  };
}

function classify(err: unknown): { failure: FailureMessageKey; error: MatrixError; detail?: string } {
  if (err instanceof SsoError) return { failure: err.failure, error: err };
  if (err instanceof MatrixError) {
    if (err.cause instanceof MappingError) return { failure: 'mapping_failed', error: err };
    if (err.cause instanceof HomeserverError) return { failure: 'homeserver_unavailable', error: err };
    if (err.status >= 500) return { failure: 'internal', error: err };
    return { failure: 'internal', error: err, detail: err.message };
  }
  return { failure: 'internal', error: new MatrixError(500, 'M_UNKNOWN', 'Internal server error', {}, err) };
}

export function registerSsoRoutes(router: Router, deps: AppDeps, versions: readonly string[]): void {
  const sso: SsoContext = { deps, logins: new SsoLoginState(deps.store, deps.clock), binding: browserBinding(deps.config.public_baseurl) };
  for (const version of versions) {
    const base = `/_matrix/client/${version}/login/sso/redirect`;
    // The trailing-slash form Element iOS sends arrives here too: app.ts routes on the normalised path.
    router.get(base, asPage(deps, (ctx) => getSsoRedirect(ctx, sso, version, undefined)));
    router.get(`${base}/:idpId`, asPage(deps, (ctx) => getSsoRedirect(ctx, sso, version, paramOf(ctx, 'idpId'))));
  }
  router.get(`${OWN_PREFIX}/sso/callback/:idpId`, asPage(deps, (ctx) => getSsoCallback(ctx, sso, paramOf(ctx, 'idpId'))));
  router.get(`${OWN_PREFIX}/sso/confirm/:id`, asPage(deps, (ctx) => getSsoConfirm(ctx, sso, paramOf(ctx, 'id'))));
  router.post(`${OWN_PREFIX}/sso/confirm/:id`, asPage(deps, (ctx) => postSsoConfirm(ctx, sso, paramOf(ctx, 'id'))));
}

function paramOf(ctx: Context, name: string): string {
  const params = (ctx as Context & { params?: Record<string, string> }).params;
  return params?.[name] ?? '';
}

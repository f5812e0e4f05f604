import { createHmac, hkdfSync } from 'node:crypto';
import type { Context } from 'koa';
import type { AppDeps, AuthorizationServer } from '../app-deps.js';
import { encryptionKeysOf } from '../config/encryption-keys.js';
import { PageError } from '../errors/page-error.js';
import { bodyLimitsOf, readFormBody } from '../http/body.js';
import { OAUTH_PREFIX } from '../http/own-prefix.js';
import { logOf, paramOf, singleQueryValue } from '../http/request-state.js';
import { sendPage, sendRedirect, type HtmlPage } from '../pages/html-page.js';
import { consentPage, signInPage } from '../pages/oauth-pages.js';
import { parseLoginHint } from '../identity/login-hint.js';
import { formActionSource } from '../compat/sso/redirect-url.js';
import { asPublicRequest, OAUTH_ROUTES } from './oauth-routes.js';
import { parseMatrixScopes } from './matrix-scopes.js';
import { hasRedirectUris } from './client-registration-rules.js';
import { redeemLoginToken } from '../sessions/op-logouts.js';

/**
 * The browser's steps between the authorization request and the code (oidc-provider's "interactions"):
 *   login   → the SSO bridge signs the user in at the upstream OP (mapping templates, bindings, attribute
 *             requirements, provisioning: all of compat/sso), then comes back with a login token; or, with
 *             password_login, the proxy's own form checks the password at the OP like POST /login
 *             (interaction-password.ts); MSC4198's login_hint prefills it and goes on to the OP;
 *   consent → a page for third-party clients (first-party ones, oauth_server.first_party_client_uris, never see it).
 */

/** GET <issuer>/interaction/:uid — what this interaction needs next. */
export async function getOAuthInteraction(ctx: Context, deps: AppDeps): Promise<void> {
  const server = serverOf(deps);
  const details = await detailsOf(ctx, server);
  const uid = paramOf(ctx, 'uid');
  if (details.uid !== uid) throw interactionLost();
  if (details.prompt.name === 'login') {
    const hint = parseLoginHint(details.params['login_hint'], deps.config.server_name);
    if (hint.kind === 'foreign_server') {
      // MSC4198: the client asked to sign in a user of another server, so it discovered the wrong homeserver: no
      // sign-in here could give it that account. Refused to the client (RFC 6749 §4.1.2.1 invalid_request).
      logOf(ctx, deps.logger).info({ event: 'oauth.login_hint_refused', client_id: details.params['client_id'] }, 'oauth.login_hint_refused');
      const description = `login_hint names ${hint.userId}, which is not a user of ${deps.config.server_name}`;
      const returnTo = await server.provider.interactionResult(ctx.req, ctx.res, { error: 'invalid_request', error_description: description }, { mergeWithLastSubmission: false });
      sendRedirect(ctx, returnTo, 303);
      return;
    }
    const userHint = hint.kind === 'user' ? String(details.params['login_hint']) : undefined;
    // prompt=create (MSC2964 registration) → the OP's registration, as the legacy SSO redirect's action=register.
    const register = String(details.params['prompt'] ?? '').split(' ').includes('create');
    if (!register && passwordFormEnabled(deps)) {
      sendPage(ctx, signInPageOf(deps, server, details, uid, { username: hint.kind === 'user' ? hint.localpart : '' }));
      return;
    }
    sendRedirect(ctx, ssoStart(server, uid, { register, loginHint: userHint }), 302);
    return;
  }
  await showConsent(ctx, deps, server, details);
}

/**
 * Where the SSO bridge starts: the legacy SSO redirect (provider picker, PKCE at the OP, mapping, bindings), coming
 * back to sso-done with a login token; with the client's MSC4198 hint, which it turns into the OP's login_hint.
 */
export function ssoStart(server: AuthorizationServer, uid: string, options: { readonly register: boolean; readonly loginHint: string | undefined; readonly idpId?: string }): string {
  const back = `${server.issuer}${OAUTH_ROUTES.interaction}/${encodeURIComponent(uid)}/sso-done`;
  const path = `/_matrix/client/v3/login/sso/redirect${options.idpId === undefined ? '' : `/${encodeURIComponent(options.idpId)}`}`;
  const query = new URLSearchParams({ redirectUrl: back });
  if (options.register) query.set('action', 'register');
  if (options.loginHint !== undefined) query.set('login_hint', options.loginHint);
  return `${path}?${query.toString()}`;
}

/** The proxy's own password form is offered when the OP password check is configured (password_login). */
export function passwordFormEnabled(deps: AppDeps): boolean {
  return deps.config.password_login.enabled && deps.config.password_login.idp_id !== undefined;
}

/** The sign-in page: single sign-on per provider, or the password form (its CSRF token bound to the interaction). */
export function signInPageOf(
  deps: AppDeps,
  server: AuthorizationServer,
  details: InteractionDetails,
  uid: string,
  form: { readonly username: string; readonly error?: string; readonly status?: number },
): HtmlPage {
  const hint = parseLoginHint(details.params['login_hint'], deps.config.server_name);
  const loginHint = hint.kind === 'user' ? String(details.params['login_hint']) : undefined;
  const providers = deps.config.oidc_providers
    .filter((provider) => deps.providers.has(provider.idp_id))
    .map((provider) => ({ name: provider.idp_name, href: ssoStart(server, uid, { register: false, loginHint, idpId: provider.idp_id }) }));
  return signInPage({
    serverName: deps.config.server_name,
    providers,
    passwordForm: { action: `${server.issuer}${OAUTH_ROUTES.interaction}/${encodeURIComponent(uid)}/password`, csrfToken: interactionCsrfToken(deps.config, uid), username: form.username },
    ...(form.error === undefined ? {} : { error: form.error }),
    ...(form.status === undefined ? {} : { status: form.status }),
    ...(typeof details.params['redirect_uri'] === 'string' ? { formAction: formActionSource(new URL(details.params['redirect_uri'])) } : {}),
  });
}

/**
 * The password form's CSRF token: a MAC of the interaction id under a key derived from sessions.encryption_key
 * (replicas agree). The interaction is already bound to the browser by oidc-provider's signed SameSite=Lax cookie;
 * the token makes a forged cross-site POST fail even where a browser sends that cookie.
 */
export function interactionCsrfToken(config: Pick<AppDeps['config'], 'sessions'>, uid: string): string {
  return csrfTokenUnder(config.sessions.encryption_key, uid);
}

/**
 * The tokens a posted form may carry: under the current key and under each of sessions.previous_encryption_keys, so
 * a form rendered by a replica not yet restarted with a rotated key is still accepted by one that is.
 */
export function acceptedInteractionCsrfTokens(config: Pick<AppDeps['config'], 'sessions'>, uid: string): string[] {
  return encryptionKeysOf(config).map((key) => csrfTokenUnder(key, uid));
}

function csrfTokenUnder(secret: string, uid: string): string {
  const key = hkdfSync('sha256', Buffer.from(secret, 'utf8'), Buffer.alloc(0), 'oauth-interaction-csrf', 32);
  return createHmac('sha256', Buffer.from(key)).update(uid).digest('base64url');
}

/** GET <issuer>/interaction/:uid/sso-done?loginToken=… — the SSO bridge is done: the login step is finished. */
export async function getOAuthInteractionSsoDone(ctx: Context, deps: AppDeps): Promise<void> {
  const server = serverOf(deps);
  const details = await detailsOf(ctx, server);
  if (details.uid !== paramOf(ctx, 'uid')) throw interactionLost();
  // The checks m.login.token makes (no side path, CVE-2023-32682): the binding the grant was made for still stands,
  // the OP has not logged that sign-in out since, and the account was not deactivated meanwhile.
  const redeemed = await redeemLoginToken(deps, singleQueryValue(ctx, 'loginToken'));
  if (!redeemed.ok) throw redeemed.reason === 'deactivated' ? new PageError('deactivated', 403, 'M_USER_DEACTIVATED') : new PageError('unknown_state', 400, 'M_UNKNOWN');
  const grant = redeemed.grant;
  const signInId = await server.signIns.create(grant, deps.config.sessions.sso_login_lifetime);
  logOf(ctx, deps.logger).info({ event: 'oauth.signed_in', localpart: grant.localpart, idp_id: grant.origin.idpId }, 'oauth.signed_in');
  const returnTo = await server.provider.interactionResult(ctx.req, ctx.res, { login: { accountId: signInId } }, { mergeWithLastSubmission: false });
  sendRedirect(ctx, returnTo, 303);
}

/** POST <issuer>/interaction/:uid — the answer of the consent page. */
export async function postOAuthInteraction(ctx: Context, deps: AppDeps): Promise<void> {
  const server = serverOf(deps);
  const form = await readFormBody(ctx, bodyLimitsOf(deps.config));
  const details = await detailsOf(ctx, server);
  if (details.uid !== paramOf(ctx, 'uid') || details.prompt.name !== 'consent') throw interactionLost();
  if (form.get('decision') !== 'allow') {
    const returnTo = await server.provider.interactionResult(ctx.req, ctx.res, { error: 'access_denied', error_description: 'The user did not allow the client' }, { mergeWithLastSubmission: false });
    sendRedirect(ctx, returnTo, 303);
    return;
  }
  const { provider } = server;
  const accountId = details.session?.accountId;
  const clientId = String(details.params['client_id']);
  if (accountId === undefined) throw interactionLost();
  const grant = details.grantId === undefined ? new provider.Grant({ accountId, clientId }) : await provider.Grant.find(details.grantId);
  if (grant === undefined) throw interactionLost();
  const missing = (details.prompt.details['missingOIDCScope'] as string[] | undefined) ?? [];
  if (missing.length > 0) grant.addOIDCScope(missing.join(' '));
  const grantId = await grant.save();
  logOf(ctx, deps.logger).info({ event: 'oauth.consented', client_id: clientId }, 'oauth.consented');
  const returnTo = await provider.interactionResult(ctx.req, ctx.res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  sendRedirect(ctx, returnTo, 303);
}

async function showConsent(ctx: Context, deps: AppDeps, server: AuthorizationServer, details: InteractionDetails): Promise<void> {
  const client = await server.provider.Client.find(String(details.params['client_id']));
  const accountId = details.session?.accountId;
  const signIn = accountId === undefined ? undefined : await server.signIns.get(accountId);
  if (client === undefined || signIn === undefined) throw interactionLost();
  const metadata = client.metadata() as Record<string, unknown>;
  const clientUri = String(metadata['client_uri'] ?? '');
  const scopes = parseMatrixScopes(String(details.params['scope'] ?? ''));
  sendPage(
    ctx,
    consentPage({
      userId: `@${signIn.localpart}:${deps.config.server_name}`,
      clientName: typeof metadata['client_name'] === 'string' ? metadata['client_name'] : new URL(clientUri).host,
      clientHost: new URL(clientUri).host,
      clientHostVerified: hasRedirectUris(metadata['redirect_uris']),
      clientUri,
      deviceId: scopes.ok ? scopes.deviceId : undefined,
      ...(typeof metadata['policy_uri'] === 'string' ? { policyUri: metadata['policy_uri'] } : {}),
      ...(typeof metadata['tos_uri'] === 'string' ? { tosUri: metadata['tos_uri'] } : {}),
      // The device authorization grant has no redirect URI: its consent returns to <issuer>/device/:uid ('self').
      formAction: typeof details.params['redirect_uri'] === 'string' ? formActionSource(new URL(details.params['redirect_uri'])) : undefined,
    }),
  );
}

export type InteractionDetails = Awaited<ReturnType<AuthorizationServer['provider']['interactionDetails']>>;

export async function detailsOf(ctx: Context, server: AuthorizationServer): Promise<InteractionDetails> {
  asPublicRequest(ctx.req, server);
  try {
    return await server.provider.interactionDetails(ctx.req, ctx.res);
  } catch (err: unknown) {
    throw interactionLost(err);
  }
}

export function serverOf(deps: AppDeps): AuthorizationServer {
  if (deps.oauth === undefined) throw new Error(`${OAUTH_PREFIX} is routed only with native_clients: serve`);
  return deps.oauth;
}

export function interactionLost(cause?: unknown): PageError {
  return new PageError('expired', 400, 'M_UNKNOWN', cause);
}

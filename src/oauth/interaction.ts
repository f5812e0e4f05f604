import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { PageError } from '../errors/page-error.js';
import { bodyLimitsOf, readFormBody } from '../http/body.js';
import { OAUTH_PREFIX } from '../http/own-prefix.js';
import { logOf, paramOf, singleQueryValue } from '../http/request-state.js';
import { sendPage, sendRedirect } from '../pages/html-page.js';
import { consentPage } from '../pages/oauth-pages.js';
import { formActionSource } from '../compat/sso/redirect-url.js';
import { OAUTH_ROUTES, type AuthorizationServer, asPublicRequest } from './authorization-server.js';
import { parseMatrixScopes } from './matrix-scopes.js';

/**
 * The browser's steps between the authorization request and the code (oidc-provider's "interactions"):
 *   login   → the SSO bridge signs the user in at the upstream OP (mapping templates, bindings, attribute
 *             requirements, provisioning: all of compat/sso), then comes back with a login token;
 *   consent → a page for third-party clients (first-party ones, oauth_server.first_party_client_uris, never see it).
 */

/** GET <issuer>/interaction/:uid — what this interaction needs next. */
export async function getOAuthInteraction(ctx: Context, deps: AppDeps): Promise<void> {
  const server = serverOf(deps);
  const details = await detailsOf(ctx, server);
  const uid = paramOf(ctx, 'uid');
  if (details.uid !== uid) throw interactionLost();
  if (details.prompt.name === 'login') {
    // prompt=create (MSC2964 registration) → the OP's registration, as the legacy SSO redirect's action=register.
    const register = String(details.params['prompt'] ?? '').split(' ').includes('create');
    const back = `${server.issuer}${OAUTH_ROUTES.interaction}/${encodeURIComponent(uid)}/sso-done`;
    const start = `/_matrix/client/v3/login/sso/redirect?redirectUrl=${encodeURIComponent(back)}${register ? '&action=register' : ''}`;
    sendRedirect(ctx, start, 302);
    return;
  }
  await showConsent(ctx, deps, server, details);
}

/** GET <issuer>/interaction/:uid/sso-done?loginToken=… — the SSO bridge is done: the login step is finished. */
export async function getOAuthInteractionSsoDone(ctx: Context, deps: AppDeps): Promise<void> {
  const server = serverOf(deps);
  const details = await detailsOf(ctx, server);
  if (details.uid !== paramOf(ctx, 'uid')) throw interactionLost();
  const loginToken = singleQueryValue(ctx, 'loginToken');
  const grant = loginToken === undefined ? undefined : await deps.loginTokens.redeem(loginToken);
  if (grant === undefined) throw new PageError('unknown_state', 400, 'M_UNKNOWN');
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

async function showConsent(ctx: Context, deps: AppDeps, server: AuthorizationServer, details: Awaited<ReturnType<AuthorizationServer['provider']['interactionDetails']>>): Promise<void> {
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
      clientUri,
      deviceId: scopes.ok ? scopes.deviceId : undefined,
      ...(typeof metadata['policy_uri'] === 'string' ? { policyUri: metadata['policy_uri'] } : {}),
      ...(typeof metadata['tos_uri'] === 'string' ? { tosUri: metadata['tos_uri'] } : {}),
      formAction: formActionSource(new URL(String(details.params['redirect_uri']))),
    }),
  );
}

async function detailsOf(ctx: Context, server: AuthorizationServer) {
  asPublicRequest(ctx.req, server);
  try {
    return await server.provider.interactionDetails(ctx.req, ctx.res);
  } catch (err: unknown) {
    throw interactionLost(err);
  }
}

function serverOf(deps: AppDeps): AuthorizationServer {
  if (deps.oauth === undefined) throw new Error(`${OAUTH_PREFIX} is routed only with native_clients: serve`);
  return deps.oauth;
}

function interactionLost(cause?: unknown): PageError {
  return new PageError('expired', 400, 'M_UNKNOWN', cause);
}

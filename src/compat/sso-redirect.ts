import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { clientAddress, logOf, singleQueryValue } from '../http/request-state.js';
import { sendPage, sendRedirect } from '../pages/html-page.js';
import { pickerPage } from '../pages/sso-pages.js';
import { bindingHash, browserBinding } from './sso/browser-binding.js';
import { parseRedirectUrl } from './sso/redirect-url.js';
import { ssoError } from './sso/sso-error.js';
import { callbackUri } from './sso/sso-flow.js';
import { parseLoginHint, upstreamLoginHint } from '../identity/login-hint.js';

/**
 * GET /login/sso/redirect[/{idpId}]?redirectUrl=… — starts SSO at the OP (code + PKCE, state bound to a browser
 * cookie), or shows the provider picker when several are configured and the client named none.
 */
export async function getSsoRedirect(ctx: Context, deps: AppDeps, version: string, idpIdParam: string | undefined): Promise<void> {
  const requestedIdp = idpIdParam === undefined || idpIdParam === '' ? undefined : idpIdParam;
  if (requestedIdp !== undefined && !deps.providers.has(requestedIdp)) throw ssoError('unknown_provider');
  const target = parseRedirectUrl(singleQueryValue(ctx, 'redirectUrl'));
  if (!target.ok) throw ssoError(target.reason === 'missing' ? 'missing_redirect_url' : 'invalid_redirect_url');
  // MSC3824 / spec v1.18 `action`; the unstable name is what matrix-js-sdk also sends.
  const register = (singleQueryValue(ctx, 'action') ?? singleQueryValue(ctx, 'org.matrix.msc3824.action')) === 'register';
  // MSC4198 `login_hint=mxid:@user:server`, passed on by the OAuth server's interaction (oauth/interaction.ts), which
  // already refused a user of another server; here anything but a user of this server is ignored (a hint only).
  const loginHint = singleQueryValue(ctx, 'login_hint');
  const hint = parseLoginHint(loginHint, deps.config.server_name);
  const hintQuery = hint.kind === 'user' && loginHint !== undefined ? `&login_hint=${encodeURIComponent(loginHint)}` : '';

  let idpId = requestedIdp;
  if (idpId === undefined) {
    const offered = deps.config.oidc_providers.filter((provider) => deps.providers.has(provider.idp_id));
    if (offered.length > 1) {
      const entries = offered.map((provider) => ({
        name: provider.idp_name,
        href: `/_matrix/client/${version}/login/sso/redirect/${encodeURIComponent(provider.idp_id)}?redirectUrl=${encodeURIComponent(target.url.href)}${register ? '&action=register' : ''}${hintQuery}`,
      }));
      sendPage(ctx, pickerPage(deps.config.server_name, entries));
      return;
    }
    idpId = offered[0]?.idp_id;
  }
  const provider = idpId === undefined ? undefined : deps.providers.get(idpId);
  if (idpId === undefined || provider === undefined) throw ssoError('unknown_provider');

  // Each start writes a pending login to the store: unauthenticated writes get a per-IP bucket of their own.
  // Over the limit: RateLimited, which the renderer turns into the "too many attempts" page with Retry-After.
  await deps.throttle.checkSsoStart(clientAddress(ctx));
  const issuer = deps.policies.get(idpId)?.issuer ?? provider.issuer;
  const opHint = hint.kind === 'user' ? await upstreamLoginHint(deps.config.oauth_server.upstream_login_hint, deps.bindings, issuer, hint.localpart) : undefined;
  const lifetimeMs = deps.config.sessions.sso_login_lifetime;
  const secret = browserBinding(deps.config.public_baseurl).issue(ctx, lifetimeMs);
  const { state, nonce, codeVerifier } = await deps.ssoLogins.begin({ idpId, redirectUrl: target.url.href, browserHash: bindingHash(secret), lifetimeMs });
  // An unreachable OP (discovery) is thrown as it is: the renderer shows the "provider not reachable" page.
  const authorizationUrl = await provider.authorizationUrl({
    redirectUri: callbackUri(deps, idpId),
    state,
    nonce,
    codeVerifier,
    // The OIDC "prompt=create" extension is what the spec's OAuth API uses for registration too.
    ...(register ? { prompt: 'create' } : {}),
    ...(opHint === undefined ? {} : { loginHint: opHint }),
  });
  logOf(ctx, deps.logger).info({ event: 'sso.redirect', idp_id: idpId, register, login_hint: hint.kind }, 'sso.redirect');
  sendRedirect(ctx, authorizationUrl.href, 302);
}

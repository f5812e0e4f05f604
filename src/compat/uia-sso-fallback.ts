import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { clientAddress, logOf, singleQueryValue } from '../http/request-state.js';
import { sendPage } from '../pages/html-page.js';
import { messages } from '../pages/messages.js';
import { reauthPage } from '../pages/reauth-pages.js';
import { bindingHash, browserBinding } from './sso/browser-binding.js';
import { ssoError } from './sso/sso-error.js';
import { callbackUri } from './sso/sso-flow.js';

/**
 * GET /_matrix/client/v3/auth/m.login.sso/fallback/web?session=… (C-S spec, "Fallback"): the page a client opens
 * for the m.login.sso stage of User-Interactive Auth. It names the operation and the account, then sends the browser
 * to the OP with `prompt=login` and `max_age=0` (OIDC Core §3.1.2.1: a fresh sign-in, not the OP's remembered
 * session); the OP comes back through the SSO callback (sso-callback.ts), which marks the stage completed.
 */
export async function getUiaSsoFallback(ctx: Context, deps: AppDeps): Promise<void> {
  const id = singleQueryValue(ctx, 'session');
  const record = id === undefined ? undefined : await deps.uia.get(id);
  if (id === undefined || record === undefined) throw ssoError('uia_session_unknown');
  const provider = deps.providers.get(record.idpId);
  if (provider === undefined) throw ssoError('unknown_provider');

  // Over the limit: RateLimited, which the renderer turns into the "too many attempts" page with Retry-After.
  await deps.throttle.checkSsoStart(clientAddress(ctx));
  const lifetimeMs = Math.min(deps.config.sessions.sso_login_lifetime, Math.max(1, record.expiresAt - deps.clock.now()));
  const secret = browserBinding(deps.config.public_baseurl).issue(ctx, lifetimeMs);
  const requestedAt = deps.clock.now();
  const { state, nonce, codeVerifier } = await deps.ssoLogins.begin({
    idpId: record.idpId,
    // Unused for a re-authentication (nothing is redirected to a client); kept for the record's shape.
    redirectUrl: `${deps.config.public_baseurl}_matrix/client/v3/auth/m.login.sso/fallback/web`,
    browserHash: bindingHash(secret),
    lifetimeMs,
    purpose: { kind: 'uia', uiaSessionId: id, requestedAt },
  });
  const authorizationUrl = await provider.authorizationUrl({ redirectUri: callbackUri(deps, record.idpId), state, nonce, codeVerifier, prompt: 'login', maxAge: 0 });
  logOf(ctx, deps.logger).info({ event: 'uia.sso.start', idp_id: record.idpId, localpart: record.localpart }, 'uia.sso.start');
  sendPage(
    ctx,
    reauthPage({
      userId: `@${record.localpart}:${deps.config.server_name}`,
      operation: messages.reauth.operations[record.operation.kind](record.operation.deviceIds.length),
      providerName: provider.idpName,
      continueHref: authorizationUrl.href,
    }),
  );
}

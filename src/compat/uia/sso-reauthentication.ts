import type { Context } from 'koa';
import type { AppDeps } from '../../app-deps.js';
import { logOf } from '../../http/request-state.js';
import type { UpstreamProvider } from '../../oidc/upstream.js';
import { sendPage } from '../../pages/html-page.js';
import { reauthDonePage } from '../../pages/reauth-pages.js';
import type { PendingSsoLogin, SsoPurpose } from '../../sessions/pending-sso-logins.js';
import { ssoError } from '../sso/sso-error.js';
import { exchangeCallbackCode } from '../sso/sso-flow.js';

/** Clock skew allowed between the OP's `auth_time` and the proxy's clock. */
const AUTH_TIME_SKEW_MS = 30_000;

/**
 * The SSO callback of a re-authentication (the m.login.sso stage of User-Interactive Auth): the OP must have signed
 * in the same subject the UIA session belongs to, freshly (its `auth_time` not before the proxy asked), and then the
 * stage is completed and the fallback page tells the client so. Nothing is minted and no session is made here.
 */
export async function completeSsoReauthentication(
  ctx: Context,
  deps: AppDeps,
  provider: UpstreamProvider,
  idpId: string,
  state: string,
  pending: PendingSsoLogin,
  purpose: Extract<SsoPurpose, { kind: 'uia' }>,
): Promise<void> {
  const grant = await exchangeCallbackCode(ctx, deps, provider, idpId, state, pending);
  // Only the proof was wanted, but its OP tokens are dropped, not revoked: this authorization shares the browser's OP
  // session (and at oidc-provider its grant) with the user's SSO logins, and revoking it would end those too.

  const record = await deps.uia.get(purpose.uiaSessionId);
  if (record === undefined) throw ssoError('uia_session_unknown');
  const log = logOf(ctx, deps.logger);
  if (record.idpId !== idpId || record.sub !== grant.sub) {
    log.warn({ event: 'uia.sso.wrong_account', idp_id: idpId, localpart: record.localpart }, 'uia.sso.wrong_account');
    throw ssoError('reauth_wrong_account');
  }
  const authTime = grant.claims['auth_time'];
  if (typeof authTime !== 'number' || authTime * 1000 < purpose.requestedAt - AUTH_TIME_SKEW_MS) {
    log.warn({ event: 'uia.sso.stale', idp_id: idpId, auth_time: authTime }, 'uia.sso.stale');
    throw ssoError('reauth_stale');
  }
  if (!(await deps.uia.complete(purpose.uiaSessionId, 'm.login.sso'))) throw ssoError('uia_session_unknown');
  log.info({ event: 'uia.sso.ok', idp_id: idpId, localpart: record.localpart }, 'uia.sso.ok');
  sendPage(ctx, reauthDonePage());
}

import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { logOf } from '../http/request-state.js';
import { sendRedirect } from '../pages/html-page.js';
import { ssoError } from '../compat/sso/sso-error.js';
import { endAppPasswordSessions } from '../sessions/app-password-sessions.js';
import { readAccountForm, requireRecentAuthentication } from './account-form.js';
import { accountPaths } from './account-paths.js';

/**
 * POST /_matrix-compat-proxy/account/app-passwords/revoke — deletes one of the user's app passwords and ends every
 * session made with it. The OP grant is not revoked at the OP: it is the page sign-in's grant, which at some OPs
 * (oidc-provider) is shared with the browser's SSO logins.
 */
export async function postAppPasswordRevoke(ctx: Context, deps: AppDeps): Promise<void> {
  const { session, form } = await readAccountForm(ctx, deps);
  // After the body is read: a trickled body gets its 408 whatever the config (owned-routes test).
  if (!deps.config.app_passwords.enabled) throw ssoError('app_password_unavailable');
  if (!(await requireRecentAuthentication(ctx, deps, session, `${accountPaths.page}#app-passwords`))) return;
  const revoked = await deps.appPasswords.revoke(session.localpart, form.get('app_password_id') ?? '');
  // Another user's id is as unknown as a made-up one.
  if (revoked === undefined) throw ssoError('app_password_unknown');
  const ended = await endAppPasswordSessions(deps, revoked);
  logOf(ctx, deps.logger).info({ event: 'account.app_password_revoked', localpart: session.localpart, app_password_id: revoked.id, sessions_ended: ended }, 'account.app_password_revoked');
  sendRedirect(ctx, `${deps.config.public_baseurl}${accountPaths.page.slice(1)}?${new URLSearchParams({ action: 'org.matrix.profile', revoked: revoked.name }).toString()}#app-passwords`, 303);
}

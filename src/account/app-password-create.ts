import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { logOf } from '../http/request-state.js';
import { appPasswordCreatedPage } from '../pages/account-pages.js';
import { sendPage } from '../pages/html-page.js';
import { cleanAppPasswordName } from '../sessions/app-passwords.js';
import { ssoError } from '../compat/sso/sso-error.js';
import { readAccountForm, requireRecentAuthentication } from './account-form.js';
import { accountPaths } from './account-paths.js';
import { startAccountSignIn } from './account-sign-in.js';

/**
 * POST /_matrix-compat-proxy/account/app-passwords/create — makes a named app password (issue 15, item 3) and shows
 * its secret once. It is tied to the OP grant of this page session's sign-in (the refresh token kept sealed with it),
 * which a recent sign-in makes fresh: re-validation spends that grant, so the OP still decides.
 */
export async function postAppPasswordCreate(ctx: Context, deps: AppDeps): Promise<void> {
  const { id, session, form } = await readAccountForm(ctx, deps);
  // After the body is read: a trickled body gets its 408 whatever the config (owned-routes test).
  if (!deps.config.app_passwords.enabled) throw ssoError('app_password_unavailable');
  const name = cleanAppPasswordName(form.get('name'));
  if (name === undefined) throw ssoError('app_password_name');
  if (!(await requireRecentAuthentication(ctx, deps, session, `${accountPaths.page}#app-passwords`))) return;
  // Each app password gets a refresh token of its own: an earlier one took this sign-in's, so sign in again.
  if (session.sealedOpRefreshToken === undefined && session.opGrantTaken === true) {
    await startAccountSignIn(ctx, deps, `${accountPaths.page}#app-passwords`, true);
    return;
  }
  if ((await deps.appPasswords.list(session.localpart)).length >= deps.config.app_passwords.max_per_user) throw ssoError('app_password_too_many');
  // No refresh token: the OP gave no lasting grant (no offline_access where it needs one); nothing to tie it to.
  const sealedOpRefreshToken = await deps.accountSessions.takeOpRefreshToken(id);
  if (sealedOpRefreshToken === undefined) throw ssoError('app_password_no_grant');
  const created = await deps.appPasswords.create(
    {
      localpart: session.localpart,
      name,
      idpId: session.idpId,
      issuer: session.issuer,
      sub: session.sub,
      ...(session.email === undefined ? {} : { email: session.email }),
      sealedOpRefreshToken,
    },
    deps.config.app_passwords.max_per_user,
  );
  if (!created.ok) throw ssoError('app_password_too_many');
  logOf(ctx, deps.logger).info({ event: 'account.app_password_created', localpart: session.localpart, app_password_id: created.appPassword.id }, 'account.app_password_created');
  ctx.set('Cache-Control', 'no-store');
  sendPage(ctx, appPasswordCreatedPage({ name, secret: created.secret, paths: accountPaths }));
}

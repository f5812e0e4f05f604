import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { logOf } from '../http/request-state.js';
import { sendPage } from '../pages/html-page.js';
import { crossSigningResetDonePage } from '../pages/account-pages.js';
import { readAccountForm, requireRecentAuthentication } from './account-form.js';
import { accountPaths, actionPath } from './account-paths.js';

/**
 * POST /_matrix-compat-proxy/account/cross-signing-reset — the user (freshly signed in at the OP) approves replacing
 * their cross-signing master key. Synapse under delegated auth answers a replacement with a 401 pointing here
 * (`?action=org.matrix.cross_signing_reset`) and accepts it for 10 minutes once its auth service allowed it
 * (`POST /_synapse/mas/allow_cross_signing_reset`).
 */
export async function postCrossSigningReset(ctx: Context, deps: AppDeps): Promise<void> {
  const { session } = await readAccountForm(ctx, deps);
  if (!(await requireRecentAuthentication(ctx, deps, session, actionPath('org.matrix.cross_signing_reset')))) return;
  await deps.homeserver.allowCrossSigningReset(session.localpart);
  logOf(ctx, deps.logger).info({ event: 'account.cross_signing_reset_allowed', localpart: session.localpart }, 'account.cross_signing_reset_allowed');
  sendPage(ctx, crossSigningResetDonePage({ paths: accountPaths }));
}

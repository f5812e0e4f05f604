import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { sendPage } from '../pages/html-page.js';
import { signedOutPage } from '../pages/account-pages.js';
import { clearAccountCookie } from './account-cookie.js';
import { readAccountForm } from './account-form.js';
import { accountPaths } from './account-paths.js';

/** POST /_matrix-compat-proxy/account/sign-out — ends the page session only; the user's apps stay signed in. */
export async function postAccountSignOut(ctx: Context, deps: AppDeps): Promise<void> {
  const { id } = await readAccountForm(ctx, deps);
  await deps.accountSessions.remove(id);
  clearAccountCookie(ctx, deps);
  sendPage(ctx, signedOutPage({ paths: accountPaths }));
}

import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { readPageForm } from '../compat/sso/page-form.js';
import { ssoError } from '../compat/sso/sso-error.js';
import type { AccountSession } from '../sessions/account-sessions.js';
import { currentAccountSession, validAccountCsrfToken } from './account-cookie.js';
import { startAccountSignIn } from './account-sign-in.js';

/** An honest form of the page is a CSRF token and a device id. */
const FORM_LIMIT_BYTES = 4096;

export interface AccountForm {
  readonly id: string;
  readonly session: AccountSession;
  readonly form: URLSearchParams;
}

/**
 * What every POST of the account page checks first: a form body (bounded), a live page session from the cookie,
 * and the CSRF token derived from it. Anything else gets the "form could not be checked" page, never an action.
 */
export async function readAccountForm(ctx: Context, deps: AppDeps): Promise<AccountForm> {
  const form = await readPageForm(ctx, deps, { maxBytes: FORM_LIMIT_BYTES, refusal: 'account_csrf' });
  const current = await currentAccountSession(ctx, deps);
  if (current === undefined || !validAccountCsrfToken(current.id, form.get('csrf_token'))) throw ssoError('account_csrf');
  return { id: current.id, session: current.session, form };
}

/**
 * Sensitive actions need an OP sign-in no older than `account.recent_auth_window`; an older one sends the browser to
 * sign in again (`prompt=login`) and back to the action's page, where the user confirms again. Returns false when
 * it redirected.
 */
export async function requireRecentAuthentication(ctx: Context, deps: AppDeps, session: AccountSession, returnTo: string): Promise<boolean> {
  if (deps.clock.now() - session.authTime <= deps.config.account.recent_auth_window) return true;
  await startAccountSignIn(ctx, deps, returnTo, true);
  return false;
}

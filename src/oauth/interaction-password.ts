import { timingSafeEqual } from 'node:crypto';
import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { MatrixError } from '../errors/matrix-error.js';
import { PageError } from '../errors/page-error.js';
import { logOf, paramOf } from '../http/request-state.js';
import { sendPage, sendRedirect } from '../pages/html-page.js';
import { messages } from '../pages/messages.js';
import { RateLimited } from '../security/login-throttle.js';
import { canonicalUser, MAX_ACCOUNT_NAME_LENGTH, MAX_PASSWORD_LENGTH } from '../security/account-name.js';
import { admitPasswordAttempt, opPasswordSignIn } from '../compat/password-sign-in.js';
import { readPageForm } from '../compat/sso/page-form.js';
import { ssoError } from '../compat/sso/sso-error.js';
import { acceptedInteractionCsrfTokens, detailsOf, interactionLost, passwordFormEnabled, serverOf, signInPageOf } from './interaction.js';

/** A user name, a password and a token fit well inside this; anything bigger is no honest form. */
const FORM_LIMIT_BYTES = 4 * (MAX_ACCOUNT_NAME_LENGTH + MAX_PASSWORD_LENGTH) + 1024;

/**
 * POST <issuer>/interaction/:uid/password — the sign-in page's password form. The password is checked at the OP
 * exactly as POST /login checks it (compat/password-sign-in.ts: throttle buckets, bindings, mapping, refusals);
 * app passwords are not taken here (they are for legacy clients that cannot open a browser). A refusal shows the
 * form again with /login's words; success completes the login step like the SSO bridge does.
 */
export async function postOAuthInteractionPassword(ctx: Context, deps: AppDeps): Promise<void> {
  const server = serverOf(deps);
  if (!passwordFormEnabled(deps)) throw new PageError('unknown_state', 404, 'M_NOT_FOUND');
  const form = await readPageForm(ctx, deps, { maxBytes: FORM_LIMIT_BYTES, refusal: 'csrf' });
  const details = await detailsOf(ctx, server);
  const uid = paramOf(ctx, 'uid');
  if (details.uid !== uid || details.prompt.name !== 'login') throw interactionLost();
  const given = form.get('csrf_token');
  if (!acceptedInteractionCsrfTokens(deps.config, uid).some((expected) => sameToken(given, expected))) throw ssoError('csrf');

  const username = form.get('username') ?? '';
  const password = form.get('password') ?? '';
  const again = (error: string, status: number) => sendPage(ctx, signInPageOf(deps, server, details, uid, { username: username.slice(0, MAX_ACCOUNT_NAME_LENGTH), error, status }));
  let signedIn;
  try {
    const { account, admit } = await admitPasswordAttempt(ctx, deps, canonicalUser(username, deps.config.server_name), password);
    signedIn = await opPasswordSignIn(ctx, deps, account, password, admit, async ({ localpart, origin }) => ({ localpart, origin }));
  } catch (err: unknown) {
    if (err instanceof RateLimited) {
      ctx.set('Retry-After', String(Math.max(1, Math.ceil(err.retryAfterMs / 1000))));
      return again(messages.oauthSignIn.rateLimited, 429);
    }
    // The refusals of POST /login (wrong password, deactivated, not allowed, no Matrix user): the same words here.
    if (err instanceof MatrixError && !(err instanceof PageError) && err.status === 403) return again(err.message, 403);
    throw err;
  }
  deps.metrics.logins.inc({ type: 'password', outcome: 'ok' });
  const signInId = await server.signIns.create(signedIn, deps.config.sessions.sso_login_lifetime);
  logOf(ctx, deps.logger).info({ event: 'oauth.signed_in', localpart: signedIn.localpart, idp_id: signedIn.origin.idpId, kind: 'password' }, 'oauth.signed_in');
  const returnTo = await server.provider.interactionResult(ctx.req, ctx.res, { login: { accountId: signInId } }, { mergeWithLastSubmission: false });
  sendRedirect(ctx, returnTo, 303);
}


function sameToken(given: string | null, expected: string): boolean {
  if (given === null) return false;
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

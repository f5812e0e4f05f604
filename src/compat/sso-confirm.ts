import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { logOf, paramOf } from '../http/request-state.js';
import { sendPage, sendRedirect } from '../pages/html-page.js';
import { confirmationPage } from '../pages/sso-pages.js';
import { sameHash } from '../sessions/tokens.js';
import { bindingHash, browserBinding, csrfTokenFor } from './sso/browser-binding.js';
import { readPageForm } from './sso/page-form.js';
import { destinationLabel, formActionSource, withLoginToken } from './sso/redirect-url.js';
import { ssoError } from './sso/sso-error.js';
import { mintLoginToken } from './sso/sso-flow.js';

/** An honest confirmation form is a CSRF token and nothing else. */
const FORM_LIMIT_BYTES = 4096;

/** GET /_matrix-compat-proxy/sso/confirm/{id} — "Continue to <host>?", shown only to the browser that signed in. */
export async function getSsoConfirm(ctx: Context, deps: AppDeps): Promise<void> {
  const id = paramOf(ctx, 'id');
  const confirmation = await deps.ssoLogins.peekConfirmation(id);
  if (confirmation === undefined) throw ssoError('confirmation_unknown');
  const secret = browserBinding(deps.config.public_baseurl).read(ctx);
  if (secret === undefined || !sameHash(bindingHash(secret), confirmation.browserHash)) throw ssoError('cookie_mismatch');
  const target = new URL(confirmation.redirectUrl);
  sendPage(
    ctx,
    confirmationPage({
      userId: `@${confirmation.localpart}:${deps.config.server_name}`,
      destination: destinationLabel(target),
      redirectUrl: confirmation.redirectUrl,
      csrfToken: csrfTokenFor(id, secret),
      formAction: formActionSource(target),
    }),
  );
}

/** POST /_matrix-compat-proxy/sso/confirm/{id} — "Continue": 303 to the client's redirectUrl with a fresh loginToken. */
export async function postSsoConfirm(ctx: Context, deps: AppDeps): Promise<void> {
  const id = paramOf(ctx, 'id');
  const form = await readPageForm(ctx, deps, { maxBytes: FORM_LIMIT_BYTES, refusal: 'csrf' });
  const confirmation = await deps.ssoLogins.peekConfirmation(id);
  if (confirmation === undefined) throw ssoError('confirmation_unknown');
  const secret = browserBinding(deps.config.public_baseurl).read(ctx);
  if (secret === undefined || !sameHash(bindingHash(secret), confirmation.browserHash)) throw ssoError('cookie_mismatch');
  const csrfToken = form.get('csrf_token');
  if (csrfToken === null || !sameHash(csrfToken, csrfTokenFor(id, secret))) throw ssoError('csrf');
  // Checked first, used up last: a forged POST cannot burn someone's confirmation, and a double click mints one token.
  const taken = await deps.ssoLogins.takeConfirmation(id);
  if (taken === undefined) throw ssoError('confirmation_unknown');
  const token = await mintLoginToken(deps, taken);
  logOf(ctx, deps.logger).info({ event: 'sso.confirmed', idp_id: taken.idpId, localpart: taken.localpart }, 'sso.confirmed');
  // 303: the browser follows with a GET, as a client expects on its redirect URL.
  sendRedirect(ctx, withLoginToken(taken.redirectUrl, token), 303);
}


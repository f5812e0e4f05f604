import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { MatrixError } from '../errors/matrix-error.js';
import { logOf, paramOf, singleQueryValue } from '../http/request-state.js';
import { OAUTH_PREFIX } from '../http/own-prefix.js';
import { resolveAccount, type AccountRefusal, type ResolvedAccount } from '../identity/account-resolver.js';
import { provisionAccount } from '../identity/account-provisioning.js';
import { sendRedirect } from '../pages/html-page.js';
import type { PendingConfirmation, PendingSsoLogin } from '../sessions/pending-sso-logins.js';
import { browserBinding } from './sso/browser-binding.js';
import { isWhitelisted, withLoginToken } from './sso/redirect-url.js';
import { ssoError } from './sso/sso-error.js';
import { confirmationUri, exchangeCallbackCode, mintLoginToken } from './sso/sso-flow.js';
import { resolveOrRefuse } from './sign-in.js';
import { completeSsoReauthentication } from './uia/sso-reauthentication.js';
import { completeAccountSignIn } from '../account/account-sign-in.js';

/**
 * GET /_matrix-compat-proxy/sso/callback/{idpId} — the OP's answer: code exchange, account mapping and provisioning,
 * then the confirmation page (or, for a whitelisted client, the login token at once).
 */
export async function getSsoCallback(ctx: Context, deps: AppDeps): Promise<void> {
  const idpId = paramOf(ctx, 'idpId');
  const provider = deps.providers.get(idpId);
  const policy = deps.policies.get(idpId);
  if (provider === undefined || policy === undefined) throw ssoError('unknown_provider');

  const { state, pending } = await takePendingLogin(ctx, deps, idpId);

  const opError = singleQueryValue(ctx, 'error');
  if (opError !== undefined) {
    logOf(ctx, deps.logger).info({ event: 'sso.op_error', idp_id: idpId, op_error: opError.slice(0, 64) }, 'sso.op_error');
    deps.metrics.logins.inc({ type: 'sso', outcome: 'rejected' });
    // OIDC Core §3.1.2.6: these mean the user did not (or could not) sign in, not that the OP is broken.
    const userSide = ['access_denied', 'login_required', 'interaction_required', 'consent_required', 'account_selection_required'];
    throw ssoError(userSide.includes(opError) ? 'op_denied' : 'op_error');
  }
  // A re-authentication for User-Interactive Auth, or a sign-in to the account page: not a client login.
  if (pending.purpose?.kind === 'uia') return completeSsoReauthentication(ctx, deps, provider, idpId, state, pending, pending.purpose);
  if (pending.purpose?.kind === 'account') return completeAccountSignIn(ctx, deps, provider, idpId, state, pending, pending.purpose);

  // Taken before the OP is asked: a back-channel logout that arrives while the code is exchanged or the account
  // resolved finds no login yet, and its marker must count against this one (op-logouts.ts loggedOutAtOpSince).
  const exchangedAt = deps.clock.now();
  const grant = await exchangeCallbackCode(ctx, deps, provider, idpId, state, pending, (err) =>
    deps.metrics.logins.inc({ type: 'sso', outcome: err.kind === 'unavailable' ? 'error' : 'rejected' }),
  );

  let account: ResolvedAccount;
  try {
    // Typed as AccountRefusal → SsoFailure: every refusal the resolver can give has a page of its own.
    account = await resolveOrRefuse(ctx, deps, idpId, () => resolveAccount(policy, grant, deps), (failure: AccountRefusal) => ssoError(failure), grant);
    await provisionAccount(deps.homeserver, account, deps.bindings);
  } catch (err: unknown) {
    deps.metrics.logins.inc({ type: 'sso', outcome: err instanceof MatrixError && err.status < 500 ? 'rejected' : 'error' });
    throw err;
  }

  const confirmation: PendingConfirmation = {
    idpId,
    issuer: policy.issuer,
    sub: grant.sub,
    ...(grant.sid === undefined ? {} : { sid: grant.sid }),
    ...(grant.refreshToken === undefined ? {} : { sealedOpRefreshToken: deps.keys.seal(grant.refreshToken) }),
    localpart: account.localpart,
    ...(account.identity.displayName === undefined ? {} : { displayName: account.identity.displayName }),
    redirectUrl: pending.redirectUrl,
    browserHash: pending.browserHash,
    validatedAt: exchangedAt,
  };
  deps.metrics.logins.inc({ type: 'sso', outcome: 'ok' });
  logOf(ctx, deps.logger).info({ event: 'sso.callback.ok', idp_id: idpId, localpart: account.localpart, first_login: account.firstLogin }, 'sso.callback.ok');

  // Synapse's sso.client_whitelist: trusted clients skip the confirmation page.
  // The proxy's own OAuth server (native_clients: serve) is where its interaction comes back to: always trusted.
  const ownOAuthInteraction = `${deps.config.public_baseurl.replace(/\/$/, '')}${OAUTH_PREFIX}/interaction/`;
  if (isWhitelisted(pending.redirectUrl, [...deps.config.sso.client_whitelist, ownOAuthInteraction])) {
    sendRedirect(ctx, withLoginToken(pending.redirectUrl, await mintLoginToken(deps, confirmation)), 302);
    return;
  }
  const id = await deps.ssoLogins.saveConfirmation(confirmation, deps.config.sessions.sso_login_lifetime);
  sendRedirect(ctx, confirmationUri(deps, id), 302);
}

/**
 * State, expiry and browser binding are checked on a read that changes nothing, and only then is the pending login
 * used up (then the provider: one callback path per provider, against mix-up) (issue 12 #5, #8): whoever sees the callback
 * URL without the browser's cookie burns nothing, and a read that timed out against a hung store (and runs when it
 * recovers) leaves the sign-in in place for the browser's retry. The consume stays atomic: of two callbacks with
 * the cookie, one wins.
 */
async function takePendingLogin(ctx: Context, deps: AppDeps, idpId: string): Promise<{ state: string; pending: PendingSsoLogin }> {
  const state = singleQueryValue(ctx, 'state');
  const pending = state === undefined ? undefined : await deps.ssoLogins.peekPending(state);
  if (state === undefined || pending === undefined) throw ssoError('unknown_state');
  if (deps.clock.now() >= pending.expiresAt) throw ssoError('expired');
  if (!browserBinding(deps.config.public_baseurl).matches(ctx, pending.browserHash)) throw ssoError('cookie_mismatch');
  const taken = await deps.ssoLogins.takePending(state);
  if (taken === undefined) throw ssoError('unknown_state');
  // After the consume: a mix-up in the browser that started the sign-in ends that sign-in (RFC 9700 §4.4).
  if (taken.idpId !== idpId) throw ssoError('wrong_callback');
  return { state, pending: taken };
}

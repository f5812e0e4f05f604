import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { clientAddress, logOf, singleQueryValue } from '../http/request-state.js';
import { resolveAccount, type AccountRefusal } from '../identity/account-resolver.js';
import { provisionAccount } from '../identity/account-provisioning.js';
import type { UpstreamGrant, UpstreamProvider } from '../oidc/upstream.js';
import { sendRedirect } from '../pages/html-page.js';
import type { PendingSsoLogin, SsoPurpose } from '../sessions/pending-sso-logins.js';
import { bindingHash, browserBinding } from '../compat/sso/browser-binding.js';
import { ssoError } from '../compat/sso/sso-error.js';
import { callbackUri, exchangeCallbackCode } from '../compat/sso/sso-flow.js';
import { resolveOrRefuse } from '../compat/sign-in.js';
import { readAccountCookie, setAccountCookie } from './account-cookie.js';
import { accountPaths, safeReturnPath } from './account-paths.js';
import { loggedOutAtOpSince } from '../sessions/op-logouts.js';

/** Clock skew allowed between the OP's `auth_time` and the proxy's clock. */
const AUTH_TIME_SKEW_MS = 30_000;

/**
 * GET /_matrix-compat-proxy/account/sign-in?return=…[&fresh=1] — signs in to the account page at the OP (code +
 * PKCE, state bound to the browser like the SSO bridge). `fresh=1` asks the OP for a new authentication
 * (`prompt=login`, `max_age=0`, OIDC Core §3.1.2.1): what the sensitive actions need when the last one is too old.
 */
export async function getAccountSignIn(ctx: Context, deps: AppDeps): Promise<void> {
  await startAccountSignIn(ctx, deps, safeReturnPath(singleQueryValue(ctx, 'return')), singleQueryValue(ctx, 'fresh') === '1');
}

/** The provider the account page signs in with: password login's, else the first configured. */
export function accountProvider(deps: AppDeps): UpstreamProvider | undefined {
  const idpId = deps.config.password_login.idp_id ?? deps.config.oidc_providers[0]?.idp_id;
  return idpId === undefined ? undefined : deps.providers.get(idpId);
}

export async function startAccountSignIn(ctx: Context, deps: AppDeps, returnTo: string, fresh: boolean): Promise<void> {
  if (!deps.config.account.enabled) throw ssoError('account_unavailable');
  const provider = accountProvider(deps);
  if (provider === undefined) throw ssoError('unknown_provider');
  // Over the limit: RateLimited, which the renderer turns into the "too many attempts" page with Retry-After.
  await deps.throttle.checkSsoStart(clientAddress(ctx));
  const lifetimeMs = deps.config.sessions.sso_login_lifetime;
  const secret = browserBinding(deps.config.public_baseurl).issue(ctx, lifetimeMs);
  const { state, nonce, codeVerifier } = await deps.ssoLogins.begin({
    idpId: provider.idpId,
    // Unused for the account page (nothing is sent to a client); kept for the record's shape.
    redirectUrl: `${deps.config.public_baseurl}${accountPaths.page.slice(1)}`,
    browserHash: bindingHash(secret),
    lifetimeMs,
    purpose: { kind: 'account', returnTo, fresh, requestedAt: deps.clock.now() },
  });
  const authorizationUrl = await provider.authorizationUrl({
    redirectUri: callbackUri(deps, provider.idpId),
    state,
    nonce,
    codeVerifier,
    ...(fresh ? { prompt: 'login', maxAge: 0 } : {}),
  });
  // 303 after a form POST (a stale sign-in on a sensitive action): the browser follows with a GET.
  sendRedirect(ctx, authorizationUrl.href, ctx.method === 'POST' ? 303 : 302);
}

/**
 * The SSO callback of an account-page sign-in: the same account resolution as an SSO login (so the page shows the
 * Matrix user the user's apps sign in as), then a page session and its cookie, then back to where the user was.
 */
export async function completeAccountSignIn(
  ctx: Context,
  deps: AppDeps,
  provider: UpstreamProvider,
  idpId: string,
  state: string,
  pending: PendingSsoLogin,
  purpose: Extract<SsoPurpose, { kind: 'account' }>,
): Promise<void> {
  const policy = deps.policies.get(idpId);
  if (policy === undefined) throw ssoError('unknown_provider');
  // Taken before the OP is asked: a back-channel logout after it (its markers) ends the page session, including one
  // that arrives while the code is being exchanged.
  const signedInAt = deps.clock.now();
  const grant = await exchangeCallbackCode(ctx, deps, provider, idpId, state, pending);
  // Its OP tokens are not revoked when the page session ends: this authorization shares the browser's OP session (and
  // at oidc-provider its grant) with the user's SSO logins, and revoking it would end those too. The refresh token is
  // kept (sealed) for the page session's lifetime: an app password created in it is tied to that grant.

  const authTimeClaim = grant.claims['auth_time'];
  const authTime = typeof authTimeClaim === 'number' ? authTimeClaim * 1000 : undefined;
  if (purpose.fresh && (authTime === undefined || authTime < purpose.requestedAt - AUTH_TIME_SKEW_MS)) throw ssoError('reauth_stale');

  const account = await resolveOrRefuse(ctx, deps, idpId, () => resolveAccount(policy, grant, deps), (failure: AccountRefusal) => ssoError(failure));
  await provisionAccount(deps.homeserver, account, deps.bindings);
  const lifetimeMs = deps.config.account.session_lifetime;
  const { id } = await deps.accountSessions.create(
    {
      localpart: account.localpart,
      idpId,
      issuer: policy.issuer,
      sub: grant.sub,
      ...(grant.sid === undefined ? {} : { sid: grant.sid }),
      // An OP that sends no auth_time vouches for "now" at best: the proxy's clock when the answer came.
      authTime: Math.min(authTime ?? deps.clock.now(), deps.clock.now()),
      signedInAt,
      ...(grant.refreshToken === undefined ? {} : { sealedOpRefreshToken: deps.keys.seal(grant.refreshToken) }),
      ...verifiedEmailOf(grant),
    },
    lifetimeMs,
    (secret) => deps.keys.seal(secret),
  );
  // A logout of this OP session that arrived while the account was resolved and provisioned (before the page session
  // existed, so its own check compares with a later time): the sign-in is void, as for logins (op-logouts.ts).
  const origin = { idpId, sub: grant.sub, ...(grant.sid === undefined ? {} : { sid: grant.sid }) };
  if (await loggedOutAtOpSince(deps.store, origin, signedInAt)) {
    await deps.accountSessions.remove(id);
    throw ssoError('op_denied');
  }
  // A fresh sign-in replaces this browser's earlier page session rather than leaving it to expire.
  const previous = readAccountCookie(ctx, deps);
  if (previous !== undefined) await deps.accountSessions.remove(previous);
  setAccountCookie(ctx, deps, id, lifetimeMs);
  logOf(ctx, deps.logger).info({ event: 'account.signed_in', idp_id: idpId, localpart: account.localpart, fresh: purpose.fresh }, 'account.signed_in');
  sendRedirect(ctx, `${deps.config.public_baseurl}${safeReturnPath(purpose.returnTo).slice(1)}`, 303);
}

/** The e-mail claim when the OP does not say it is unverified (OIDC Core §5.1 `email_verified`). */
function verifiedEmailOf(grant: UpstreamGrant): { email?: string } {
  const email = grant.claims['email'];
  return typeof email === 'string' && email !== '' && grant.claims['email_verified'] !== false ? { email } : {};
}

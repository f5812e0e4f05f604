import type { Context } from 'koa';
import type { AppDeps } from '../../app-deps.js';
import { OWN_PREFIX } from '../../http/own-prefix.js';
import { UpstreamError, type UpstreamGrant, type UpstreamProvider } from '../../oidc/upstream.js';
import type { PendingConfirmation, PendingSsoLogin } from '../../sessions/pending-sso-logins.js';
import { ssoError } from './sso-error.js';

/**
 * m.login.sso through the upstream OP (Matrix C-S spec, "Client login via SSO"), in three endpoint files:
 *   GET /login/sso/redirect[/{idpId}]  → 302 to the OP (or the provider picker), state bound to a browser cookie
 *                                         (sso-redirect.ts)
 *   GET  OWN_PREFIX/sso/callback/{idpId} → code exchange, account mapping, provisioning → confirmation page
 *                                         (sso-callback.ts)
 *   GET/POST OWN_PREFIX/sso/confirm/{id} → "Continue to <host>?" → 303 to redirectUrl with a single-use loginToken
 *                                         (sso-confirm.ts)
 * Every answer is an HTML page or a redirect: these routes are visited by a browser, not called by a client.
 */

/** The redirect_uri registered at the OP: one per provider, so a response can only land on its own provider's path. */
export function callbackUri(deps: Pick<AppDeps, 'config'>, idpId: string): string {
  return `${deps.config.public_baseurl}${OWN_PREFIX.slice(1)}/sso/callback/${encodeURIComponent(idpId)}`;
}

export function confirmationUri(deps: Pick<AppDeps, 'config'>, id: string): string {
  return `${deps.config.public_baseurl}${OWN_PREFIX.slice(1)}/sso/confirm/${id}`;
}

/** The single-use `m.login.token` a confirmed SSO login becomes. */
export function mintLoginToken(deps: Pick<AppDeps, 'loginTokens' | 'config'>, confirmation: PendingConfirmation): Promise<string> {
  return deps.loginTokens.mint(
    {
      localpart: confirmation.localpart,
      origin: {
        kind: 'sso',
        idpId: confirmation.idpId,
        issuer: confirmation.issuer,
        sub: confirmation.sub,
        ...(confirmation.sid === undefined ? {} : { sid: confirmation.sid }),
        ...(confirmation.sealedOpRefreshToken === undefined ? {} : { sealedOpRefreshToken: confirmation.sealedOpRefreshToken }),
        lastValidatedAt: confirmation.validatedAt,
      },
      ...(confirmation.displayName === undefined ? {} : { displayName: confirmation.displayName }),
    },
    deps.config.sessions.login_token_lifetime,
  );
}

/**
 * The callback's authorization code exchanged at the OP with the pending login's state, nonce and PKCE verifier (the
 * same for an SSO login, a UIA re-authentication and an account-page sign-in). An unreachable OP is the "not
 * reachable" page; any other refusal the "sign-in refused" page. `onFailure` sees the error first (metrics).
 */
export async function exchangeCallbackCode(
  ctx: Context,
  deps: Pick<AppDeps, 'config'>,
  provider: UpstreamProvider,
  idpId: string,
  state: string,
  pending: PendingSsoLogin,
  onFailure?: (err: UpstreamError) => void,
): Promise<UpstreamGrant> {
  const redirectUri = callbackUri(deps, idpId);
  const callbackUrl = new URL(redirectUri);
  callbackUrl.search = ctx.querystring;
  try {
    return await provider.exchangeCode(callbackUrl, { redirectUri, state, nonce: pending.nonce, codeVerifier: pending.codeVerifier });
  } catch (err: unknown) {
    if (!(err instanceof UpstreamError)) throw err;
    onFailure?.(err);
    throw ssoError(err.kind === 'unavailable' ? 'op_unavailable' : 'op_rejected', err);
  }
}

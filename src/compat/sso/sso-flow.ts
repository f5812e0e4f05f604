import type { AppDeps } from '../../app-deps.js';
import { OWN_PREFIX } from '../../http/own-prefix.js';
import type { PendingConfirmation } from '../../sessions/pending-sso-logins.js';

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

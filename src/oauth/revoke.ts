import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { OAuthError } from '../errors/oauth-error.js';
import { bodyLimitsOf, readFormBody } from '../http/body.js';
import { logOf } from '../http/request-state.js';
import { parseToken, sameHash } from '../sessions/tokens.js';

/**
 * POST <issuer>/revoke (RFC 7009; MSC4254 makes it the way Matrix clients log out). Revoking either token of a
 * native session ends the whole session at once: the device is deleted at the homeserver first, which ends the
 * access token at Synapse immediately, whatever its introspection cache holds.
 *
 * Public clients identify with client_id only; a token is revoked only for the client it was issued to. Unknown,
 * already-revoked and other clients' tokens all get the same 200 (RFC 7009 §2.2), so the endpoint reveals nothing.
 */
export async function postOAuthRevoke(ctx: Context, deps: AppDeps): Promise<void> {
  const form = await readFormBody(ctx, bodyLimitsOf(deps.config));
  const token = form.get('token');
  const clientId = form.get('client_id');
  if (token === null || token === '') throw new OAuthError(400, 'invalid_request', 'token is required');
  if (clientId === null || clientId === '') throw new OAuthError(401, 'invalid_client', 'client_id is required');

  const parsed = parseToken(token);
  const session = parsed === undefined ? undefined : await deps.sessions.get(parsed.sessionId);
  if (parsed !== undefined && session !== undefined && session.oauthClientId === clientId) {
    const live =
      parsed.kind === 'access'
        ? sameHash(session.accessTokenHash, parsed.hash)
        : session.refresh !== undefined && (sameHash(session.refresh.currentHash, parsed.hash) || (session.refresh.previousHash !== undefined && sameHash(session.refresh.previousHash, parsed.hash)));
    if (live) {
      await deps.lifecycle.end(session.id, 'logout');
      logOf(ctx, deps.logger).info({ event: 'oauth.revoked', client_id: clientId, session_id: session.id }, 'oauth.revoked');
    }
  }
  ctx.set('Cache-Control', 'no-store');
  ctx.status = 200;
  ctx.body = {};
}

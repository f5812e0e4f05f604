import type { KoaContextWithOIDC } from 'oidc-provider';
import { errors } from 'oidc-provider';
import { admitRefresh, type RevalidationDeps } from '../sessions/revalidation.js';
import { parseToken } from '../sessions/tokens.js';
import type { Config } from '../config/schema.js';

/**
 * The token endpoint's `refresh_token` grant (RFC 6749 §6) on the proxy's sessions: the same rotation as the legacy
 * POST /refresh (the previous refresh token stays good until the new pair is used; an older one presented again
 * ends the session, RFC 9700 §4.14.2), the same admission at the OP, and the refresh token bound to the client
 * it was issued to. oidc-provider has authenticated the client (public clients: client_id) before this runs.
 */
export function refreshGrant(deps: RevalidationDeps & { readonly config: Pick<Config, 'sessions'> }) {
  return async function refreshTokenGrant(ctx: KoaContextWithOIDC): Promise<void> {
    const presented = ctx.oidc.params?.['refresh_token'];
    if (typeof presented !== 'string' || presented === '') throw new errors.InvalidRequest('missing required parameter(s) (refresh_token)');
    const parsed = parseToken(presented);
    const session = parsed?.kind === 'refresh' ? await deps.sessions.get(parsed.sessionId) : undefined;
    // Another client's refresh token, a legacy session's, or none at all: the same answer.
    if (parsed === undefined || session === undefined || session.oauthClientId !== ctx.oidc.client?.clientId) throw new errors.InvalidGrant('invalid refresh token');

    const admission = await admitRefresh(deps, presented);
    if (admission === 'unavailable') throw new errors.TemporarilyUnavailable('the identity provider is unreachable');
    if (admission !== 'active') throw new errors.InvalidGrant('invalid refresh token');
    const lifetimeMs = deps.config.sessions.refreshable_access_token_lifetime;
    const result = await deps.sessions.refresh(presented, lifetimeMs);
    if (!result.ok) {
      if (result.reason === 'reused') {
        deps.logger.warn({ event: 'oauth.refresh_reuse', session_id: parsed.sessionId }, 'oauth.refresh_reuse');
        await deps.lifecycle.end(parsed.sessionId, 'refresh_reuse');
      }
      throw new errors.InvalidGrant('invalid refresh token');
    }
    ctx.body = {
      access_token: result.accessToken,
      refresh_token: result.refreshToken,
      token_type: 'Bearer',
      expires_in: Math.floor(result.expiresInMs / 1000),
    };
  };
}

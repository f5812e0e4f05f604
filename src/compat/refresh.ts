import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { MatrixError, matrixErrors } from '../errors/matrix-error.js';
import { expectObject, optionalString, readJsonBody } from '../http/body.js';
import { HomeserverError } from '../provisioning/homeserver-adapter.js';
import { parseToken } from '../sessions/tokens.js';
import { admitRefresh } from '../sessions/revalidation.js';

/**
 * POST /refresh (Matrix C-S spec, "Refreshing access tokens"). Rotation is idempotent until the new pair is used;
 * presenting an older generation again ends the whole session (the family leaked).
 */
export async function postRefresh(ctx: Context, deps: AppDeps): Promise<void> {
  const body = expectObject(await readJsonBody(ctx, deps.config.max_request_body));
  const refreshToken = optionalString(body, 'refresh_token');
  if (refreshToken === undefined) throw matrixErrors.badJson("Missing property 'refresh_token'");

  // No refreshing past the OP (issue 7): soft-logged-out, ended at re-validation, or OP down past the grace period.
  const admission = await admitRefresh(deps, refreshToken);
  if (admission === 'soft_logged_out') throw matrixErrors.unknownToken(true);
  if (admission === 'inactive') throw new MatrixError(401, 'M_UNKNOWN_TOKEN', 'Invalid refresh token');
  if (admission === 'unavailable') throw matrixErrors.unavailable('The identity provider');
  const result = await deps.sessions.refresh(refreshToken, deps.config.sessions.refreshable_access_token_lifetime);
  if (!result.ok) {
    if (result.reason === 'reused') {
      const sessionId = parseToken(refreshToken)?.sessionId;
      ctx.state['log']?.warn?.({ event: 'refresh.reuse', session_id: sessionId }, 'refresh.reuse');
      if (sessionId !== undefined) {
        try {
          await deps.lifecycle.end(sessionId, 'refresh_reuse');
        } catch (err: unknown) {
          if (!(err instanceof HomeserverError)) throw err;
          throw matrixErrors.unavailable('The homeserver', err);
        }
      }
    }
    throw new MatrixError(401, 'M_UNKNOWN_TOKEN', 'Invalid refresh token');
  }
  ctx.set('Cache-Control', 'no-store');
  ctx.body = { access_token: result.accessToken, refresh_token: result.refreshToken, expires_in_ms: result.expiresInMs };
}

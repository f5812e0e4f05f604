import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { MatrixError, matrixErrors } from '../errors/matrix-error.js';
import { bodyLimitsOf, expectObject, readJsonBody, requiredString } from '../http/body.js';
import { logOf } from '../http/request-state.js';
import { admitRefresh } from '../sessions/revalidation.js';

/**
 * POST /refresh (Matrix C-S spec, "Refreshing access tokens"). Rotation is idempotent until the new pair is used;
 * presenting an older generation again ends the whole session (the family leaked). A refresh token Synapse issued
 * before the migration (issue 14) is accepted once imported, and rotates into a pair of ours on the same device.
 */
export async function postRefresh(ctx: Context, deps: AppDeps): Promise<void> {
  const body = expectObject(await readJsonBody(ctx, bodyLimitsOf(deps.config)));
  const refreshToken = requiredString(body, 'refresh_token');

  // No refreshing past the OP (issue 7): soft-logged-out, ended at re-validation, or OP down past the grace period.
  const admission = await admitRefresh(deps, refreshToken);
  if (admission === 'soft_logged_out') throw matrixErrors.unknownToken(true);
  if (admission === 'inactive') throw invalidRefreshToken();
  if (admission === 'unavailable') throw matrixErrors.unavailable('The identity provider');
  const result = await deps.sessions.refresh(refreshToken, deps.config.sessions.refreshable_access_token_lifetime);
  if (!result.ok) {
    if (result.reason === 'reused') {
      logOf(ctx, deps.logger).warn({ event: 'refresh.reuse', session_id: result.sessionId }, 'refresh.reuse');
      await deps.lifecycle.end(result.sessionId, 'refresh_reuse');
    }
    throw invalidRefreshToken();
  }
  ctx.set('Cache-Control', 'no-store');
  ctx.body = { access_token: result.accessToken, refresh_token: result.refreshToken, expires_in_ms: result.expiresInMs };
}

function invalidRefreshToken(): MatrixError {
  return new MatrixError(401, 'M_UNKNOWN_TOKEN', 'Invalid refresh token');
}

import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { MatrixError } from '../errors/matrix-error.js';
import { logOf } from '../http/request-state.js';
import type { AccountRefusal, AccountResult, ResolvedAccount } from '../identity/account-resolver.js';

/**
 * Account resolution for a face: a refusal becomes the face's own error (`toError`: a Matrix error for /login, a
 * page for SSO). Outages (homeserver, store) and template failures are thrown as they are; the renderer maps them.
 */
export async function resolveOrRefuse<E extends Error>(
  ctx: Context,
  deps: AppDeps,
  idpId: string,
  resolve: () => Promise<AccountResult>,
  toError: (failure: AccountRefusal) => E,
): Promise<ResolvedAccount> {
  const result = await resolve();
  if (!result.ok) {
    logOf(ctx, deps.logger).info({ idp_id: idpId, reason: result.reason }, 'login.refused');
    throw toError(result.reason);
  }
  return result;
}

/** The Matrix errors of account refusals at /login. */
export function accountRefusal(failure: AccountRefusal): MatrixError {
  switch (failure) {
    case 'deactivated':
      return new MatrixError(403, 'M_USER_DEACTIVATED', 'This account has been deactivated');
    case 'requirements_not_met':
      return new MatrixError(403, 'M_FORBIDDEN', 'This account is not allowed to log in to this server');
    case 'registration_disabled':
      return new MatrixError(403, 'M_FORBIDDEN', 'This account has no Matrix user yet and registration is disabled');
    case 'no_localpart':
    case 'localpart_taken':
      return new MatrixError(403, 'M_FORBIDDEN', 'No Matrix user can be assigned to this account; contact the server administrator');
  }
}

import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { MatrixError } from '../errors/matrix-error.js';
import { logOf } from '../http/request-state.js';
import type { AccountRefusal, AccountResult, ResolvedAccount } from '../identity/account-resolver.js';
import { MappingError } from '../identity/user-mapping.js';
import { missingClaimsAdvice } from '../oidc/missing-claims.js';
import type { UpstreamGrant } from '../oidc/upstream.js';

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
  grant?: Pick<UpstreamGrant, 'claims' | 'userinfoSkipped'>,
): Promise<ResolvedAccount> {
  let result: AccountResult;
  try {
    result = await resolve();
  } catch (err: unknown) {
    const missing = err instanceof MappingError ? missingClaimsOf(deps, idpId, grant) : {};
    if (missing.hint !== undefined) logOf(ctx, deps.logger).warn({ idp_id: idpId, missing_claims: missing.claims }, `mapping.failed: ${missing.hint}`);
    throw err;
  }
  if (!result.ok) {
    const missing = result.reason === 'no_localpart' ? missingClaimsOf(deps, idpId, grant) : {};
    if (missing.hint !== undefined) logOf(ctx, deps.logger).warn({ idp_id: idpId, reason: result.reason, missing_claims: missing.claims }, `login.refused: ${missing.hint}`);
    else logOf(ctx, deps.logger).info({ idp_id: idpId, reason: result.reason }, 'login.refused');
    throw toError(result.reason);
  }
  return result;
}

/** Issue 13: when the templates lack claims, the log names them and what to change. */
function missingClaimsOf(deps: AppDeps, idpId: string, grant: Pick<UpstreamGrant, 'claims' | 'userinfoSkipped'> | undefined): { claims?: string[]; hint?: string } {
  const mapper = deps.policies.get(idpId)?.mapper;
  if (grant === undefined || mapper === undefined) return {};
  const claims = mapper.missingClaims(grant.claims);
  return claims.length === 0 ? {} : { claims, hint: missingClaimsAdvice(idpId, claims, grant) };
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

import type { AppDeps } from '../app-deps.js';
import { MatrixError } from '../errors/matrix-error.js';
import { checkAppPasswordGrant } from '../sessions/revalidation.js';
import type { AppPassword } from '../sessions/app-passwords.js';
import type { SessionOrigin } from '../sessions/session.js';
import type { Identifier } from './login-request.js';

/**
 * An m.login.password whose password has the app-password shape (issue 15, item 3), checked here and never sent to
 * the OP: a wrong guess costs a store read, not an OP password attempt (and cannot lock the account there). The
 * caller has already taken a token from the login throttle, as for any password.
 *
 * Returns the account and the session origin, or throws the same 403 as a wrong OP password (no enumeration).
 */
export async function appPasswordSignIn(
  deps: AppDeps,
  who: Identifier,
  secret: string,
  invalidCredentials: () => MatrixError,
): Promise<{ localpart: string; origin: SessionOrigin }> {
  const appPassword = await deps.appPasswords.verify(secret);
  if (appPassword === undefined || !(await identifies(deps, who, appPassword)) || appPassword.refusedAt !== undefined) throw invalidCredentials();

  // The OP still decides: a grant due for a check is checked now (single-flight with its sessions' re-validation).
  const check = await checkAppPasswordGrant(deps, appPassword.id);
  switch (check.outcome) {
    case 'refused':
    case 'gone':
      throw invalidCredentials();
    case 'unreachable':
      // Within the grace period the last good check vouches, as it does for existing sessions; past it, fail closed.
      if (deps.clock.now() >= appPassword.lastValidatedAt + deps.config.sessions.op_unreachable_grace) {
        throw new MatrixError(503, 'M_UNKNOWN', 'The identity provider cannot be reached; try again later', {}, check.err);
      }
      break;
    case 'valid':
      break;
  }
  const current = check.outcome === 'valid' ? check.appPassword : appPassword;
  // No side path into a deactivated account (CVE-2023-32682 is the m.login.token version of this).
  const user = await deps.homeserver.queryUser(current.localpart);
  if (user?.deactivated === true) throw new MatrixError(403, 'M_USER_DEACTIVATED', 'This account has been deactivated');
  await deps.appPasswords.update(current.id, (record) => ({ ...record, lastUsedAt: deps.clock.now() })).catch(() => undefined);
  return {
    localpart: current.localpart,
    origin: {
      kind: 'password',
      idpId: current.idpId,
      issuer: current.issuer,
      sub: current.sub,
      appPasswordId: current.id,
      lastValidatedAt: current.lastValidatedAt,
    },
  };
}

/** Any identifier form of the bound account: its localpart (or MXID, already reduced to it), or its e-mail. */
async function identifies(deps: AppDeps, who: Identifier, appPassword: AppPassword): Promise<boolean> {
  if (who.kind === 'localpart') return who.name.toLowerCase() === appPassword.localpart.toLowerCase();
  if (who.kind !== 'email') return false;
  const email = who.address.toLowerCase();
  if (appPassword.email !== undefined && appPassword.email.toLowerCase() === email) return true;
  const binding = await deps.bindings.find(appPassword.issuer, appPassword.sub);
  return binding?.opUsername !== undefined && binding.opUsername.toLowerCase() === email;
}

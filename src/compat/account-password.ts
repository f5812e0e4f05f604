import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { MatrixError } from '../errors/matrix-error.js';
import { bodyLimitsOf, readBodyText } from '../http/body.js';
import { accountManagementUri } from '../homeserver/metadata.js';

/**
 * POST /account/password: the password belongs to the identity provider now, so the answer says where to change
 * it instead of the bare 404 Synapse gives under delegated auth (MSC3824: send the user to account management).
 */
export async function postAccountPassword(ctx: Context, deps: AppDeps): Promise<void> {
  await readBodyText(ctx, bodyLimitsOf(deps.config));
  throw new MatrixError(403, 'M_FORBIDDEN', `Your password is managed by your identity provider. Change it at ${accountManagementUri(deps)}`);
}

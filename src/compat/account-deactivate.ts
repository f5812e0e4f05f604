import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { MatrixError } from '../errors/matrix-error.js';
import { bodyLimitsOf, readBodyText } from '../http/body.js';
import { accountManagementUri } from '../homeserver/metadata.js';

/**
 * POST /account/deactivate: accounts live at the identity provider, and deactivating one there (or by the server
 * administrator) is what ends it. The answer says where, instead of Synapse's bare 404 under delegated auth.
 */
export async function postAccountDeactivate(ctx: Context, deps: AppDeps): Promise<void> {
  await readBodyText(ctx, bodyLimitsOf(deps.config));
  throw new MatrixError(
    403,
    'M_FORBIDDEN',
    `Your account is managed by your identity provider. To close it, go to ${accountManagementUri(deps)} or ask your server administrator`,
  );
}

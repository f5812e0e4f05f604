import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { requireSession } from '../http/access-token.js';
import { bodyLimitsOf, readJsonBody } from '../http/body.js';

/**
 * POST /logout: ends the session of the presented token, removes its device at the homeserver and revokes the OP
 * refresh token. Tokens the proxy did not issue → 401 M_UNKNOWN_TOKEN (native OIDC clients end sessions at the OP).
 * A homeserver that cannot delete the device → 503 and the session stays, so the client can try again.
 */
export async function postLogout(ctx: Context, deps: AppDeps): Promise<void> {
  const session = await requireSession(ctx, deps.sessions, { allowExpired: true });
  await readJsonBody(ctx, bodyLimitsOf(deps.config), { emptyAsObject: true });
  await deps.lifecycle.end(session.id, 'logout');
  ctx.body = {};
}

import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { requireSession } from '../http/access-token.js';
import { bodyLimitsOf, readJsonBody } from '../http/body.js';

/** POST /logout/all: every legacy session of the user ends the way POST /logout ends one. */
export async function postLogoutAll(ctx: Context, deps: AppDeps): Promise<void> {
  const session = await requireSession(ctx, deps.sessions, { allowExpired: true });
  await readJsonBody(ctx, bodyLimitsOf(deps.config), { emptyAsObject: true });
  await deps.lifecycle.endAllOfUser(session.localpart, 'logout_all');
  ctx.body = {};
}

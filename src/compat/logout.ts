import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { HomeserverError } from '../provisioning/homeserver-adapter.js';
import { matrixErrors } from '../errors/matrix-error.js';
import { readJsonBody } from '../http/body.js';
import type { EndReason } from '../sessions/session-lifecycle.js';
import { requireSession } from '../http/access-token.js';

/**
 * POST /logout: ends the session of the presented token, removes its device at the homeserver and revokes the OP
 * refresh token. Tokens the proxy did not issue → 401 M_UNKNOWN_TOKEN (native OIDC clients end sessions at the OP).
 */
export async function postLogout(ctx: Context, deps: AppDeps): Promise<void> {
  const session = await requireSession(ctx, deps.sessions, { allowExpired: true });
  await readJsonBody(ctx, deps.config.max_request_body, { emptyAsObject: true });
  await endOrUnavailable(() => deps.lifecycle.end(session.id, 'logout'));
  ctx.body = {};
}

/** POST /logout/all: every legacy session of the user ends the same way. */
export async function postLogoutAll(ctx: Context, deps: AppDeps): Promise<void> {
  const session = await requireSession(ctx, deps.sessions, { allowExpired: true });
  await readJsonBody(ctx, deps.config.max_request_body, { emptyAsObject: true });
  const ids = await deps.sessions.idsOfUser(session.localpart);
  await endOrUnavailable(() => deps.lifecycle.endMany(ids, 'logout_all' satisfies EndReason));
  ctx.body = {};
}

/** A homeserver that cannot delete the device → 503 and the session stays, so the client can try again. */
async function endOrUnavailable(end: () => Promise<unknown>): Promise<void> {
  try {
    await end();
  } catch (err: unknown) {
    if (err instanceof HomeserverError) throw matrixErrors.unavailable('The homeserver', err);
    throw err;
  }
}

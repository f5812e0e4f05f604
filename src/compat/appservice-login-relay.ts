import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { MatrixError } from '../errors/matrix-error.js';
import { bearerTokenOf } from '../http/access-token.js';
import { HomeserverError } from '../provisioning/homeserver-adapter.js';
import { matchesSecret } from '../security/shared-secret.js';

/**
 * `m.login.application_service` where the homeserver issues its own tokens (appservice and JWT modes): a bridge's
 * login is the homeserver's business, so it goes there as it came and its answer comes back as it is (the bridge
 * gets a homeserver token, which the pass-through then leaves untouched). The proxy's own as_token is refused: it
 * must never be usable from outside the proxy.
 */
export async function relayAppserviceLogin(ctx: Context, deps: AppDeps, body: unknown): Promise<void> {
  const token = bearerTokenOf(ctx);
  if (deps.ownAsTokenDigest !== undefined && matchesSecret(token, deps.ownAsTokenDigest)) {
    throw new MatrixError(403, 'M_FORBIDDEN', 'This token cannot be used here');
  }
  let response: Response;
  try {
    response = await fetch(`${deps.config.homeserver.url}${ctx.path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json', ...(token === undefined ? {} : { authorization: `Bearer ${token}` }) },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(deps.config.homeserver.upstream_timeout),
      redirect: 'manual',
    });
  } catch (err: unknown) {
    throw new HomeserverError('transient', 'appservice login relay: homeserver unreachable', { cause: err });
  }
  const text = await response.text();
  ctx.status = response.status;
  ctx.set('Cache-Control', 'no-store');
  ctx.type = response.headers.get('content-type') ?? 'application/json';
  ctx.body = text;
}

import type { Context } from 'koa';
import type { AppDeps } from '../../app-deps.js';
import { HomeserverError } from '../../provisioning/homeserver-adapter.js';

/** Request headers the homeserver needs to answer as if the client had called it directly. */
const FORWARDED_REQUEST_HEADERS = ['authorization', 'content-type', 'user-agent', 'accept'] as const;

/**
 * Sends an owned request on to the homeserver unchanged and answers with what it said: for callers the proxy does
 * not authenticate on a path it owns for its own tokens (native OIDC clients, application services). The body was
 * already read (bounded); the answer is buffered, these are small JSON exchanges.
 */
export async function relayToHomeserver(ctx: Context, deps: AppDeps, body: string): Promise<void> {
  const target = `${deps.config.homeserver.url.replace(/\/+$/, '')}${ctx.path}${ctx.querystring === '' ? '' : `?${ctx.querystring}`}`;
  const headers: Record<string, string> = {};
  for (const name of FORWARDED_REQUEST_HEADERS) {
    const value = ctx.get(name);
    if (value !== '') headers[name] = value;
  }
  let response: Response;
  try {
    response = await fetch(target, {
      method: ctx.method,
      headers,
      ...(body === '' || ctx.method === 'GET' ? {} : { body }),
      redirect: 'manual',
      signal: AbortSignal.timeout(deps.config.homeserver.upstream_timeout),
    });
  } catch (err: unknown) {
    throw new HomeserverError('transient', `relay ${ctx.method} ${ctx.path}: homeserver unreachable`, { cause: err });
  }
  const text = await response.text();
  ctx.status = response.status;
  ctx.set('Cache-Control', 'no-store');
  ctx.type = response.headers.get('content-type') ?? 'application/json';
  ctx.body = text;
}

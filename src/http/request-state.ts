import type { Context } from 'koa';

/** The client's address as resolved once per request by the app (trusted proxies honoured), for limits and logs. */
export function clientAddress(ctx: Context): string {
  const resolved = ctx.state['clientIp'];
  if (typeof resolved === 'string') return resolved;
  return ctx.req.socket.remoteAddress ?? 'unknown';
}

import type { Context } from 'koa';
import type { Logger } from 'pino';

/**
 * What the app records on every request it answers itself, before any route runs (app.ts `withRequestContext`):
 * the request id, a child logger carrying it, and the client's address (trusted proxies honoured).
 */
export interface RequestState {
  readonly requestId: string;
  readonly log: Logger;
  readonly clientIp: string;
}

export function setRequestState(ctx: Context, state: RequestState): void {
  ctx.state['request'] = state;
}

/**
 * A RequestState whose child logger (bindings `request_id` and `face`) is made on first use. Most requests the proxy
 * answers (an introspection, a refresh) log nothing, and pino's child() serialises and redacts its bindings at once:
 * made for every request it was ~3 % of an introspection's CPU. The client address stays eager: it is read from the
 * socket, which may be gone by the time a late log line would ask. A class rather than an object literal with a
 * getter and a closure: one object per request instead of three (issue 19, the garbage of an introspection).
 */
class LazyLogRequestState implements RequestState {
  private made: Logger | undefined;

  constructor(
    readonly requestId: string,
    readonly clientIp: string,
    private readonly parent: Logger,
    private readonly face: string,
  ) {}

  get log(): Logger {
    this.made ??= this.parent.child({ request_id: this.requestId, face: this.face });
    return this.made;
  }
}

export function lazyLogRequestState(requestId: string, clientIp: string, parent: Logger, face: string): RequestState {
  return new LazyLogRequestState(requestId, clientIp, parent, face);
}

function requestStateOf(ctx: Context): RequestState | undefined {
  return ctx.state['request'] as RequestState | undefined;
}

/** The client's address for limits and logs. */
export function clientAddress(ctx: Context): string {
  return requestStateOf(ctx)?.clientIp ?? ctx.req.socket.remoteAddress ?? 'unknown';
}

/** The request's logger (with its request id), when the request went through the app. */
export function requestLog(ctx: Context): Logger | undefined {
  return requestStateOf(ctx)?.log;
}

/** The request's logger (with its request id), or `fallback` outside the app (tests calling a handler directly). */
export function logOf(ctx: Context, fallback: Logger): Logger {
  return requestStateOf(ctx)?.log ?? fallback;
}

/** The value of a route parameter (`:idpId`), '' when absent. */
export function paramOf(ctx: Context, name: string): string {
  const params = (ctx as Context & { params?: Record<string, string> }).params;
  return params?.[name] ?? '';
}

/** A query parameter given once; repeated parameters count as absent (no guessing which one was meant). */
export function singleQueryValue(ctx: Context, name: string): string | undefined {
  const value = ctx.query[name];
  return typeof value === 'string' ? value : undefined;
}

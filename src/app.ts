import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import Koa, { type Context, type Next } from 'koa';
import Router from '@koa/router';
import type { AppDeps } from './app-deps.js';
import { MatrixError } from './errors/matrix-error.js';
import { renderErrors, writeRawMatrixError, type ErrorStyle } from './errors/render.js';
import { clientIp } from './http/client-address.js';
import { ownedPathMatcher, type Listener } from './http/owned-routes.js';
import { normaliseMatrixPath, splitRequestTarget } from './http/path-normalisation.js';
import { lazyLogRequestState, requestLog, setRequestState } from './http/request-state.js';
import { redactUrl } from './observability/logger.js';
import { requestRecorder, type RouteClass } from './observability/metrics.js';
import type { Readiness } from './ops/health.js';
import { createRevalidationGate } from './proxy/revalidation-gate.js';
import { createTokenSwap } from './proxy/token-swap.js';
import { listenerShapeOf, ownedRoutes, type Route } from './routes.js';

export type { Readiness } from './ops/health.js';
export { OWN_PREFIX } from './http/own-prefix.js';

export interface HomeserverProxy {
  forward(req: IncomingMessage, res: ServerResponse): void;
  close(): void;
}

export interface AppHandlers {
  /** The public listener: owned routes, everything else passed through to the homeserver. */
  readonly client: (req: IncomingMessage, res: ServerResponse) => void;
  /** What Synapse calls (metadata, introspection) and the admin API; served on homeserver.listen when configured. */
  readonly homeserverFacing: (req: IncomingMessage, res: ServerResponse) => void;
  /** Metrics and health for operators. */
  readonly ops: (req: IncomingMessage, res: ServerResponse) => void;
}

/** Route state the table's wrapper records for the renderer and the metrics. */
interface MatchedRoute {
  readonly style: ErrorStyle;
  readonly metric: RouteClass;
}

export function createApp(deps: AppDeps, proxy: HomeserverProxy, readiness: Readiness): AppHandlers {
  const routes = ownedRoutes(listenerShapeOf(deps), readiness);
  const clientCallback = listenerApp(deps, routes, 'client').callback();
  const ownsPath = ownedPathMatcher(routes, 'client');
  const revalidateBeforeForwarding = createRevalidationGate(deps);
  const countPassthrough = passthroughCounter(deps);
  const swapToken =
    deps.homeserver.tokens === undefined
      ? undefined
      : createTokenSwap({
          sessions: deps.sessions,
          keys: deps.keys,
          clock: deps.clock,
          cacheTtlMs: deps.config.homeserver.token_cache_ttl,
          ownAsTokenDigest: deps.ownAsTokenDigest,
        });
  /** Forwards, swapping the proxy's token for the homeserver's first where the homeserver issues its own. */
  const forward = (req: IncomingMessage, res: ServerResponse): void => {
    const swapped = swapToken?.(req);
    if (swapped === undefined) {
      proxy.forward(req, res);
      return;
    }
    if (swapped instanceof MatrixError) {
      writeRawMatrixError(res, swapped);
      return;
    }
    swapped.then(
      (refusal) => (refusal === undefined ? proxy.forward(req, res) : writeRawMatrixError(res, refusal)),
      // The store failed: without the homeserver token there is nothing to forward with.
      (err: unknown) => writeRawMatrixError(res, err),
    );
  };

  return {
    client(req, res) {
      const url = req.url ?? '/';
      const { rawPath, query } = splitRequestTarget(url);
      const path = normaliseMatrixPath(rawPath);
      if (path === undefined) {
        writeRawMatrixError(res, new MatrixError(400, 'M_UNRECOGNIZED', 'Malformed request path'));
        return;
      }
      if (ownsPath(path, req.method)) {
        // Route on the normalised path, keep the query as sent.
        req.url = path + query;
        clientCallback(req, res);
        return;
      }
      // The homeserver gets the target without a fragment: the path judged above is the path it sees. (Without a
      // fragment the target is already that: no string is rebuilt.)
      if (rawPath.length + query.length !== url.length) req.url = rawPath + query;
      countPassthrough(req, res);
      const revalidation = revalidateBeforeForwarding(req);
      if (revalidation === undefined) {
        forward(req, res);
        return;
      }
      revalidation.then(
        (refusal) => (refusal === undefined ? forward(req, res) : writeRawMatrixError(res, refusal)),
        (err: unknown) => {
          // The store failed: Synapse's introspection decides, as it would without this check.
          deps.logger.warn({ err }, 'revalidation.passthrough_failed');
          forward(req, res);
        },
      );
    },
    homeserverFacing: listenerApp(deps, routes, 'homeserver').callback(),
    ops: listenerApp(deps, routes, 'ops').callback(),
  };
}

/** One Koa app per listener, its router built from the table's routes for that listener. */
function listenerApp(deps: AppDeps, routes: readonly Route[], listener: Listener): Koa {
  const app = new Koa({ proxy: false });
  app.use(requestContext(deps, listener));
  app.use(renderErrors((ctx) => matchedRoute(ctx)?.style ?? 'matrix', deps.metrics.rejections, unrecognizedRequest));
  if (listener === 'client') app.use(corsForOwnedRoutes);
  const router = new Router();
  for (const route of routes) {
    if (route.listener !== listener) continue;
    const matched: MatchedRoute = { style: route.style, metric: route.metric };
    // Not async: the handler's own promise is the route's (one async frame and await less per request, issue 19).
    router.register(route.path, [route.method], (ctx: Context) => {
      ctx.state['route'] = matched;
      return route.handler(ctx, deps);
    });
  }
  app.use(router.routes());
  app.use(router.allowedMethods({ throw: true, methodNotAllowed: () => methodNotAllowed(), notImplemented: () => methodNotAllowed() }));
  return app;
}

function matchedRoute(ctx: Context): MatchedRoute | undefined {
  return ctx.state['route'] as MatchedRoute | undefined;
}

/** Request id, child logger, client address and metrics for every request the proxy answers itself. */
function requestContext(deps: AppDeps, listener: Listener) {
  const face = listener === 'client' ? 'client' : 'homeserver';
  const record = requestRecorder(deps.metrics);
  return async function withRequestContext(ctx: Context, next: Next): Promise<void> {
    const started = process.hrtime.bigint();
    const incomingId = ctx.get('x-request-id');
    const requestId = /^[\w.-]{1,64}$/.test(incomingId) ? incomingId : randomUUID();
    ctx.set('X-Request-Id', requestId);
    setRequestState(ctx, lazyLogRequestState(requestId, clientIp(ctx.req, deps.config.trusted_proxies), deps.logger, face));
    try {
      await next();
    } finally {
      const route = matchedRoute(ctx)?.metric ?? (listener === 'client' ? 'other' : 'admin');
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      record(route, ctx.method, ctx.status, seconds);
      // The child has its parent's level: asking the parent first leaves the child unmade when nothing is logged.
      if (deps.logger.isLevelEnabled('debug')) {
        requestLog(ctx)?.debug({ method: ctx.method, url: redactUrl(ctx.originalUrl), status: ctx.status, ms: Math.round(seconds * 1e4) / 10 }, 'request.done');
      }
    }
  };
}

/**
 * CORS for the routes the proxy owns (Matrix C-S spec, "Web Browser Clients"): any origin, and a preflight answer
 * for OPTIONS. Passed-through routes get the homeserver's own CORS headers.
 */
async function corsForOwnedRoutes(ctx: Context, next: Next): Promise<void> {
  ctx.set('Access-Control-Allow-Origin', '*');
  ctx.set('Access-Control-Allow-Methods', 'GET, POST, PUT, DELETE, OPTIONS');
  ctx.set('Access-Control-Allow-Headers', 'X-Requested-With, Content-Type, Authorization');
  if (ctx.method === 'OPTIONS') {
    ctx.status = 204;
    return;
  }
  await next();
}

/** A request no route answered: the Matrix spec's 404 M_UNRECOGNIZED, not Koa's plain-text "Not Found". */
/** What no route answered (Koa's default 404 without a body): renderErrors' `unanswered`. */
function unrecognizedRequest(): MatrixError {
  return new MatrixError(404, 'M_UNRECOGNIZED', 'Unrecognized request');
}

function methodNotAllowed(): MatrixError {
  return new MatrixError(405, 'M_UNRECOGNIZED', 'Unrecognized request');
}

/**
 * Pass-through metrics, counted when the response is finished (label children memoised: requestRecorder). Timed with
 * performance.now() (a double) rather than hrtime.bigint() (two BigInts per request); `on`, not `once`: a response
 * finishes at most once, and no wrapper is made and removed per request.
 */
function passthroughCounter(deps: AppDeps): (req: IncomingMessage, res: ServerResponse) => void {
  const record = requestRecorder(deps.metrics);
  return function countPassthrough(req, res) {
    const started = performance.now();
    res.on('finish', () => record('passthrough', req.method ?? 'GET', res.statusCode, (performance.now() - started) / 1e3));
  };
}

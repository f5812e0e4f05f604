import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import Koa, { type Context, type Next } from 'koa';
import Router from '@koa/router';
import type { AppDeps } from './app-deps.js';
import { renderMatrixErrors } from './errors/error-middleware.js';
import { MatrixError } from './errors/matrix-error.js';
import { writeMatrixError } from './errors/write-matrix-error.js';
import { getLoginFlows } from './compat/login-flows.js';
import { postLogin } from './compat/login.js';
import { postLogout, postLogoutAll } from './compat/logout.js';
import { postRefresh } from './compat/refresh.js';
import { postBackchannelLogout } from './backchannel/backchannel-logout.js';
import { registerSsoRoutes } from './compat/sso-routes.js';
import { registerAdminRoutes } from './admin/admin-routes.js';
import { registerHomeserverFacingRoutes } from './homeserver/homeserver-routes.js';
import { normaliseMatrixPath } from './http/path-normalisation.js';
import { clientIp } from './http/client-address.js';
import { redactUrl } from './observability/logger.js';
import type { RouteClass } from './observability/metrics.js';
import { OWN_PREFIX } from './http/own-prefix.js';
import { createPassthroughRevalidation } from './proxy/revalidation-gate.js';

export interface HomeserverProxy {
  forward(req: IncomingMessage, res: ServerResponse): void;
  close(): void;
}

export interface Readiness {
  check(): Promise<{ ok: boolean; checks: Record<string, string> }>;
}

export interface AppHandlers {
  /** The public listener: owned routes, everything else passed through to the homeserver. */
  readonly client: (req: IncomingMessage, res: ServerResponse) => void;
  /** What Synapse calls (metadata, introspection) and the admin API; served on homeserver.listen when configured. */
  readonly homeserverFacing: (req: IncomingMessage, res: ServerResponse) => void;
  /** Metrics and health for operators. */
  readonly ops: (req: IncomingMessage, res: ServerResponse) => void;
}

const CLIENT_VERSIONS = ['v3', 'r0'] as const;
export { OWN_PREFIX };

/**
 * Paths the proxy answers itself; matched on the NORMALISED path so `//login`, `%2F`, trailing-slash and version
 * variants cannot slip past to the homeserver.
 */
export function routeClassOf(path: string, homeserverFacingHere: boolean): RouteClass | undefined {
  const match = /^\/_matrix\/client\/(v3|r0|v1)\/(.+)$/.exec(path);
  if (match) {
    const [, version, rest] = match as unknown as [string, string, string];
    if (rest === 'refresh') return 'refresh';
    if (version === 'v1') return undefined;
    if (rest === 'login') return 'login';
    if (rest === 'logout' || rest === 'logout/all') return 'logout';
    if (rest === 'login/sso/redirect' || rest.startsWith('login/sso/redirect/')) return 'sso';
    return undefined;
  }
  if (path.startsWith(`${OWN_PREFIX}/admin/`)) return 'admin';
  if (path === OWN_PREFIX || path.startsWith(`${OWN_PREFIX}/`)) return path.includes('/backchannel-logout/') ? 'backchannel_logout' : 'sso';
  if (path === '/health' || path === '/ready') return 'ops';
  if (homeserverFacingHere && (path === '/.well-known/openid-configuration' || path === '/oauth2/introspect')) return 'introspection';
  return undefined;
}

export function createApp(deps: AppDeps, proxy: HomeserverProxy, readiness: Readiness): AppHandlers {
  const servesHomeserverFacing = deps.config.homeserver.listen === undefined;
  const revalidateBeforeForwarding = createPassthroughRevalidation(deps);
  const countPassthrough = passthroughCounter(deps);

  const clientApp = new Koa({ proxy: false });
  clientApp.use(requestContext(deps, 'client'));
  clientApp.use(renderMatrixErrors);
  clientApp.use(unrecognizedWhenUnanswered);
  clientApp.use(corsForOwnedRoutes);
  const clientRouter = new Router();
  for (const version of CLIENT_VERSIONS) {
    const base = `/_matrix/client/${version}`;
    clientRouter.get(`${base}/login`, (ctx) => getLoginFlows(ctx, deps));
    clientRouter.post(`${base}/login`, (ctx) => postLogin(ctx, deps));
    clientRouter.post(`${base}/logout`, (ctx) => postLogout(ctx, deps));
    clientRouter.post(`${base}/logout/all`, (ctx) => postLogoutAll(ctx, deps));
    clientRouter.post(`${base}/refresh`, (ctx) => postRefresh(ctx, deps));
  }
  // matrix-js-sdk falls back to the v1 path of /refresh.
  clientRouter.post('/_matrix/client/v1/refresh', (ctx) => postRefresh(ctx, deps));
  clientRouter.post(`${OWN_PREFIX}/backchannel-logout/:idpId`, (ctx) => postBackchannelLogout(ctx, deps));
  registerSsoRoutes(clientRouter, deps, CLIENT_VERSIONS);
  registerOpsRoutes(clientRouter, readiness, { details: false });
  if (servesHomeserverFacing) registerHomeserverFacingRoutes(clientRouter, deps);
  clientApp.use(clientRouter.routes());
  clientApp.use(clientRouter.allowedMethods({ throw: true, methodNotAllowed: () => methodNotAllowed(), notImplemented: () => methodNotAllowed() }));
  const clientCallback = clientApp.callback();

  const homeserverApp = new Koa({ proxy: false });
  homeserverApp.use(requestContext(deps, 'homeserver'));
  homeserverApp.use(renderMatrixErrors);
  homeserverApp.use(unrecognizedWhenUnanswered);
  const homeserverRouter = new Router();
  registerHomeserverFacingRoutes(homeserverRouter, deps);
  registerAdminRoutes(homeserverRouter, deps);
  registerOpsRoutes(homeserverRouter, readiness);
  homeserverApp.use(homeserverRouter.routes());
  homeserverApp.use(homeserverRouter.allowedMethods({ throw: true, methodNotAllowed: () => methodNotAllowed(), notImplemented: () => methodNotAllowed() }));

  const opsApp = new Koa({ proxy: false });
  opsApp.use(requestContext(deps, 'homeserver'));
  opsApp.use(renderMatrixErrors);
  opsApp.use(unrecognizedWhenUnanswered);
  const opsRouter = new Router();
  registerOpsRoutes(opsRouter, readiness);
  // Without a separate homeserver-facing listener the admin API must not sit on the public one: it goes here,
  // on the operators' listener (loopback by default).
  if (servesHomeserverFacing) registerAdminRoutes(opsRouter, deps);
  opsRouter.get('/metrics', async (ctx) => {
    ctx.type = deps.metrics.registry.contentType;
    ctx.body = await deps.metrics.registry.metrics();
  });
  opsApp.use(opsRouter.routes());

  return {
    client(req, res) {
      const url = req.url ?? '/';
      const queryStart = url.indexOf('?');
      const rawPath = queryStart < 0 ? url : url.slice(0, queryStart);
      const path = normaliseMatrixPath(rawPath);
      if (path === undefined) {
        writeMatrixError(res, new MatrixError(400, 'M_UNRECOGNIZED', 'Malformed request path'));
        return;
      }
      if (routeClassOf(path, servesHomeserverFacing) !== undefined) {
        // Route on the normalised path, keep the query as sent.
        req.url = queryStart < 0 ? path : path + url.slice(queryStart);
        clientCallback(req, res);
        return;
      }
      countPassthrough(req, res);
      const revalidation = revalidateBeforeForwarding(req);
      if (revalidation === undefined) {
        proxy.forward(req, res);
        return;
      }
      revalidation.then(
        (refusal) => (refusal === undefined ? proxy.forward(req, res) : writeMatrixError(res, refusal)),
        (err: unknown) => {
          // The store failed: Synapse's introspection decides, as it would without this check.
          deps.logger.warn({ err }, 'revalidation.passthrough_failed');
          proxy.forward(req, res);
        },
      );
    },
    homeserverFacing: homeserverApp.callback(),
    ops: opsApp.callback(),
  };
}

/** `details`: the per-dependency checks (with error text) are only for the operators' and homeserver's listeners. */
function registerOpsRoutes(router: Router, readiness: Readiness, options: { details: boolean } = { details: true }): void {
  router.get('/health', (ctx) => {
    ctx.set('Cache-Control', 'no-store');
    ctx.body = { status: 'ok' };
  });
  router.get('/ready', async (ctx) => {
    const result = await readiness.check();
    ctx.set('Cache-Control', 'no-store');
    ctx.status = result.ok ? 200 : 503;
    ctx.body = { status: result.ok ? 'ready' : 'not_ready', ...(options.details ? { checks: result.checks } : {}) };
  });
}

/** Request id, child logger, client address and metrics for every request the proxy answers itself. */
function requestContext(deps: AppDeps, face: 'client' | 'homeserver') {
  return async function withRequestContext(ctx: Context, next: Next): Promise<void> {
    const started = process.hrtime.bigint();
    const incomingId = ctx.get('x-request-id');
    const requestId = /^[\w.-]{1,64}$/.test(incomingId) ? incomingId : randomUUID();
    ctx.set('X-Request-Id', requestId);
    ctx.state['clientIp'] = clientIp(ctx.req, deps.config.trusted_proxies);
    ctx.state['log'] = deps.logger.child({ request_id: requestId, face });
    const route = routeClassOf(ctx.path, true) ?? (face === 'homeserver' ? 'admin' : 'other');
    try {
      await next();
    } finally {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      deps.metrics.requests.inc({ route, method: ctx.method, status: String(ctx.status) });
      deps.metrics.requestDuration.observe({ route }, seconds);
      const log = ctx.state['log'] as AppDeps['logger'];
      if (log.isLevelEnabled('debug')) {
        log.debug({ method: ctx.method, url: redactUrl(ctx.originalUrl), status: ctx.status, ms: Math.round(seconds * 1e4) / 10 }, 'request.done');
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
async function unrecognizedWhenUnanswered(ctx: Context, next: Next): Promise<void> {
  await next();
  if (ctx.status === 404 && ctx.body === undefined) throw new MatrixError(404, 'M_UNRECOGNIZED', 'Unrecognized request');
}

function methodNotAllowed(): MatrixError {
  return new MatrixError(405, 'M_UNRECOGNIZED', 'Unrecognized request');
}

/**
 * Pass-through metrics with the label children looked up once per (method, status), not per request: this runs for
 * every request the homeserver serves.
 */
function passthroughCounter(deps: AppDeps): (req: IncomingMessage, res: ServerResponse) => void {
  const counters = new Map<string, { inc(): void }>();
  const duration = deps.metrics.requestDuration.labels({ route: 'passthrough' });
  return function countPassthrough(req, res) {
    const started = process.hrtime.bigint();
    res.once('finish', () => {
      const method = req.method ?? 'GET';
      const key = `${method} ${res.statusCode}`;
      let counter = counters.get(key);
      if (counter === undefined) {
        counter = deps.metrics.requests.labels({ route: 'passthrough', method, status: String(res.statusCode) });
        // Methods are client-chosen: bound the memo (prom-client's own label set stays bounded by what it saw).
        if (counters.size < 256) counters.set(key, counter);
      }
      counter.inc();
      duration.observe(Number(process.hrtime.bigint() - started) / 1e9);
    });
  };
}

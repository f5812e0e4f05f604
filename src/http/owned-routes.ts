import type { Context } from 'koa';
import type { RouteClass } from '../observability/metrics.js';
import type { ErrorStyle } from '../errors/render.js';
import { OWN_PREFIX } from './own-prefix.js';

/** The three listeners: what clients call, what the homeserver calls (and the admin API), what operators scrape. */
export type Listener = 'client' | 'homeserver' | 'ops';

/**
 * One route the proxy answers itself. The table of these (src/routes.ts) is the only list: the routers are built
 * from it AND the client listener's dispatcher decides from it what is passed through, so a route cannot be
 * answered by one and forgotten by the other.
 */
export interface OwnedRoute<D> {
  readonly method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  /** @koa/router pattern (`:name` parameters), matched against the NORMALISED path. */
  readonly path: string;
  readonly listener: Listener;
  /** How failures are answered: Matrix JSON, OAuth JSON or an HTML page (errors/render.ts). */
  readonly style: ErrorStyle;
  /** The `route` label of the request metrics. */
  readonly metric: RouteClass;
  readonly handler: (ctx: Context, deps: D) => Promise<void> | void;
  /**
   * The proxy owns only this method at this path; other methods pass through to the homeserver. For paths the
   * homeserver serves too (`GET`/`PUT /devices/{id}` are Synapse's, `DELETE` is the proxy's under delegated auth).
   */
  readonly methodOnly?: boolean;
}

/**
 * Whether a request (normalised path, method) belongs to the proxy on a listener: any route of the table at that
 * path (whatever the method: a wrong method is the proxy's 405, not the homeserver's business) unless the route
 * owns only its own method (`methodOnly`), or anything under the proxy's own prefix (an unknown page of ours is our
 * 404, never forwarded).
 */
export function ownedPathMatcher<D>(routes: readonly OwnedRoute<D>[], listener: Listener): (path: string, method?: string) => boolean {
  // Every pass-through request asks: exact paths are one Set lookup, only parameterised ones need a pattern. A
  // method-only route is checked with its method.
  const own = routes.filter((route) => route.listener === listener);
  const exact = new Set(own.filter((route) => !route.path.includes(':') && route.methodOnly !== true).map((route) => route.path));
  const patterns = own
    .filter((route) => route.path.includes(':') || route.methodOnly === true)
    .map((route) => ({ pattern: patternOf(route.path), prefix: literalPrefixOf(route.path), method: route.methodOnly === true ? route.method : undefined }));
  const ownPrefixDir = `${OWN_PREFIX}/`;
  return (path, method = 'GET') => {
    if (exact.has(path) || path === OWN_PREFIX || path.startsWith(ownPrefixDir)) return true;
    let upper: string | undefined;
    for (const entry of patterns) {
      // The pattern is anchored and starts with its literal prefix: a path without it cannot match.
      if (!path.startsWith(entry.prefix)) continue;
      if (entry.method !== undefined && entry.method !== (upper ??= method.toUpperCase())) continue;
      if (entry.pattern.test(path)) return true;
    }
    return false;
  };
}

/** The part of a route pattern before its first parameter (`/a/b/:id` → `/a/b/`); the whole path without one. */
function literalPrefixOf(path: string): string {
  const parameter = path.indexOf('/:');
  return parameter < 0 ? path : path.slice(0, parameter + 1);
}

function patternOf(path: string): RegExp {
  const source = path
    .split('/')
    .map((segment) => (segment.startsWith(':') ? '[^/]+' : segment.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
    .join('/');
  return new RegExp(`^${source}$`);
}

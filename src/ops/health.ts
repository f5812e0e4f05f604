import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';

export interface Readiness {
  check(): Promise<{ ok: boolean; checks: Record<string, string> }>;
}

/** GET /health — the process answers (liveness). */
export function getHealth(ctx: Context): void {
  ctx.set('Cache-Control', 'no-store');
  ctx.body = { status: 'ok' };
}

/**
 * GET /ready — the store and the homeserver answer (readiness). `details`: the per-dependency checks (with error
 * text) are only for the operators' and homeserver's listeners, never the public one.
 */
export async function getReady(ctx: Context, readiness: Readiness, details: boolean): Promise<void> {
  const result = await readiness.check();
  ctx.set('Cache-Control', 'no-store');
  ctx.status = result.ok ? 200 : 503;
  ctx.body = { status: result.ok ? 'ready' : 'not_ready', ...(details ? { checks: result.checks } : {}) };
}

/** GET /metrics — Prometheus text format, operators' listener only. */
export async function getMetrics(ctx: Context, deps: AppDeps): Promise<void> {
  ctx.type = deps.metrics.registry.contentType;
  ctx.body = await deps.metrics.text();
}

import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Route classes keep metric cardinality bounded: never label by raw path. */
export type RouteClass = 'login' | 'logout' | 'devices' | 'account' | 'refresh' | 'sso' | 'introspection' | 'admin' | 'backchannel_logout' | 'oauth' | 'passthrough' | 'ops' | 'discovery' | 'other';

export interface Metrics {
  readonly registry: Registry;
  readonly requests: Counter<'route' | 'method' | 'status'>;
  readonly requestDuration: Histogram<'route'>;
  readonly upstreamErrors: Counter<'upstream' | 'kind'>;
  readonly storeDuration: Histogram<'operation' | 'outcome'>;
  readonly logins: Counter<'type' | 'outcome'>;
  readonly sessionsEnded: Counter<'reason'>;
  readonly revalidations: Counter<'outcome'>;
  /** Sealed values opened with a previous `sessions.encryption_key`: 0 for long enough means the old key can go. */
  readonly sealedOpenedWithPreviousKey: Counter;
  /** Requests refused with a 4xx (counted here; logged only at a bounded rate: errors/render.ts). */
  readonly rejections: Counter<'status' | 'code'>;
  /** Unknown tokens not introspected at the OP because the budget was spent (rate_limits.op_introspection). */
  readonly introspectionBudgetSpent: Counter;
  /** The exposition text /metrics serves: this registry's, or with workers the sum over all of them. */
  readonly text: () => Promise<string>;
}

export interface MetricsOptions {
  readonly collectDefaults?: boolean;
  /** In a cluster worker: how to get every worker's metrics (observability/cluster-metrics.ts). */
  readonly clusterText?: (registry: Registry) => () => Promise<string>;
}

export function createMetrics(options: MetricsOptions = {}): Metrics {
  const registry = new Registry();
  if (options.collectDefaults ?? true) collectDefaultMetrics({ register: registry, prefix: 'mcp_' });
  return {
    registry,
    text: options.clusterText === undefined ? () => registry.metrics() : options.clusterText(registry),
    requests: new Counter({ name: 'mcp_http_requests_total', help: 'Requests by route class, method and status', labelNames: ['route', 'method', 'status'], registers: [registry] }),
    requestDuration: new Histogram({
      name: 'mcp_http_request_duration_seconds',
      help: 'Request latency by route class',
      labelNames: ['route'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60],
      registers: [registry],
    }),
    upstreamErrors: new Counter({ name: 'mcp_upstream_errors_total', help: 'Failures reaching the homeserver or an OP', labelNames: ['upstream', 'kind'], registers: [registry] }),
    storeDuration: new Histogram({
      name: 'mcp_store_operation_duration_seconds',
      help: 'Store latency by operation',
      labelNames: ['operation', 'outcome'],
      buckets: [0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1],
      registers: [registry],
    }),
    logins: new Counter({ name: 'mcp_logins_total', help: 'Login attempts by type and outcome', labelNames: ['type', 'outcome'], registers: [registry] }),
    sessionsEnded: new Counter({ name: 'mcp_sessions_ended_total', help: 'Sessions ended, by reason', labelNames: ['reason'], registers: [registry] }),
    revalidations: new Counter({ name: 'mcp_revalidations_total', help: 'Upstream re-validations by outcome', labelNames: ['outcome'], registers: [registry] }),
    sealedOpenedWithPreviousKey: new Counter({ name: 'mcp_sealed_opened_with_previous_key_total', help: 'Secrets at rest opened with one of sessions.previous_encryption_keys (not yet re-sealed with the current key)', registers: [registry] }),
    rejections: new Counter({ name: 'mcp_rejected_requests_total', help: 'Requests refused with a client error, by status and error code', labelNames: ['status', 'code'], registers: [registry] }),
    introspectionBudgetSpent: new Counter({
      name: 'mcp_op_introspection_budget_spent_total',
      help: 'Unknown tokens answered 503 without asking the OP because rate_limits.op_introspection was spent',
      registers: [registry],
    }),
  };
}

/** Counts one answered request and observes its duration. */
export type RequestRecorder = (route: RouteClass, method: string, status: number, seconds: number) => void;

/** Label children remembered per recorder; methods are client-chosen, so the memo stops growing here. */
const MAX_REMEMBERED_LABEL_SETS = 256;

/**
 * `requests` and `requestDuration` with their label children looked up once per (route, method, status) rather than
 * per request: no label object is built and no `labels()` lookup made for every request the proxy answers or passes
 * through (prom-client still validates and hashes the labels inside each `inc`/`observe`; the saving is small).
 * Beyond the memo's bound the labelled call is made as before (the exposition is the same either way).
 */
export function requestRecorder(metrics: Pick<Metrics, 'requests' | 'requestDuration'>): RequestRecorder {
  // route → method → status: three lookups on strings the caller already has, no key string built per request.
  const counters = new Map<RouteClass, Map<string, Map<number, { inc(): void }>>>();
  let remembered = 0;
  const durations = new Map<RouteClass, { observe(value: number): void }>();
  return (route, method, status, seconds) => {
    let byMethod = counters.get(route);
    if (byMethod === undefined) {
      byMethod = new Map();
      counters.set(route, byMethod);
    }
    let byStatus = byMethod.get(method);
    let counter = byStatus?.get(status);
    if (counter === undefined) {
      counter = metrics.requests.labels({ route, method, status: String(status) });
      if (remembered < MAX_REMEMBERED_LABEL_SETS) {
        remembered += 1;
        if (byStatus === undefined) {
          byStatus = new Map();
          byMethod.set(method, byStatus);
        }
        byStatus.set(status, counter);
      }
    }
    counter.inc();
    let duration = durations.get(route);
    if (duration === undefined) {
      duration = metrics.requestDuration.labels({ route });
      durations.set(route, duration);
    }
    duration.observe(seconds);
  };
}

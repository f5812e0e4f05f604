import { performance } from 'node:perf_hooks';
import { stringify } from 'yaml';
import { buildDeps } from '../src/build-deps.js';
import { systemClock } from '../src/clock.js';
import { parseConfig } from '../src/config/load-config.js';
import { createLogger } from '../src/observability/logger.js';
import { createMetrics } from '../src/observability/metrics.js';
import { createUpstreamProviders } from '../src/oidc/create-upstream-providers.js';
import type { UpstreamProvider } from '../src/oidc/upstream.js';
import { startProxy } from '../src/server.js';
import { createStore } from '../src/store/index.js';
import type { OpCallTimings, ProxyProcessInput, ProxyProcessReady, ProxyProcessReply, ProxyProcessRequest } from './harness/proxy-protocol.js';

/**
 * The proxy under test, alone in its process, built from a configuration the way main.ts builds it. Started by
 * harness/proxy-child.ts with the input in MCP_BENCH_PROXY; prints one `{"bench":"ready",...}` line on stdout with
 * its URLs, then answers IPC requests for its memory, the timings of its calls to the OP, and a graceful stop (which
 * lets `--cpu-prof` write its profile).
 */

const RSS_SAMPLE_MS = 5;

const input = JSON.parse(process.env['MCP_BENCH_PROXY'] ?? '{}') as ProxyProcessInput;
const config = parseConfig(stringify(input.config), { env: {} });
const logger = createLogger(config.log.level);
const store = await createStore(config.store.redis_url === undefined ? {} : { redis: { url: config.store.redis_url, keyPrefix: config.store.key_prefix } });
const opCalls: OpCallTimings = { exchangeCode: [], passwordGrant: [] };
const providers = input.timeOpCalls === true ? timeOpCalls(createUpstreamProviders(config.oidc_providers, { logger, clock: systemClock }), opCalls) : undefined;
const deps = buildDeps(config, store, logger, createMetrics(), providers === undefined ? {} : { providers });
const running = await startProxy(deps);

let rssWatch: { timer: NodeJS.Timeout; baseline: number; peak: number } | undefined;

process.on('message', (request: ProxyProcessRequest) => {
  const reply = (body: ProxyProcessReply) => process.send?.({ id: request.id, ...body });
  switch (request.type) {
    case 'memory': {
      const usage = process.memoryUsage();
      reply({ type: 'memory', rss: usage.rss, heapUsed: usage.heapUsed, external: usage.external });
      return;
    }
    case 'rss-watch-start': {
      if (rssWatch !== undefined) clearInterval(rssWatch.timer);
      const baseline = process.memoryUsage.rss();
      const watch = { baseline, peak: baseline, timer: setInterval(() => (watch.peak = Math.max(watch.peak, process.memoryUsage.rss())), RSS_SAMPLE_MS) };
      rssWatch = watch;
      reply({ type: 'ok' });
      return;
    }
    case 'rss-watch-stop': {
      const watch = rssWatch;
      rssWatch = undefined;
      if (watch === undefined) {
        reply({ type: 'error', message: 'no RSS watch running' });
        return;
      }
      clearInterval(watch.timer);
      watch.peak = Math.max(watch.peak, process.memoryUsage.rss());
      reply({ type: 'rss-watch', baseline: watch.baseline, peak: watch.peak });
      return;
    }
    case 'op-call-timings':
      reply({ type: 'op-call-timings', timings: { exchangeCode: opCalls.exchangeCode.splice(0), passwordGrant: opCalls.passwordGrant.splice(0) } });
      return;
    case 'clock':
      reply({ type: 'clock', micros: Number(process.hrtime.bigint() / 1000n) });
      return;
    case 'stop':
      void running
        .stop(2000)
        .then(() => store.close())
        .then(() => {
          reply({ type: 'ok' });
          // A normal exit, not a signal: --cpu-prof writes its profile only then.
          process.exit(0);
        });
      return;
  }
});
process.on('disconnect', () => process.exit(0));

const ready: ProxyProcessReady = { bench: 'ready', clientUrl: running.clientUrl, homeserverFacingUrl: running.homeserverFacingUrl, pid: process.pid };
process.stdout.write(`${JSON.stringify(ready)}\n`);

/** The real providers, with the duration of every code exchange and password grant recorded. */
function timeOpCalls(real: ReadonlyMap<string, UpstreamProvider>, into: OpCallTimings): ReadonlyMap<string, UpstreamProvider> {
  const timed = new Map<string, UpstreamProvider>();
  for (const [idpId, provider] of real) {
    const exchangeCode: UpstreamProvider['exchangeCode'] = (callbackUrl, expected) => timedCall(into.exchangeCode, () => provider.exchangeCode(callbackUrl, expected));
    const passwordGrant: UpstreamProvider['passwordGrant'] = (username, password) => timedCall(into.passwordGrant, () => provider.passwordGrant(username, password));
    // A Proxy rather than a copy of each method: the interface grows, and this must not need to follow it.
    timed.set(
      idpId,
      new Proxy(provider, {
        get(target, property) {
          if (property === 'exchangeCode') return exchangeCode;
          if (property === 'passwordGrant') return passwordGrant;
          const value: unknown = Reflect.get(target, property, target);
          return typeof value === 'function' ? value.bind(target) : value;
        },
      }),
    );
  }
  return timed;
}

async function timedCall<T>(into: number[], call: () => Promise<T>): Promise<T> {
  const started = performance.now();
  try {
    return await call();
  } finally {
    into.push(performance.now() - started);
  }
}

import cluster from 'node:cluster';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { performance } from 'node:perf_hooks';
import { buildDeps } from '../src/build-deps.js';
import { systemClock } from '../src/clock.js';
import { WORKER_READY } from '../src/cluster-messages.js';
import type { Config } from '../src/config/schema.js';
import { createLogger } from '../src/observability/logger.js';
import { clusterMetricsSource } from '../src/observability/cluster-metrics.js';
import { createMetrics } from '../src/observability/metrics.js';
import { createUpstreamProviders } from '../src/oidc/create-upstream-providers.js';
import type { UpstreamProvider } from '../src/oidc/upstream.js';
import { startProxy } from '../src/server.js';
import { createStore } from '../src/store/index.js';
import type { CallTotals, MemoryBreakdown, RssByMapping, OpCallTimings, ProxyProcessInput, ProxyProcessReady, ProxyProcessReply, ProxyProcessRequest } from './harness/proxy-protocol.js';

/**
 * The proxy under test, alone in its process, built from a configuration the way main.ts builds it. Started by
 * harness/proxy-child.ts with the input in MCP_BENCH_PROXY; prints one `{"bench":"ready",...}` line on stdout with
 * its URLs, then answers IPC requests for its memory, the timings of its calls to the OP, and a graceful stop (which
 * lets `--cpu-prof` write its profile).
 */

const RSS_SAMPLE_MS = 5;

const input = JSON.parse(process.env['MCP_BENCH_PROXY'] ?? '{}') as ProxyProcessInput;
const workers = input.workers ?? 1;

if (workers > 1 && cluster.isPrimary) await runClusterPrimary(workers);
else await runProxyHere();

/**
 * `workers: N` as main.ts runs it: this process is the primary of src/cluster.ts (it serves no request) and forks N
 * workers, each running this script again as a whole proxy on the shared listeners. The ready line lists every pid,
 * so that the harness sums CPU time over the primary (which accepts and hands out connections) and the workers.
 */
async function runClusterPrimary(count: number): Promise<void> {
  const { runPrimary } = await import('../src/cluster.js');
  const logger = createLogger((await benchConfig()).log.level);
  let urls: { clientUrl: string; homeserverFacingUrl: string } | undefined;
  const ready = new Set<number>();
  const announced = new Promise<void>((resolve) => {
    cluster.on('message', (worker, message: unknown) => {
      if (typeof message !== 'object' || message === null) return;
      const m = message as { bench?: unknown; clientUrl?: string; homeserverFacingUrl?: string; type?: unknown };
      if (m.bench === 'worker-urls' && m.clientUrl !== undefined && m.homeserverFacingUrl !== undefined) urls ??= { clientUrl: m.clientUrl, homeserverFacingUrl: m.homeserverFacingUrl };
      if (m.type === WORKER_READY.type) {
        ready.add(worker.id);
        if (ready.size >= count) resolve();
      }
    });
  });
  const finished = runPrimary(count, logger);
  // A worker that cannot start makes runPrimary stop the others and resolve: exit, the harness reports the log.
  const startedAll = await Promise.race([announced.then(() => true), finished.then(() => false)]);
  if (!startedAll) process.exit(1);
  const workerPids = Object.values(cluster.workers ?? {}).flatMap((worker) => (worker?.process.pid === undefined ? [] : [worker.process.pid]));
  process.on('message', (request: ProxyProcessRequest) => {
    const reply = (body: ProxyProcessReply) => process.send?.({ id: request.id, ...body });
    if (request.type !== 'stop') {
      reply({ type: 'error', message: `${request.type} is answered by a single-process proxy only (workers: 1)` });
      return;
    }
    // runPrimary's own SIGTERM handling: every worker drains, then the primary's promise resolves.
    process.kill(process.pid, 'SIGTERM');
    void finished.then((code) => {
      reply({ type: 'ok' });
      process.exit(code);
    });
  });
  process.on('disconnect', () => process.kill(process.pid, 'SIGTERM'));
  if (urls === undefined) throw new Error('no worker reported its URLs');
  const line: ProxyProcessReady = { bench: 'ready', ...urls, pid: process.pid, workerPids };
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

/** The proxy in this process: the only one (workers: 1) or one cluster worker. */
async function runProxyHere(): Promise<void> {
  const config = await benchConfig();
  const worker = cluster.worker;
  const logger = createLogger(config.log.level);
  const store = await createStore(config.store.redis_url === undefined ? {} : { redis: { url: config.store.redis_url, keyPrefix: config.store.key_prefix } });
  const opCalls: OpCallTimings = { exchangeCode: [], passwordGrant: [], store: {}, homeserver: {} };
  const providers = input.timeOpCalls === true ? timeOpCalls(createUpstreamProviders(config.oidc_providers, { logger, clock: systemClock }), opCalls) : undefined;
  const metrics = createMetrics(worker === undefined ? {} : { clusterText: clusterMetricsSource });
  let deps = await buildDeps(config, store, logger, metrics, providers === undefined ? {} : { providers });
  if (input.timeOpCalls === true) {
    // Wired again with the store and the homeserver adapter timed too: where a login's time goes besides the OP.
    deps = await buildDeps(config, timedMethods(store, opCalls.store), logger, metrics, { providers: providers ?? deps.providers, homeserver: timedMethods(deps.homeserver, opCalls.homeserver) });
  }
  const running = await startProxy(deps);

  if (worker !== undefined) {
    // A cluster worker: the primary stops it with SIGTERM (drain), as main.ts's workers are stopped.
    const stop = () => void running.stop(2000).then(() => store.close()).then(() => process.exit(0));
    process.once('SIGTERM', stop);
    process.once('disconnect', stop);
    process.send?.({ bench: 'worker-urls', clientUrl: running.clientUrl, homeserverFacingUrl: running.homeserverFacingUrl });
    process.send?.(WORKER_READY);
    return;
  }

  let rssWatch: { timer: NodeJS.Timeout; baseline: number; peak: number } | undefined;
  process.on('message', (request: ProxyProcessRequest) => {
    const reply = (body: ProxyProcessReply) => process.send?.({ id: request.id, ...body });
    switch (request.type) {
      case 'memory': {
        reply({ type: 'memory', memory: memoryBreakdown() });
        return;
      }
      case 'collect': {
        fullCollection();
        reply({ type: 'memory', memory: memoryBreakdown() });
        return;
      }
      case 'heap-snapshot': {
        // writeHeapSnapshot collects garbage first: the snapshot holds what is reachable, not what awaits collection.
        reply({ type: 'heap-snapshot', file: v8.writeHeapSnapshot(join(request.dir, `proxy-${process.pid}-${Date.now()}.heapsnapshot`)) });
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
        reply({ type: 'op-call-timings', timings: { exchangeCode: opCalls.exchangeCode.splice(0), passwordGrant: opCalls.passwordGrant.splice(0), store: drain(opCalls.store), homeserver: drain(opCalls.homeserver) } });
        return;
      case 'clock':
        reply({ type: 'clock', micros: Number(process.hrtime.bigint() / 1000n) });
        return;
      case 'probe-start':
      case 'probe-stop':
        // Answered by harness/tail-probe.ts, preloaded with `node --import` when the harness asks for it.
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

  const ready: ProxyProcessReady = { bench: 'ready', clientUrl: running.clientUrl, homeserverFacingUrl: running.homeserverFacingUrl, pid: process.pid, workerPids: [] };
  process.stdout.write(`${JSON.stringify(ready)}\n`);
}

/**
 * The configuration, checked the way main.ts checks a file: in a thread of its own (src/config/config-thread.ts), so
 * that the validation layer does not stay in the process measured. JSON is YAML.
 */
async function benchConfig(): Promise<Config> {
  const text = JSON.stringify(input.config);
  // A baseline tree from before config-thread.ts (memory-probe --base, compare-cpu) loads it in-process, as its main.ts did.
  const thread = await import('../src/config/config-thread.js').catch((err: unknown) => {
    if ((err as { code?: unknown }).code === 'ERR_MODULE_NOT_FOUND') return undefined;
    throw err;
  });
  if (thread !== undefined) return thread.parseConfigInThread(text, { env: {} });
  return (await import('../src/config/load-config.js')).parseConfig(text, { env: {} });
}

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

/** `target` with every method that returns a promise timed into `into` by method name (count, total ms). */
function timedMethods<T extends object>(target: T, into: Record<string, CallTotals>): T {
  return new Proxy(target, {
    get(object, property) {
      const value: unknown = Reflect.get(object, property, object);
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        const started = performance.now();
        const result: unknown = Reflect.apply(value as (...a: unknown[]) => unknown, object, args);
        if (!(result instanceof Promise)) return result;
        const record = () => {
          const totals = (into[String(property)] ??= { count: 0, totalMs: 0 });
          totals.count += 1;
          totals.totalMs += performance.now() - started;
        };
        return result.finally(record);
      };
    },
  });
}

/** A full (mark-compact) collection without starting node with --expose-gc, which would change the process measured. */
function fullCollection(): void {
  v8.setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
}

function memoryBreakdown(): MemoryBreakdown {
  const usage = process.memoryUsage();
  const spaces = Object.fromEntries(v8.getHeapSpaceStatistics().map((space) => [space.space_name, { size: space.space_size, used: space.space_used_size }]));
  const mappings = rssByMapping();
  return {
    rss: usage.rss,
    heapTotal: usage.heapTotal,
    heapUsed: usage.heapUsed,
    external: usage.external,
    arrayBuffers: usage.arrayBuffers,
    spaces,
    v8Malloced: v8.getHeapStatistics().malloced_memory,
    ...(mappings === undefined ? {} : { mappings }),
  };
}

const ARENA_SIZE = 64 * 1024 * 1024;

/**
 * The process's resident memory by mapping kind, from /proc/self/smaps. glibc gives each thread's arena a heap of its
 * own: a 64 MiB reservation aligned to 64 MiB, read-write as far as it is in use and PROT_NONE beyond (glibc
 * malloc/arena.c, HEAP_MAX_SIZE = 2 × DEFAULT_MMAP_THRESHOLD_MAX on 64-bit), so an anonymous mapping that starts on a
 * 64 MiB boundary and, with the mappings right after it, spans exactly 64 MiB is counted as one.
 */
function rssByMapping(): RssByMapping | undefined {
  let text: string;
  try {
    text = readFileSync('/proc/self/smaps', 'utf8');
  } catch {
    return undefined;
  }
  const mappings: { start: number; end: number; kind: 'file' | 'brk' | 'anon' | 'other'; rss: number }[] = [];
  for (const line of text.split('\n')) {
    const header = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ (\d+)\s*(.*)$/.exec(line);
    if (header !== null) {
      const path = header[4] ?? '';
      const kind = header[3] !== '0' ? 'file' : path === '[heap]' ? 'brk' : path === '' ? 'anon' : 'other';
      mappings.push({ start: parseInt(header[1]!, 16), end: parseInt(header[2]!, 16), kind, rss: 0 });
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss !== null && mappings.length > 0) mappings[mappings.length - 1]!.rss = Number(rss[1]) * 1024;
  }
  let file = 0;
  let brkHeap = 0;
  let mallocArenas = 0;
  let otherAnonymous = 0;
  for (let index = 0; index < mappings.length; index++) {
    const mapping = mappings[index]!;
    if (mapping.kind === 'file') file += mapping.rss;
    else if (mapping.kind === 'brk') brkHeap += mapping.rss;
    else if (mapping.kind === 'anon' && mapping.start % ARENA_SIZE === 0) {
      let end = mapping.end;
      let rss = mapping.rss;
      let next = index + 1;
      while (end - mapping.start < ARENA_SIZE && mappings[next]?.kind === 'anon' && mappings[next]!.start === end) {
        end = mappings[next]!.end;
        rss += mappings[next]!.rss;
        next++;
      }
      if (end - mapping.start === ARENA_SIZE) {
        mallocArenas += rss;
        index = next - 1;
      } else otherAnonymous += mapping.rss;
    } else otherAnonymous += mapping.rss;
  }
  return { file, brkHeap, mallocArenas, otherAnonymous };
}

function drain(totals: Record<string, CallTotals>): Record<string, CallTotals> {
  const copy = { ...totals };
  for (const key of Object.keys(totals)) delete totals[key];
  return copy;
}

async function timedCall<T>(into: number[], call: () => Promise<T>): Promise<T> {
  const started = performance.now();
  try {
    return await call();
  } finally {
    into.push(performance.now() - started);
  }
}

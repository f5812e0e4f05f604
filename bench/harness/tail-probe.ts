import { monitorEventLoopDelay, performance, PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';
import { Session } from 'node:inspector';
import v8 from 'node:v8';

/**
 * What a process does to its own timeline while load runs, for bench/introspection-tail.ts: every garbage
 * collection (start, pause, kind), the event loop's delay (percentiles, and every stretch of more than
 * BLOCK_THRESHOLD_MS during which a 1 ms timer could not run), the bytes the JavaScript heap allocated, and the
 * process's CPU time. Times are epoch milliseconds (performance.timeOrigin + now), comparable across processes.
 *
 * It imports nothing from the proxy, so that it can be preloaded (`node --import`) into any tree's proxy, the
 * current one or a git ref's (bench/introspection-tail.ts --base), and used in the load generator and the
 * orchestrator too. In a child with an IPC channel, `{ id, type: 'probe-start' }` and `{ id, type: 'probe-stop' }`
 * are answered with `{ id, type: 'probe', ... }`; other messages are left to the process's own handler.
 */

/** A 1 ms timer that fires this much later than due marks a blocked event loop (or a descheduled process). */
const BLOCK_THRESHOLD_MS = 2;
const TICK_MS = 1;

/** GC kinds as perf_hooks reports them (constants.NODE_PERFORMANCE_GC_*). */
const GC_KINDS: Record<number, string> = { 1: 'minor', 4: 'major', 8: 'incremental', 16: 'weakcb' };

export interface ProbeReport {
  readonly startedAt: number;
  readonly stoppedAt: number;
  /** [start (epoch ms), pause (ms), kind] per collection. */
  readonly gc: [number, number, string][];
  /** [start (epoch ms), length (ms)] per stretch in which the 1 ms tick ran at least BLOCK_THRESHOLD_MS late. */
  readonly blocks: [number, number][];
  /** monitorEventLoopDelay at 1 ms resolution, in ms. */
  readonly eventLoopDelayMs: { readonly p50: number; readonly p90: number; readonly p99: number; readonly p999: number; readonly max: number; readonly mean: number };
  /** Bytes the V8 heap allocated over the window (collected + what the heap grew by), from v8.GCProfiler. */
  readonly allocatedBytes: number;
  /** user + system CPU over the window, ms. */
  readonly cpuMs: number;
  /**
   * With `allocations`: V8's sampling heap profiler over the window, objects collected since included — where the
   * allocated bytes were allocated, by function (self) and by the innermost frame of src/ on the stack.
   */
  readonly allocationSites?: { readonly bySelf: AllocationSite[]; readonly bySource: AllocationSite[]; readonly byStack: AllocationSite[]; readonly sampledBytes: number };
}

export interface AllocationSite {
  readonly site: string;
  readonly bytes: number;
}

interface SamplingNode {
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
  readonly selfSize: number;
  readonly children: readonly SamplingNode[];
}

/** Byte sizes of the sampled tree, by the node's own frame and by the innermost frame under src/ on its stack. */
/** How many innermost frames name a stack in `byStack`. */
const STACK_FRAMES = 4;

function allocationSites(head: SamplingNode): NonNullable<ProbeReport['allocationSites']> {
  const bySelf = new Map<string, number>();
  const bySource = new Map<string, number>();
  const byStack = new Map<string, number>();
  let sampledBytes = 0;
  const frameName = (node: SamplingNode) => `${node.callFrame.functionName || '(anonymous)'} ${node.callFrame.url.replace(/^.*\/(src|node_modules|bench)\//, '$1/')}:${node.callFrame.lineNumber + 1}`;
  const walk = (node: SamplingNode, source: string, callers: readonly string[]) => {
    const here = frameName(node);
    const inSource = /\/src\//.test(node.callFrame.url) ? here : source;
    const stack = [here, ...callers].slice(0, STACK_FRAMES);
    if (node.selfSize > 0) {
      sampledBytes += node.selfSize;
      bySelf.set(here, (bySelf.get(here) ?? 0) + node.selfSize);
      bySource.set(inSource, (bySource.get(inSource) ?? 0) + node.selfSize);
      const key = stack.join(' < ');
      byStack.set(key, (byStack.get(key) ?? 0) + node.selfSize);
    }
    for (const child of node.children) walk(child, inSource, stack);
  };
  walk(head, '(outside src/)', []);
  const top = (map: Map<string, number>) => [...map].sort((a, b) => b[1] - a[1]).slice(0, 40).map(([site, bytes]) => ({ site, bytes }));
  return { bySelf: top(bySelf), bySource: top(bySource), byStack: top(byStack), sampledBytes };
}

interface Running {
  readonly startedAt: number;
  readonly cpu: NodeJS.CpuUsage;
  readonly usedAtStart: number;
  readonly gc: [number, number, string][];
  readonly blocks: [number, number][];
  readonly observer: PerformanceObserver;
  readonly delay: ReturnType<typeof monitorEventLoopDelay>;
  readonly profiler: v8.GCProfiler;
  readonly ticker: NodeJS.Timeout;
  readonly session: Session | undefined;
}

let running: Running | undefined;

const epochNow = (): number => performance.timeOrigin + performance.now();

function gcEvent(entry: PerformanceEntry): [number, number, string] {
  const kind = ((entry as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind) ?? 0;
  return [performance.timeOrigin + entry.startTime, entry.duration, GC_KINDS[kind] ?? String(kind)];
}

/**
 * `allocations`: also sample where the heap allocates (costs the process CPU: measure latency without it); 'live'
 * keeps only the sampled objects still in the heap at the stop — what survived a scavenge and was promoted, until a
 * full collection — rather than every allocation; 'promoted' keeps those a full collection has collected since too.
 */
export type AllocationMode = boolean | 'live' | 'promoted';

export async function startProbe(options: { allocations?: AllocationMode } = {}): Promise<void> {
  if (running !== undefined) await stopProbe();
  let session: Session | undefined;
  if (options.allocations !== undefined && options.allocations !== false) {
    const all = options.allocations === true;
    session = new Session();
    session.connect();
    // 'promoted': a sample is dropped when a scavenge collects its object and kept when a full collection does, so
    // what remains is every sampled object that outlived the young generation — promoted, whether alive or not now.
    await post(session, 'HeapProfiler.startSampling', { samplingInterval: 1024, includeObjectsCollectedByMajorGC: all || options.allocations === 'promoted', includeObjectsCollectedByMinorGC: all });
  }
  const gc: [number, number, string][] = [];
  const blocks: [number, number][] = [];
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      gc.push(gcEvent(entry));
    }
  });
  observer.observe({ entryTypes: ['gc'] });
  const delay = monitorEventLoopDelay({ resolution: 1 });
  delay.enable();
  const profiler = new v8.GCProfiler();
  profiler.start();
  let last = performance.now();
  const ticker = setInterval(() => {
    const now = performance.now();
    const late = now - last - TICK_MS;
    if (late >= BLOCK_THRESHOLD_MS) blocks.push([performance.timeOrigin + last + TICK_MS, late]);
    last = now;
  }, TICK_MS);
  running = { startedAt: epochNow(), cpu: process.cpuUsage(), usedAtStart: v8.getHeapStatistics().used_heap_size, gc, blocks, observer, delay, profiler, ticker, session };
}

function post(session: Session, method: string, params: object = {}): Promise<unknown> {
  return new Promise((resolve, reject) => session.post(method, params, (error, result) => (error === null ? resolve(result) : reject(error))));
}

export async function stopProbe(): Promise<ProbeReport> {
  const probe = running;
  if (probe === undefined) throw new Error('no probe running');
  running = undefined;
  clearInterval(probe.ticker);
  // Entries still buffered in the observer are delivered by takeRecords.
  for (const entry of probe.observer.takeRecords()) {
    probe.gc.push(gcEvent(entry));
  }
  probe.observer.disconnect();
  probe.delay.disable();
  const profile = probe.profiler.stop() as { statistics: { beforeGC: { heapStatistics: { usedHeapSize: number } }; afterGC: { heapStatistics: { usedHeapSize: number } } }[] } | undefined;
  // Allocated = what each collection found in use minus what the previous one left, plus the growth since the last.
  let allocated = 0;
  let previousAfter = probe.usedAtStart;
  for (const statistic of profile?.statistics ?? []) {
    allocated += Math.max(0, statistic.beforeGC.heapStatistics.usedHeapSize - previousAfter);
    previousAfter = statistic.afterGC.heapStatistics.usedHeapSize;
  }
  allocated += Math.max(0, v8.getHeapStatistics().used_heap_size - previousAfter);
  const cpu = process.cpuUsage(probe.cpu);
  let sites: ProbeReport['allocationSites'];
  if (probe.session !== undefined) {
    const { profile } = (await post(probe.session, 'HeapProfiler.stopSampling')) as { profile: { head: SamplingNode } };
    probe.session.disconnect();
    sites = allocationSites(profile.head);
  }
  const ms = (ns: number) => ns / 1e6;
  const delay = probe.delay;
  return {
    startedAt: probe.startedAt,
    stoppedAt: epochNow(),
    gc: probe.gc,
    blocks: probe.blocks,
    eventLoopDelayMs: {
      p50: ms(delay.percentile(50)),
      p90: ms(delay.percentile(90)),
      p99: ms(delay.percentile(99)),
      p999: ms(delay.percentile(99.9)),
      max: ms(delay.max),
      mean: ms(delay.mean),
    },
    allocatedBytes: allocated,
    cpuMs: (cpu.user + cpu.system) / 1000,
    ...(sites === undefined ? {} : { allocationSites: sites }),
  };
}

// Preloaded into a child with an IPC channel: answer the probe's own requests.
if (process.send !== undefined) {
  process.on('message', (message: { id?: number; type?: string; allocations?: AllocationMode }) => {
    if (message.type !== 'probe-start' && message.type !== 'probe-stop') return;
    const answer = message.type === 'probe-start' ? startProbe({ allocations: message.allocations ?? false }).then(() => undefined) : stopProbe();
    answer.then(
      (report) => process.send?.({ id: message.id, type: 'probe', report }),
      (error: unknown) => process.send?.({ id: message.id, error: error instanceof Error ? error.message : String(error) }),
    );
  });
}

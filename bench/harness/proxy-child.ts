import { pinProxy } from './cpu-pinning.js';
import { IpcChannel, startNodeChild } from './child-processes.js';
import { compiledProxyProcess, compiledTailProbe } from './compile-proxy.js';
import { processCpuTimeMs } from './process-cpu.js';
import type { AllocationMode, ProbeReport } from './tail-probe.js';
import type { MemoryBreakdown, OpCallTimings, ProxyProcessInput, ProxyProcessReady, ProxyProcessReply, ProxyProcessRequest } from './proxy-protocol.js';

const STOP_TIMEOUT_MS = 15_000;

type RequestBody = ProxyProcessRequest extends infer R ? (R extends { id: number } ? Omit<R, 'id'> : never) : never;

export interface ProxyChildOptions extends ProxyProcessInput {
  /** Names the log file (bench/results/logs/proxy-<name>.log). */
  readonly name: string;
  /** Writes a V8 CPU profile (.cpuprofile) into this directory when the proxy stops. */
  readonly cpuProfileDir?: string;
  /** Another compiled proxy-process.js (bench/compare-cpu.ts: a baseline tree); default this tree's. */
  readonly entry?: string;
  /** More node flags for the proxy process (e.g. V8 heap sizes to compare). */
  readonly nodeFlags?: readonly string[];
  /** More environment variables for the proxy process (e.g. MALLOC_ARENA_MAX). */
  readonly env?: Readonly<Record<string, string>>;
  /** Preload harness/tail-probe.ts (GC, event-loop and allocation record on request: `probeStart`/`probeStop`). */
  readonly probe?: boolean;
}

/** A proxy running in a process of its own (bench/proxy-process.ts, compiled to JavaScript). */
export class ProxyChild {
  private constructor(
    readonly clientUrl: string,
    readonly homeserverFacingUrl: string,
    readonly pid: number,
    /** With `workers` > 1: the workers' pids (`pid` is then the cluster primary's). */
    readonly workerPids: readonly number[],
    private readonly channel: IpcChannel<RequestBody, ProxyProcessReply>,
    private readonly exited: Promise<number | null>,
  ) {}

  static async start(options: ProxyChildOptions): Promise<ProxyChild> {
    const input: ProxyProcessInput = {
      config: options.config,
      ...(options.timeOpCalls === undefined ? {} : { timeOpCalls: options.timeOpCalls }),
      ...(options.workers === undefined ? {} : { workers: options.workers }),
    };
    // BENCH_CPU_PROFILE_DIR profiles every proxy a scenario starts (e.g. the login's), not only profile-hot-paths'.
    const cpuProfileDir = options.cpuProfileDir ?? process.env['BENCH_CPU_PROFILE_DIR'];
    const started = await startNodeChild(options.entry ?? compiledProxyProcess(), {
      loader: 'none',
      logName: `proxy-${options.name}`,
      env: { ...options.env, MCP_BENCH_PROXY: JSON.stringify(input) },
      // BENCH_CPU_PROFILE_INTERVAL_US: a finer sampling interval than V8's 1 ms, for short per-request frames.
      nodeFlags: [
        ...(options.nodeFlags ?? []),
        ...(options.probe === true ? ['--import', compiledTailProbe()] : []),
        ...(cpuProfileDir === undefined
          ? []
          : ['--cpu-prof', `--cpu-prof-dir=${cpuProfileDir}`, ...(process.env['BENCH_CPU_PROFILE_INTERVAL_US'] === undefined ? [] : [`--cpu-prof-interval=${process.env['BENCH_CPU_PROFILE_INTERVAL_US']}`])]),
      ],
      readyLine: (line) => line.startsWith('{"bench":"ready"'),
    });
    const ready = JSON.parse(started.readyText) as ProxyProcessReady;
    pinProxy([ready.pid, ...ready.workerPids]);
    return new ProxyChild(ready.clientUrl, ready.homeserverFacingUrl, ready.pid, ready.workerPids, new IpcChannel(started.child), started.exited);
  }

  /**
   * CPU time the proxy process has used so far (user + system, ms), from /proc. Divided by the requests of a round it
   * gives CPU per request, which — unlike req/s — hardly moves when other processes load the machine. With cluster
   * workers, the sum over the primary (it accepts the connections and hands them out) and every worker.
   */
  cpuTimeMs(): number {
    return processCpuTimeMs([this.pid, ...this.workerPids]);
  }

  /** The processes serving requests: 1, or the cluster's workers. */
  get workers(): number {
    return Math.max(1, this.workerPids.length);
  }

  async memory(): Promise<MemoryBreakdown> {
    const reply = await this.channel.request({ type: 'memory' });
    if (reply.type !== 'memory') throw new Error(`unexpected reply ${reply.type}`);
    return reply.memory;
  }

  /**
   * The memory after a full garbage collection in the proxy: what it keeps alive. Call it last — the collection
   * also shrinks the heap, so later RSS figures would no longer be those of a proxy left to itself.
   */
  async memoryAfterCollection(): Promise<MemoryBreakdown> {
    const reply = await this.channel.request({ type: 'collect' });
    if (reply.type !== 'memory') throw new Error(`unexpected reply ${reply.type}`);
    return reply.memory;
  }

  /** A V8 heap snapshot of the proxy (after a full collection) written into `dir`; returns its path. */
  async heapSnapshot(dir: string): Promise<string> {
    const reply = await this.channel.request({ type: 'heap-snapshot', dir });
    if (reply.type !== 'heap-snapshot') throw new Error(`unexpected reply ${reply.type}`);
    return reply.file;
  }

  /** Samples the proxy's RSS every few ms until `stopRssWatch`, which returns the start value and the peak. */
  async startRssWatch(): Promise<void> {
    await this.channel.request({ type: 'rss-watch-start' });
  }

  async stopRssWatch(): Promise<{ baseline: number; peak: number }> {
    const reply = await this.channel.request({ type: 'rss-watch-stop' });
    if (reply.type !== 'rss-watch') throw new Error(`unexpected reply ${reply.type}`);
    return { baseline: reply.baseline, peak: reply.peak };
  }

  /** Durations (ms) of the calls to the OP since the last call; needs `timeOpCalls`. */
  async opCallTimings(): Promise<OpCallTimings> {
    const reply = await this.channel.request({ type: 'op-call-timings' });
    if (reply.type !== 'op-call-timings') throw new Error(`unexpected reply ${reply.type}`);
    return reply.timings;
  }

  /** The proxy's monotonic clock in µs, to cut the load window out of a CPU profile. */
  async clockMicros(): Promise<number> {
    const reply = await this.channel.request({ type: 'clock' });
    if (reply.type !== 'clock') throw new Error(`unexpected reply ${reply.type}`);
    return reply.micros;
  }

  /** Starts the preloaded tail probe's record (needs `probe`). */
  async probeStart(options: { allocations?: AllocationMode } = {}): Promise<void> {
    await this.channel.request({ type: 'probe-start', ...options });
  }

  /** Ends the tail probe's record and returns it. */
  async probeStop(): Promise<ProbeReport> {
    const reply = await this.channel.request({ type: 'probe-stop' });
    if (reply.type !== 'probe' || reply.report === undefined) throw new Error(`unexpected reply ${reply.type}`);
    return reply.report;
  }

  /** Graceful stop (the process exits normally, so a CPU profile gets written); killed if that takes too long. */
  async stop(): Promise<void> {
    const kill = setTimeout(() => {
      try {
        process.kill(this.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }, STOP_TIMEOUT_MS);
    await this.channel.request({ type: 'stop' }).catch(() => undefined);
    await this.exited;
    clearTimeout(kill);
  }
}

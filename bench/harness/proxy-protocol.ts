import type { AllocationMode, ProbeReport } from './tail-probe.js';

/** What bench/proxy-process.ts receives in MCP_BENCH_PROXY. */
export interface ProxyProcessInput {
  /** The proxy configuration as the YAML document would hold it. */
  readonly config: Record<string, unknown>;
  /**
   * Record how long each call to the OP takes inside the proxy (SSO code exchange, password grant): the login
   * benchmark subtracts them to see the proxy's own part.
   */
  readonly timeOpCalls?: boolean;
  /**
   * Cluster workers (`workers: N`, src/cluster.ts); default 1, one process. With several, the process answers only
   * `stop`: memory, timings and the clock belong to one proxy process.
   */
  readonly workers?: number;
}

/** The one line the proxy process prints on stdout once it listens. */
export interface ProxyProcessReady {
  readonly bench: 'ready';
  readonly clientUrl: string;
  readonly homeserverFacingUrl: string;
  readonly pid: number;
  /** The cluster workers' pids (none with one process). */
  readonly workerPids: readonly number[];
}

export type ProxyProcessRequest = { readonly id: number } & (
  | { readonly type: 'memory' }
  /** v8.writeHeapSnapshot into this directory (after a full GC); the reply says the file. */
  | { readonly type: 'heap-snapshot'; readonly dir: string }
  /** A full garbage collection, then the memory: what the process keeps alive, apart from garbage awaiting collection. */
  | { readonly type: 'collect' }
  | { readonly type: 'rss-watch-start' }
  | { readonly type: 'rss-watch-stop' }
  | { readonly type: 'op-call-timings' }
  | { readonly type: 'clock' }
  | { readonly type: 'stop' }
  /** Answered by harness/tail-probe.ts when it is preloaded (ProxyChild `probe`), not by proxy-process.ts. */
  | { readonly type: 'probe-start'; readonly allocations?: AllocationMode }
  | { readonly type: 'probe-stop' }
);

export type ProxyProcessReply =
  | { readonly type: 'ok' }
  | { readonly type: 'error'; readonly message: string }
  | { readonly type: 'memory'; readonly memory: MemoryBreakdown }
  | { readonly type: 'heap-snapshot'; readonly file: string }
  | { readonly type: 'rss-watch'; readonly baseline: number; readonly peak: number }
  | { readonly type: 'op-call-timings'; readonly timings: OpCallTimings }
  /** The monotonic clock V8's CPU profiler stamps its samples with (CLOCK_MONOTONIC), in microseconds. */
  | { readonly type: 'clock'; readonly micros: number }
  | { readonly type: 'probe'; readonly report: ProbeReport | undefined };

/** Milliseconds per call to the OP, in the order they finished. */
export interface OpCallTimings {
  readonly exchangeCode: number[];
  readonly passwordGrant: number[];
  /** Calls to the store and to the homeserver adapter, by method: how many, and the ms spent waiting in total. */
  readonly store: Record<string, CallTotals>;
  readonly homeserver: Record<string, CallTotals>;
}

export interface CallTotals {
  count: number;
  totalMs: number;
}

/** process.memoryUsage() and V8's heap spaces (bytes): what the RSS of the proxy is made of. */
export interface MemoryBreakdown {
  readonly rss: number;
  readonly heapTotal: number;
  readonly heapUsed: number;
  readonly external: number;
  readonly arrayBuffers: number;
  /** Per V8 heap space (new_space, old_space, code_space, ...): committed size and the part in use. */
  readonly spaces: Record<string, { readonly size: number; readonly used: number }>;
  /** Where the RSS lies, from /proc/<pid>/smaps (bytes resident); absent where /proc is not Linux's. */
  readonly mappings?: RssByMapping;
  /** Bytes V8 got from malloc for itself (v8.getHeapStatistics().malloced_memory): not the heap, not Buffers. */
  readonly v8Malloced?: number;
}

/** Resident bytes by kind of mapping. */
export interface RssByMapping {
  /** Mapped files: the node binary, shared libraries (shared with every process mapping them). */
  readonly file: number;
  /** glibc's main malloc arena ([heap], grown with brk). */
  readonly brkHeap: number;
  /** glibc's other malloc arenas: 64 MiB-aligned reservations of 64 MiB, one per thread that ever malloced. */
  readonly mallocArenas: number;
  /** Every other anonymous mapping: V8's heap pages (used, free or pooled), large malloc blocks, thread stacks. */
  readonly otherAnonymous: number;
}

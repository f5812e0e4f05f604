import type { Distribution } from './statistics.js';
import type { ProbeReport } from './tail-probe.js';

/**
 * The work the load-generator process does on request. It runs in a process of its own so that generating load
 * never competes with the proxy for one event loop.
 */
export type LoadJob = ThroughputJob | FixedRateJob | TransferJob | SequenceJob;

export interface RequestShape {
  readonly url: string;
  readonly method?: string;
  readonly headers?: Readonly<Record<string, string>>;
  readonly body?: string;
  /**
   * Varies the request per call over the tokens in this file (one a line), in order and round robin:
   * 'form' sends `token=<t>&token_type_hint=access_token` as the body (introspection, as Synapse sends it), 'bearer' an `Authorization: Bearer <t>` header.
   */
  readonly tokens?: { readonly file: string; readonly as: 'form' | 'bearer' };
}

/** Closed loop at full speed (autocannon): what the target can serve. */
export interface ThroughputJob extends RequestShape {
  readonly kind: 'throughput';
  readonly connections: number;
  /** Seconds; or `amount` requests in total. */
  readonly durationSec?: number;
  readonly amount?: number;
}

/** Open loop at a fixed request rate, evenly spaced, with microsecond latencies (autocannon only has whole ms). */
export interface FixedRateJob extends RequestShape {
  readonly kind: 'fixed-rate';
  readonly rate: number;
  readonly durationSec: number;
  readonly connections: number;
  /**
   * Also return every request's due time, send lag and latency, and the generator's own GC and event-loop
   * record (bench/introspection-tail.ts); costs the generator a few arrays, nothing per request otherwise.
   */
  readonly trace?: boolean;
  /**
   * What sends each request when it is due: 'timer' (default), the generator's event loop woken by `setTimeout` at
   * libuv's 1 ms resolution, a few requests per wake-up, the first up to ~1 ms late (counted against the target);
   * 'thread', a worker thread that sleeps until each due time and writes the request itself, sub-millisecond
   * (harness/paced-sender.ts), at about twice the generator's CPU per request — on two shared cores that CPU is taken
   * from the targets (bench/README.md, "A load generator that sends on time"). Without it, the environment variable
   * BENCH_FIXED_RATE_CLOCK=thread picks the paced sender for every job of a run (any scenario).
   */
  readonly clock?: 'thread' | 'timer';
}

/** One large body up or down, timed from the first byte sent to the last byte received. */
export interface TransferJob {
  readonly kind: 'transfer';
  readonly url: string;
  readonly direction: 'upload' | 'download';
  readonly bytes: number;
}

/** Requests one after another on one keep-alive connection, each timed. */
export interface SequenceJob {
  readonly kind: 'sequence';
  readonly steps: readonly RequestShape[];
}

export interface ThroughputResult {
  readonly requestsPerSecond: number;
  readonly ok: number;
  readonly errors: number;
  readonly non2xx: number;
  readonly seconds: number;
  readonly latencyMs: Distribution;
}

export interface FixedRateResult {
  readonly requestsPerSecond: number;
  readonly ok: number;
  readonly errors: number;
  readonly non2xx: number;
  readonly latencyMs: Distribution;
  /** How far behind schedule the generator itself fell at worst; a large value makes the run suspect. */
  readonly maxLagMs: number;
  /** How late the generator saw each request due (its own lateness, charged to every target alike), ms. */
  readonly sendLagMs: Distribution;
  readonly trace?: FixedRateTrace;
}

/** Per request of a traced fixed-rate run, in send order; times are epoch ms (comparable across processes). */
export interface FixedRateTrace {
  readonly clock: 'thread' | 'timer';
  readonly dueAt: number[];
  /** ms from due until the generator saw the request due (and sent it, or queued it when every connection was busy). */
  readonly sendLagMs: number[];
  /** ms from due to the last byte of the answer; -1 for a request that failed or was not 2xx. */
  readonly latencyMs: number[];
  /** The generator's own process record over the run (harness/tail-probe.ts). */
  readonly generator: ProbeReport;
}

export interface TransferResult {
  readonly status: number;
  readonly bytes: number;
  readonly seconds: number;
  readonly megabytesPerSecond: number;
}

export interface SequenceStep {
  readonly ms: number;
  readonly status: number;
  readonly body: string;
}

export interface SequenceResult {
  readonly steps: readonly SequenceStep[];
}

export type LoadResult<J extends LoadJob> = J extends ThroughputJob
  ? ThroughputResult
  : J extends FixedRateJob
    ? FixedRateResult
    : J extends TransferJob
      ? TransferResult
      : SequenceResult;

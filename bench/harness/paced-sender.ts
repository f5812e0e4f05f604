import { Worker } from 'node:worker_threads';

/**
 * Sends an open-loop run's requests at their due times with sub-millisecond precision and without spinning a core
 * (issue 19). A JavaScript timer cannot: libuv keeps its clock and its poll timeout in whole milliseconds, so at
 * 5,000/s every `setTimeout` wake-up sent ~5 requests, the first of them up to ~1 ms late (bench/README.md,
 * "Introspection p99 at 5,000/s: where the tail comes from").
 *
 * A worker thread sleeps in `Atomics.wait` with a fractional timeout (a futex wait on the kernel's high-resolution
 * timers) until the next request is due, then writes the request's bytes itself to an idle connection's socket
 * (`fs.writeSync` on the descriptor, a plain `write(2)`); the event loop of the main thread only reads the answers.
 * Waking the main thread for every send instead (Atomics.waitAsync, tried first) cost the generator 2.5× the CPU
 * per request: every wake-up of a thread costs ~30 µs of CPU on this machine, and that design woke two threads per
 * request. Which connections are busy, and which request each carries, live in shared memory: the worker takes an
 * idle connection with a compare-and-swap, the main thread frees it when the answer is complete and, if the worker
 * is waiting for a free connection (every connection busy with a request due), wakes it.
 *
 * The main thread keeps the sockets (libuv reads them); the worker only writes to their descriptors, and is stopped
 * before any socket is closed. The worker reads time from `process.hrtime` (one monotonic clock for every thread);
 * the schedule it is given is on that clock, in ms.
 */

/** Connection states in `state`. */
export const IDLE = 0;
const BUSY = 1;
/** Closed or failed: the worker never writes to it again. */
export const DEAD = 2;

/** Cells of `control`. */
const STOP = 0;
/** 1 while the worker waits for a connection to be freed. */
const BACKLOG = 1;
/** Bumped by the main thread when it frees a connection during a backlog. */
const FREED = 2;
/** Never changes: the worker sleeps on it until a due time (or stop()'s notify). */
const SLEEP = 3;
/** Requests the worker could not write (the connection failed): counted as errors. */
const FAILED = 4;
/** Requests the worker has written or failed. */
const HANDLED = 5;
/** 1 once begin() has written the schedule. */
const BEGUN = 6;

/** The worker's code, plain JavaScript evaluated as is (the load generator runs under tsx; a worker would not). */
const WORKER_SOURCE = `
const { writeSync } = require('node:fs');
const { workerData } = require('node:worker_threads');
const { fds, heads, offsets, state, carries, control, sendLag, schedule, total } = workerData;
// Started ahead (a worker takes tens of ms to start): the schedule comes with begin().
Atomics.wait(control, ${BEGUN}, 0);
const [startMs, intervalMs] = schedule;
const nowMs = () => Number(process.hrtime.bigint()) / 1e6;
const takeIdle = () => {
  for (let c = 0; c < fds.length; c++) if (Atomics.compareExchange(state, c, ${IDLE}, ${BUSY}) === ${IDLE}) return c;
  return -1;
};
const write = (c, index) => {
  let at = offsets[index];
  const end = offsets[index + 1];
  while (at < end) {
    try {
      at += writeSync(fds[c], heads, at, end - at);
    } catch (error) {
      if (error.code === 'EAGAIN') continue;
      Atomics.store(state, c, ${DEAD});
      Atomics.add(control, ${FAILED}, 1);
      return;
    }
  }
};
let next = 0;
let known = 0;
while (next < total && Atomics.load(control, ${STOP}) === 0) {
  const now = nowMs();
  const due = Math.min(total, Math.floor((now - startMs) / intervalMs) + 1);
  // The generator's own lateness: how long after its due time the worker learnt that a request was due.
  for (; known < due; known++) sendLag[known] = now - (startMs + known * intervalMs);
  while (next < known) {
    const c = takeIdle();
    if (c < 0) break;
    Atomics.store(carries, c, next);
    write(c, next);
    next += 1;
    Atomics.store(control, ${HANDLED}, next);
  }
  if (next >= total) break;
  const untilNextDue = known < total ? startMs + known * intervalMs - nowMs() : 1000;
  if (next < known) {
    // Every connection busy: wait for one to be freed (or for the next due time, to note its lateness).
    Atomics.store(control, ${BACKLOG}, 1);
    const freed = Atomics.load(control, ${FREED});
    let any = false;
    for (let c = 0; c < fds.length; c++) if (Atomics.load(state, c) === ${IDLE}) any = true;
    if (!any && untilNextDue > 0) Atomics.wait(control, ${FREED}, freed, untilNextDue);
    Atomics.store(control, ${BACKLOG}, 0);
  } else if (untilNextDue > 0) Atomics.wait(control, ${SLEEP}, 0, untilNextDue);
}
`;

export class PacedSender {
  /** Per connection: IDLE, BUSY or DEAD. */
  readonly state: Int32Array;
  /** Per connection: the index of the request it carries. */
  readonly carries: Int32Array;
  /** Per request: how late the worker learnt it was due (ms). */
  readonly sendLag: Float64Array;
  private readonly control = new Int32Array(new SharedArrayBuffer(7 * Int32Array.BYTES_PER_ELEMENT));
  /** Start and interval (ms), written by begin(). */
  private readonly schedule = new Float64Array(new SharedArrayBuffer(2 * Float64Array.BYTES_PER_ELEMENT));
  private worker: Worker | undefined;

  /** `heads`: every request's bytes, in order; `fds`: the connections' socket descriptors. */
  constructor(
    private readonly fds: readonly number[],
    private readonly heads: readonly Buffer[],
  ) {
    this.state = new Int32Array(new SharedArrayBuffer(fds.length * Int32Array.BYTES_PER_ELEMENT));
    this.carries = new Int32Array(new SharedArrayBuffer(fds.length * Int32Array.BYTES_PER_ELEMENT));
    this.sendLag = new Float64Array(new SharedArrayBuffer(heads.length * Float64Array.BYTES_PER_ELEMENT));
  }

  /** This thread's reading of the worker's clock (ms). */
  static nowMs(): number {
    return Number(process.hrtime.bigint()) / 1e6;
  }

  /** Starts the worker, which waits for begin(). */
  async start(): Promise<void> {
    const size = this.heads.reduce((sum, head) => sum + head.length, 0);
    const heads = new Uint8Array(new SharedArrayBuffer(size));
    const offsets = new Int32Array(new SharedArrayBuffer((this.heads.length + 1) * Int32Array.BYTES_PER_ELEMENT));
    let at = 0;
    this.heads.forEach((head, index) => {
      offsets[index] = at;
      heads.set(head, at);
      at += head.length;
    });
    offsets[this.heads.length] = at;
    const { state, carries, control, sendLag, schedule } = this;
    this.worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { fds: this.fds, heads, offsets, state, carries, control, sendLag, schedule, total: this.heads.length } });
    this.worker.on('error', (error) => process.stderr.write(`paced sender: ${error.stack ?? String(error)}\n`));
    await new Promise<void>((resolve) => this.worker?.once('online', () => resolve()));
  }

  /** Request `i` is due at `startMs + i * intervalMs` (PacedSender.nowMs's clock). */
  begin(startMs: number, intervalMs: number): void {
    this.schedule.set([startMs, intervalMs]);
    Atomics.store(this.control, BEGUN, 1);
    Atomics.notify(this.control, BEGUN);
  }

  /** Connection `c` has its whole answer: it may carry the next request. */
  free(c: number): void {
    Atomics.compareExchange(this.state, c, BUSY, IDLE);
    if (Atomics.load(this.control, BACKLOG) === 1) {
      Atomics.add(this.control, FREED, 1);
      Atomics.notify(this.control, FREED);
    }
  }

  /** Connection `c` closed or failed: nothing more is written to it. */
  kill(c: number): void {
    Atomics.store(this.state, c, DEAD);
  }

  /** Requests the worker could not write; requests it has written or failed so far. */
  get failed(): number {
    return Atomics.load(this.control, FAILED);
  }

  get handled(): number {
    return Atomics.load(this.control, HANDLED);
  }

  /** Stops the worker (before the sockets close: it must not write to a descriptor that may be reused). */
  async stop(): Promise<void> {
    Atomics.store(this.control, STOP, 1);
    Atomics.store(this.control, BEGUN, 1);
    Atomics.notify(this.control, BEGUN);
    Atomics.notify(this.control, SLEEP);
    Atomics.add(this.control, FREED, 1);
    Atomics.notify(this.control, FREED);
    await this.worker?.terminate();
  }
}

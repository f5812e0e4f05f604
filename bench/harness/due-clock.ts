import { Worker } from 'node:worker_threads';

/**
 * Wakes the load generator's event loop when each request of an open-loop run is due, with sub-millisecond
 * precision and without spinning a core (issue 19). A JavaScript timer cannot: libuv keeps its clock and the poll
 * timeout in whole milliseconds, so a `setTimeout` for a request due in 0.2 ms fires up to ~1 ms late, and at 5,000/s
 * every wake-up sent ~5 requests, the first of them late by up to a millisecond (bench/README.md, "Introspection
 * p99 at 5,000/s: where the tail comes from").
 *
 * Here a worker thread sleeps in `Atomics.wait` with a fractional timeout (a futex wait: the kernel's high-resolution
 * timers, ~50 µs of timer slack) until the next due time, then bumps a shared counter and `Atomics.notify`s it. The
 * sending thread waits on that counter with `Atomics.waitAsync`, whose wake-up V8 posts as a task to the event loop
 * (libuv's async handle: an eventfd write that ends the poll at once). Both threads sleep between due times; a
 * notify that finds the sending thread busy wakes nobody, and the sending thread, when it comes back, sees the
 * counter moved and sends everything due by then.
 *
 * The worker reads time from `process.hrtime` (one monotonic clock for every thread of the process); the due times
 * it is given are on that clock, in ms.
 */

/** The worker's code, plain JavaScript evaluated as is (the load generator runs under tsx; a worker would not). */
const WORKER_SOURCE = `
const { workerData } = require('node:worker_threads');
const { cells, schedule } = workerData;
// Until begin(): index 2 turns 1 when the schedule is written.
Atomics.wait(cells, 2, 0);
const [startMs, intervalMs, total] = schedule;
const nowMs = () => Number(process.hrtime.bigint()) / 1e6;
let next = 1;
while (next < total && Atomics.load(cells, 1) === 0) {
  const delay = startMs + next * intervalMs - nowMs();
  // Index 3 never changes: the wait ends by its timeout, or early by stop()'s notify.
  if (delay > 0) Atomics.wait(cells, 3, 0, delay);
  if (Atomics.load(cells, 1) !== 0) break;
  next = Math.min(total, Math.floor((nowMs() - startMs) / intervalMs) + 1);
  Atomics.store(cells, 0, next);
  Atomics.notify(cells, 0);
}
`;

/** ES2024's Atomics.waitAsync (in V8 since Node 16), typed here because the project's TypeScript lib is older. */
const waitAsync = (Atomics as unknown as {
  waitAsync(array: Int32Array, index: number, value: number): { async: false; value: 'not-equal' | 'timed-out' } | { async: true; value: Promise<'ok' | 'timed-out'> };
}).waitAsync;

export class DueClock {
  private stopped = false;

  /**
   * `cells`: [0] requests due so far (written by the worker), [1] stop flag, [2] 1 once the schedule is written,
   * [3] the cell the worker sleeps on; `schedule`: start (ms), interval (ms), number of requests.
   */
  private constructor(
    private readonly worker: Worker,
    private readonly cells: Int32Array,
    private readonly schedule: Float64Array,
  ) {}

  /** This thread's reading of the worker's clock (ms). */
  static nowMs(): number {
    return Number(process.hrtime.bigint()) / 1e6;
  }

  /**
   * Starts the worker (it sleeps until begin()). `onDue` runs on this thread every time the worker says requests
   * came due; it sends all that are due by now (the worker's count is only the wake-up).
   */
  static async start(onDue: () => void): Promise<DueClock> {
    const cells = new Int32Array(new SharedArrayBuffer(4 * Int32Array.BYTES_PER_ELEMENT));
    const schedule = new Float64Array(new SharedArrayBuffer(3 * Float64Array.BYTES_PER_ELEMENT));
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { cells, schedule } });
    worker.on('error', (error) => process.stderr.write(`due clock: ${error.stack ?? String(error)}\n`));
    await new Promise<void>((resolve) => worker.once('online', () => resolve()));
    const clock = new DueClock(worker, cells, schedule);
    clock.listen(onDue);
    return clock;
  }

  /**
   * Request `i` is due at `startMs + i * intervalMs` (DueClock.nowMs's clock), for `total` requests; the worker
   * wakes this thread from request 1 on (request 0, due at the start, is the caller's to send).
   */
  begin(startMs: number, intervalMs: number, total: number): void {
    this.schedule.set([startMs, intervalMs, total]);
    Atomics.store(this.cells, 2, 1);
    Atomics.notify(this.cells, 2);
  }

  private listen(onDue: () => void): void {
    let seen = 0;
    const wait = (): void => {
      while (!this.stopped) {
        const waited = waitAsync(this.cells, 0, seen);
        if (waited.async) {
          void waited.value.then(() => {
            if (this.stopped) return;
            seen = Atomics.load(this.cells, 0);
            onDue();
            wait();
          });
          return;
        }
        // The counter moved while this thread was busy: what it announced is due now.
        seen = Atomics.load(this.cells, 0);
        onDue();
      }
    };
    wait();
  }

  /** Ends the worker's sleep and this thread's wait (a pending waitAsync is released by one last notify). */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    Atomics.store(this.cells, 1, 1);
    Atomics.store(this.cells, 2, 1);
    Atomics.notify(this.cells, 2);
    Atomics.notify(this.cells, 3);
    Atomics.add(this.cells, 0, 1);
    Atomics.notify(this.cells, 0);
    await this.worker.terminate();
  }
}

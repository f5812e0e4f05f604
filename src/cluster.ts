import cluster, { type Worker } from 'node:cluster';
import type { Logger } from 'pino';
import { isWorkerReady } from './cluster-messages.js';
import { serveClusterMetrics } from './observability/cluster-metrics.js';

/** How long the primary waits for the workers' own graceful stop (10 s drain + store close) before killing them. */
const STOP_DEADLINE_MS = 15_000;

/**
 * The primary of `workers: N` (node:cluster). It serves no request: it forks N workers, which each run the whole
 * proxy and share every listener (the primary accepts connections and hands them out round-robin, Node's default
 * on Linux), answers the ops listener's /metrics with the sum over the workers, replaces a worker that dies once it
 * was serving, and on SIGTERM/SIGINT lets every worker drain, then exits. A worker that dies before it served
 * (a port taken, Redis refusing a password) would die again: the primary then stops all and exits 1.
 */
export function runPrimary(count: number, logger: Logger): Promise<number> {
  serveClusterMetrics();
  const ready = new Set<number>();
  let announced = false;
  let stopping = false;
  let exitCode = 0;

  return new Promise<number>((resolve) => {
    const fork = (): Worker => cluster.fork();
    // Not dead yet: a worker's 'exit' can come before its IPC 'disconnect', and until both cluster.workers still
    // lists it — counting it then would leave the primary waiting for an exit that already happened.
    const living = () => Object.values(cluster.workers ?? {}).filter((worker): worker is Worker => worker !== undefined && !worker.isDead());

    const stop = (reason: string, code: number) => {
      if (stopping) return;
      stopping = true;
      exitCode = code;
      logger.info({ reason, workers: living().length }, 'cluster.stopping');
      // SIGTERM, not worker.kill(): kill() disconnects first, which closes the worker's servers without its drain.
      for (const worker of living()) worker.process.kill('SIGTERM');
      const deadline = setTimeout(() => {
        for (const worker of living()) {
          logger.error({ worker: worker.id, pid: worker.process.pid }, 'cluster.worker_stop_timeout');
          worker.process.kill('SIGKILL');
        }
      }, STOP_DEADLINE_MS);
      deadline.unref();
      if (living().length === 0) finish();
    };
    const finish = () => {
      logger.info({ exit_code: exitCode }, 'cluster.stopped');
      resolve(exitCode);
    };

    cluster.on('message', (worker, message: unknown) => {
      if (!isWorkerReady(message)) return;
      ready.add(worker.id);
      if (!announced && ready.size >= count) {
        announced = true;
        logger.info({ workers: count, pids: living().map((w) => w.process.pid) }, 'cluster.started');
      }
    });

    cluster.on('exit', (worker, code, signal) => {
      const served = ready.delete(worker.id);
      if (stopping) {
        if (code !== 0 && signal !== 'SIGTERM') exitCode = 1;
        if (living().length === 0) finish();
        return;
      }
      if (!served) {
        logger.error({ worker: worker.id, pid: worker.process.pid, code, signal }, 'cluster.worker_start_failed');
        stop('worker_start_failed', 1);
        return;
      }
      const replacement = fork();
      logger.warn({ worker: worker.id, pid: worker.process.pid, code, signal, replacement: replacement.id, replacement_pid: replacement.process.pid }, 'cluster.worker_died');
    });

    process.once('SIGTERM', () => stop('SIGTERM', 0));
    process.once('SIGINT', () => stop('SIGINT', 0));
    for (let i = 0; i < count; i++) fork();
  });
}

import { IpcChannel, startNodeChild } from './child-processes.js';
import type { LoadJob, LoadResult } from './load-jobs.js';

/** The load-generator process (bench/load-generator.ts), one job at a time. */
export class LoadGenerator {
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly channel: IpcChannel<{ job: LoadJob }, { result: unknown }>,
    private readonly stopChild: () => Promise<void>,
  ) {}

  static async start(): Promise<LoadGenerator> {
    const started = await startNodeChild('bench/load-generator.ts', { logName: 'load-generator' });
    return new LoadGenerator(new IpcChannel(started.child), async () => {
      started.child.disconnect();
      await started.exited;
    });
  }

  run<J extends LoadJob>(job: J): Promise<LoadResult<J>> {
    // Jobs never overlap: two at once would measure each other.
    const next = this.queue.then(() => this.channel.request({ job })).then((reply) => reply.result as LoadResult<J>);
    this.queue = next.catch(() => undefined);
    return next;
  }

  async stop(): Promise<void> {
    await this.stopChild();
  }
}

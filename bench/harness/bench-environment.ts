import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startRedis, type RunningRedis } from '../../test/support/redis-server.js';
import { startUpstream, type Upstream } from '../../test/support/upstream-server.js';
import { pinOrchestrator } from './cpu-pinning.js';
import { settingsFromArgs, type BenchSettings } from './bench-settings.js';
import { LoadGenerator } from './load-generator-client.js';
import { startNginx, type RunningNginx } from './nginx.js';
import { renderTable, writeResults, type ScenarioResult } from './report.js';

/**
 * What several scenarios share, started on first use and stopped once: the fast upstream (in this process, which
 * only waits while the load runs), a private Redis, nginx in front of the upstream, and the load-generator process.
 * Proxies, the OP and the homeserver double belong to the scenario that needs them.
 */
export class BenchEnvironment {
  private readonly started: (() => Promise<void>)[] = [];
  private readonly memo = new Map<string, Promise<unknown>>();
  readonly tempDir = mkdtempSync(join(tmpdir(), 'mcp-bench-'));

  /** Set when BENCH_PROXY_CPUS pins the proxies apart from everything else (cpu-pinning.ts); said in the results. */
  readonly pinning: string | undefined;

  constructor(readonly settings: BenchSettings) {
    this.pinning = pinOrchestrator();
    if (this.pinning !== undefined) process.stdout.write(`[bench] ${this.pinning}\n`);
  }

  upstream(): Promise<Upstream> {
    return this.once('upstream', async () => {
      const upstream = await startUpstream();
      // The recorder keeps every request it saw; a benchmark sends millions.
      const trim = setInterval(() => upstream.requests.splice(0), 1000);
      trim.unref();
      return { value: upstream, stop: () => upstream.close() };
    });
  }

  /** A private redis-server (never REDIS_URL: the memory scenario reads INFO and must be alone on it). */
  redis(): Promise<RunningRedis> {
    return this.once('redis', async () => {
      const redis = await startRedis({ ignoreEnv: true });
      return { value: redis, stop: () => redis.stop() };
    });
  }

  /** nginx with `workers` worker processes (1: no master process). */
  nginx(workers = 1): Promise<RunningNginx> {
    return this.once(workers === 1 ? 'nginx' : `nginx-${workers}`, async () => {
      const nginx = await startNginx((await this.upstream()).url, workers);
      return { value: nginx, stop: () => nginx.stop() };
    });
  }

  loadGenerator(): Promise<LoadGenerator> {
    return this.once('load-generator', async () => {
      const generator = await LoadGenerator.start();
      return { value: generator, stop: () => generator.stop() };
    });
  }

  async close(): Promise<void> {
    for (const stop of this.started.reverse()) await stop().catch(() => undefined);
    rmSync(this.tempDir, { recursive: true, force: true });
  }

  private once<T>(name: string, start: () => Promise<{ value: T; stop: () => Promise<void> }>): Promise<T> {
    let started = this.memo.get(name) as Promise<T> | undefined;
    if (started === undefined) {
      started = start().then(({ value, stop }) => {
        this.started.push(stop);
        return value;
      });
      this.memo.set(name, started);
    }
    return started;
  }
}

export type Scenario = (env: BenchEnvironment) => Promise<ScenarioResult>;

/** Whether this module is the script node was started with (scenario files run alone or from run-all). */
export function isEntryPoint(moduleUrl: string): boolean {
  return process.argv[1] !== undefined && fileURLToPath(moduleUrl) === process.argv[1];
}

/** `node --import tsx bench/<scenario>.ts [--smoke]`: one scenario, its table, its JSON file. */
export async function runStandalone(name: string, scenario: Scenario): Promise<void> {
  const settings = settingsFromArgs();
  const env = new BenchEnvironment(settings);
  const startedAt = new Date();
  try {
    const result = await scenario(env);
    process.stdout.write(`\n${renderTable([result])}\n`);
    process.stdout.write(`\nresults: ${writeResults(name, settings, [result], startedAt)}\n`);
  } finally {
    await env.close();
  }
  process.exit(0);
}

/** Progress on stderr, so stdout stays the table. */
export function progress(message: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}

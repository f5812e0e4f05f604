import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';

export interface RunningRedis {
  readonly url: string;
  readonly host: string;
  readonly port: number;
  stop(): Promise<void>;
  /**
   * SIGSTOP / SIGCONT the private server: connections stay open and commands queue unanswered — a hung Redis, not a
   * refused one. Commands sent meanwhile run when it is thawed. Throws for a REDIS_URL server.
   */
  freeze(): void;
  thaw(): void;
}

export interface StartRedisOptions {
  /** Start a private server even when REDIS_URL is set (tests that kill the server or need cluster mode). */
  readonly ignoreEnv?: boolean;
  /** Extra redis-server arguments, e.g. ['--cluster-enabled', 'yes']; they override the defaults. */
  readonly extraArgs?: readonly string[];
  /** A port chosen by the caller (already named in other servers' configs) instead of a free one found here. */
  readonly port?: number;
}

const REDIS_SERVER = process.env['REDIS_SERVER_BIN'] ?? 'redis-server';
const STARTUP_TIMEOUT_MS = 10_000;
const running = new Set<ChildProcess>();

// A crashed or interrupted test run must not leave servers behind.
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/**
 * A real Redis for tests: REDIS_URL when set (stop() is then a no-op), otherwise a private redis-server on a free
 * loopback port, without persistence, removed again by stop().
 */
export async function startRedis(options: StartRedisOptions = {}): Promise<RunningRedis> {
  const fromEnv = process.env['REDIS_URL'];
  if (fromEnv !== undefined && fromEnv !== '' && options.ignoreEnv !== true) {
    const url = new URL(fromEnv);
    const notOurs = () => {
      throw new Error('REDIS_URL names a server this test did not start: use ignoreEnv to freeze one');
    };
    return { url: fromEnv, host: url.hostname, port: Number(url.port || 6379), stop: async () => {}, freeze: notOurs, thaw: notOurs };
  }
  // The free port is found by binding and releasing it; another process may take it in between, so retry.
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt += 1) {
    try {
      const port = options.port ?? (await freeLoopbackPort());
      return await spawnRedis(port, (dir) => [
        ...['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
        ...(options.extraArgs ?? []),
      ]);
    } catch (error) {
      if (error instanceof RedisServerMissing) throw error;
      lastError = error;
    }
  }
  throw lastError;
}

/**
 * A one-node Redis Cluster owning all 16384 slots: enough to exercise ioredis' Cluster client and Redis' cross-slot
 * rules (which apply on a single node too). Redis holds a fresh master's cluster state at "fail" for about two
 * seconds after boot, so start it early and in parallel with other setup.
 */
export async function startRedisCluster(): Promise<RunningRedis> {
  // Without an announced address the node reports its IP as "" in CLUSTER SLOTS, which clients cannot dial.
  const node = await startRedis({
    ignoreEnv: true,
    extraArgs: ['--cluster-enabled', 'yes', '--cluster-announce-ip', '127.0.0.1'],
  });
  const admin = new Redis({ host: node.host, port: node.port, lazyConnect: true });
  try {
    await admin.connect();
    await admin.call('CLUSTER', 'ADDSLOTSRANGE', '0', '16383');
    for (let polls = 0; ; polls += 1) {
      const info = String(await admin.call('CLUSTER', 'INFO'));
      if (info.includes('cluster_state:ok')) break;
      if (polls > 200) throw new Error(`cluster did not become ready: ${info}`);
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  } catch (error) {
    await node.stop();
    throw error;
  } finally {
    admin.disconnect();
  }
  return node;
}

class RedisServerMissing extends Error {}

/** A Sentinel on a free loopback port that monitors `master` under `name` (quorum 1). */
export async function startRedisSentinel(master: RunningRedis, name: string): Promise<RunningRedis> {
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt += 1) {
    try {
      const port = await freeLoopbackPort();
      return await spawnRedis(port, async (dir) => {
        // Sentinel insists on a writable config file of its own.
        const config = join(dir, 'sentinel.conf');
        await writeFile(config, `sentinel monitor ${name} ${master.host} ${master.port} 1\n`);
        return [config, '--sentinel', '--port', String(port), '--bind', '127.0.0.1', '--dir', dir];
      }, /\+monitor master/);
    } catch (error) {
      if (error instanceof RedisServerMissing) throw error;
      lastError = error;
    }
  }
  throw lastError;
}

async function spawnRedis(
  port: number,
  argumentsFor: (dir: string) => readonly string[] | Promise<readonly string[]>,
  // A Sentinel never logs "Ready to accept connections".
  readyLine = /Ready to accept connections/,
): Promise<RunningRedis> {
  const dir = await mkdtemp(join(tmpdir(), 'mcp-redis-'));
  const child = spawn(REDIS_SERVER, await argumentsFor(dir), { stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
    running.delete(child);
    await rm(dir, { recursive: true, force: true });
  };

  try {
    await new Promise<void>((resolve, reject) => {
      let output = '';
      const timer = setTimeout(
        () => reject(new Error(`redis-server did not start in time:\n${output}`)),
        STARTUP_TIMEOUT_MS,
      );
      const settle = (error?: Error) => {
        clearTimeout(timer);
        if (error === undefined) resolve();
        else reject(error);
      };
      child.once('error', (error: NodeJS.ErrnoException) => {
        settle(
          error.code === 'ENOENT'
            ? new RedisServerMissing(`${REDIS_SERVER} not found; install redis-server: apt-get install -y redis-server`)
            : error,
        );
      });
      child.once('exit', (code) => settle(new Error(`redis-server exited with ${code}:\n${output}`)));
      const collect = (chunk: Buffer) => {
        output += chunk.toString();
        if (readyLine.test(output)) settle();
      };
      child.stdout.on('data', collect);
      child.stderr.on('data', collect);
    });
    await answersPing(port);
  } catch (error) {
    await stop();
    throw error;
  }
  // Keep draining the pipes so a chatty server never blocks on a full buffer.
  child.stdout.removeAllListeners('data').resume();
  child.stderr.removeAllListeners('data').resume();
  const signal = (name: NodeJS.Signals) => () => {
    if (child.exitCode === null && child.signalCode === null) child.kill(name);
  };
  return { url: `redis://127.0.0.1:${port}`, host: '127.0.0.1', port, stop, freeze: signal('SIGSTOP'), thaw: signal('SIGCONT') };
}

async function answersPing(port: number): Promise<void> {
  const probe = new Redis({
    host: '127.0.0.1',
    port,
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  try {
    await probe.connect();
    const reply = await probe.ping();
    if (reply !== 'PONG') throw new Error(`unexpected PING reply ${reply}`);
  } finally {
    probe.disconnect();
  }
}

async function freeLoopbackPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === 'string') throw new Error('no port assigned');
  return address.port;
}

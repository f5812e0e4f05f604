import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { createServer, get, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { freePort } from '../support/free-port.js';
import { startRedis, type RunningRedis } from '../support/redis-server.js';

/*
 * `workers: N` (issue 19) with real processes: the CLI's primary forks N workers sharing one client listener and one
 * ops listener, on a real Redis. Which worker served a request is read from the kernel (/proc/PID/io: bytes written),
 * not from anything the proxy reports about itself.
 */

const CLI = ['--import', 'tsx', 'test/support/run-cli.ts'];
const BIG = 64 * 1024;

function config(port: number, metricsPort: number, homeserverUrl: string, extra: Record<string, unknown>): Record<string, unknown> {
  return {
    server_name: 'example.test',
    public_baseurl: `http://127.0.0.1:${port}/`,
    listen: { host: '127.0.0.1', port },
    homeserver: { url: homeserverUrl, secret: 'a-homeserver-secret-of-enough-length' },
    sessions: { encryption_key: 'an-encryption-key-for-cli-tests-0123456789' },
    metrics: { enabled: true, listen: { host: '127.0.0.1', port: metricsPort } },
    log: { level: 'info' },
    ...extra,
  };
}

async function writeConfig(body: Record<string, unknown>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'mcp-workers-'));
  const path = join(dir, 'config.yaml');
  await writeFile(path, stringify(body));
  return path;
}

/** One GET on a fresh connection (no keep-alive), so the primary hands each one to the next worker. */
function getOnce(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    get(url, { agent: false, headers: { connection: 'close' } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    }).on('error', reject);
  });
}

function bytesWritten(pid: number): number {
  const match = /^wchar: (\d+)$/m.exec(readFileSync(`/proc/${pid}/io`, 'utf8'));
  return Number(match?.[1] ?? Number.NaN);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function events(output: string, event: string): Record<string, unknown>[] {
  return output
    .split('\n')
    .filter((line) => line.startsWith('{') && line.includes(`"${event}"`))
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .filter((line) => line['msg'] === event);
}

async function until(what: string, condition: () => boolean, output: () => string, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen:\n${output()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('--check-config and workers', () => {
  test('workers above 1, or auto, with the in-memory store is refused; with Redis it is valid', async () => {
    for (const workers of [2, 'auto']) {
      const run = spawnSync(process.execPath, [...CLI, '--config', await writeConfig(config(8009, 9009, 'http://127.0.0.1:8008', { workers })), '--check-config'], { encoding: 'utf8' });
      assert.equal(run.status, 1, run.stdout);
      assert.match(run.stderr, /workers: the in-memory store cannot be shared by several workers/);
    }
    const withRedis = config(8009, 9009, 'http://127.0.0.1:8008', { workers: 'auto', store: { redis_url: 'redis://127.0.0.1:6379/0' } });
    const run = spawnSync(process.execPath, [...CLI, '--config', await writeConfig(withRedis), '--check-config'], { encoding: 'utf8' });
    assert.equal(run.status, 0, run.stderr);
    const zero = spawnSync(process.execPath, [...CLI, '--config', await writeConfig({ ...withRedis, workers: 0 }), '--check-config'], { encoding: 'utf8' });
    assert.equal(zero.status, 1);
    assert.match(zero.stderr, /workers: must be greater than 0/);
  });
});

describe('workers: 2 on Redis — both answer, a dead one is replaced, metrics are summed, SIGTERM drains all', () => {
  let redis: RunningRedis;
  let homeserver: Server;
  let child: ChildProcess;
  let output = '';
  let port: number;
  let metricsPort: number;
  let pids: number[] = [];
  let passthroughSent = 0;

  before(async () => {
    redis = await startRedis();
    homeserver = createServer((req, res) => {
      if (req.url === '/slow') {
        setTimeout(() => res.writeHead(200, { 'content-type': 'text/plain' }).end('finished'), 1000);
        return;
      }
      if (req.url === '/big') {
        res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(Buffer.alloc(BIG, 7));
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"versions":["v1.11"]}');
    });
    await new Promise<void>((resolve) => homeserver.listen(0, '127.0.0.1', resolve));
    const address = homeserver.address();
    const homeserverUrl = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
    port = await freePort();
    metricsPort = await freePort();
    const path = await writeConfig(config(port, metricsPort, homeserverUrl, { workers: 2, store: { redis_url: redis.url, key_prefix: 'workers-test:' } }));
    child = spawn(process.execPath, [...CLI, '--config', path], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    await until('cluster.started', () => events(output, 'cluster.started').length > 0 || child.exitCode !== null, () => output, 60_000);
    assert.equal(child.exitCode, null, output);
    pids = events(output, 'cluster.started')[0]?.['pids'] as number[];
  });
  after(async () => {
    if (child.exitCode === null) child.kill('SIGKILL');
    // Workers stop on their own when the primary's channel closes; make sure none outlives the test.
    await new Promise((resolve) => setTimeout(resolve, 200));
    for (const pid of pids) if (alive(pid)) process.kill(pid, 'SIGKILL');
    await new Promise<void>((resolve) => homeserver.close(() => resolve()));
    await redis.stop();
  });

  test('two worker processes, each serving part of the requests on the one client port', async () => {
    assert.equal(pids.length, 2);
    assert.notEqual(pids[0], pids[1]);
    const before = pids.map(bytesWritten);
    const answers = [];
    for (let i = 0; i < 40; i++) answers.push(await getOnce(`http://127.0.0.1:${port}/big`));
    passthroughSent += 40;
    for (const answer of answers) assert.deepEqual([answer.status, answer.body.length], [200, BIG]);
    // Every served /big writes 64 KiB to the client: a worker that served none wrote far less than ten of them.
    const grown = pids.map((pid, i) => bytesWritten(pid) - (before[i] ?? 0));
    for (const bytes of grown) assert.ok(bytes >= 10 * BIG, `bytes written per worker: ${grown.join(', ')}`);
  });

  test('/metrics on the ops listener sums the workers', async () => {
    for (let i = 0; i < 20; i++) assert.equal((await getOnce(`http://127.0.0.1:${port}/_matrix/client/versions`)).status, 200);
    passthroughSent += 20;
    // Several scrapes, each answered by whichever worker got the connection: all give the cluster-wide count.
    for (let i = 0; i < 4; i++) {
      const metrics = (await getOnce(`http://127.0.0.1:${metricsPort}/metrics`)).body;
      const count = /^mcp_http_requests_total\{route="passthrough",method="GET",status="200"\} (\d+)$/m.exec(metrics)?.[1];
      assert.equal(Number(count), passthroughSent, metrics.slice(0, 2000));
    }
  });

  test('a worker killed with SIGKILL is logged and replaced; the port keeps answering', async () => {
    const victim = pids[0] ?? 0;
    process.kill(victim, 'SIGKILL');
    await until('cluster.worker_died', () => events(output, 'cluster.worker_died').length > 0, () => output);
    const died = events(output, 'cluster.worker_died')[0] ?? {};
    assert.equal(died['pid'], victim);
    assert.equal(died['signal'], 'SIGKILL');
    const replacement = died['replacement_pid'] as number;
    assert.ok(alive(replacement));
    await until('the replacement started', () => events(output, 'proxy.started').length >= 3, () => output);
    for (let i = 0; i < 10; i++) assert.equal((await getOnce(`http://127.0.0.1:${port}/_matrix/client/versions`)).status, 200);
    pids = [replacement, pids[1] ?? 0];
  });

  test('SIGTERM: every worker finishes its in-flight requests, then all exit and the primary exits 0', async () => {
    const inFlight = Array.from({ length: 4 }, () => getOnce(`http://127.0.0.1:${port}/slow`));
    await new Promise((resolve) => setTimeout(resolve, 300));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const signalled = Date.now();
    child.kill('SIGTERM');
    for (const answer of await Promise.all(inFlight)) assert.deepEqual(answer, { status: 200, body: 'finished' });
    assert.equal(await exited, 0, output);
    assert.ok(Date.now() - signalled < 8000, `exit took ${Date.now() - signalled} ms`);
    for (const pid of pids) assert.equal(alive(pid), false, `worker ${pid} still running`);
    assert.ok(events(output, 'proxy.stopped').length >= 2, output);
    assert.equal(events(output, 'cluster.stopped').length, 1);
    await assert.rejects(getOnce(`http://127.0.0.1:${port}/health`));
  });
});

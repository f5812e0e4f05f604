import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { stringify } from 'yaml';
import { createLogger } from '../../src/observability/logger.js';
import { freePort } from '../support/free-port.js';

const CLI = ['--import', 'tsx', 'test/support/run-cli.ts'];

function baseConfig(port: number, metricsPort: number, homeserverUrl: string): Record<string, unknown> {
  return {
    server_name: 'example.test',
    public_baseurl: `http://127.0.0.1:${port}/`,
    listen: { host: '127.0.0.1', port },
    homeserver: { url: homeserverUrl, secret: 'a-homeserver-secret-of-enough-length' },
    sessions: { encryption_key: 'an-encryption-key-for-cli-tests-0123456789' },
    metrics: { enabled: true, listen: { host: '127.0.0.1', port: metricsPort } },
    log: { level: 'info' },
  };
}

async function writeConfig(config: Record<string, unknown>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'mcp-cli-'));
  const path = join(dir, 'config.yaml');
  await writeFile(path, stringify(config));
  return path;
}

describe('--check-config', () => {
  test('a valid configuration exits 0', async () => {
    const path = await writeConfig(baseConfig(8009, 9009, 'http://127.0.0.1:8008'));
    const run = spawnSync(process.execPath, [...CLI, '--config', path, '--check-config'], { encoding: 'utf8' });
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /is valid/);
  });

  test('every problem is printed with its key path, exit 1', async () => {
    const config = baseConfig(8009, 9009, 'not a url');
    config['oidc_providers'] = [
      { idp_id: 'kc', issuer: 'keycloak.example', client_id: 'x', client_secret: 's', user_mapping_provider: { config: { localpart_template: '{{ user.name ' } } },
    ];
    config['surprise'] = true;
    const path = await writeConfig(config);
    const run = spawnSync(process.execPath, [...CLI, '--config', path, '--check-config'], { encoding: 'utf8' });
    assert.equal(run.status, 1);
    assert.match(run.stderr, /homeserver\.url: /);
    assert.match(run.stderr, /oidc_providers\[0\]\.issuer: /);
    assert.match(run.stderr, /surprise: /);
  });

  test('a template syntax error is a configuration problem naming the template', async () => {
    const config = baseConfig(8009, 9009, 'http://127.0.0.1:8008');
    config['oidc_providers'] = [
      { idp_id: 'kc', issuer: 'https://kc.example/realms/m', client_id: 'x', client_secret: 's', user_mapping_provider: { config: { localpart_template: '{{ user.name ' } } },
    ];
    const run = spawnSync(process.execPath, [...CLI, '--config', await writeConfig(config), '--check-config'], { encoding: 'utf8' });
    assert.equal(run.status, 1);
    assert.match(run.stderr, /oidc_providers\[0\]\.user_mapping_provider\.config\.localpart_template: /);
  });

  test('a missing --config is a usage error', () => {
    const run = spawnSync(process.execPath, CLI, { encoding: 'utf8' });
    assert.equal(run.status, 2);
    assert.match(run.stderr, /--config FILE is required/);
  });
});

describe('a running proxy process: health, readiness, metrics, graceful shutdown', () => {
  let homeserver: Server;
  let homeserverUp = true;
  let child: ChildProcess;
  let output = '';
  let port: number;
  let metricsPort: number;

  before(async () => {
    homeserver = createServer((req, res) => {
      if (!homeserverUp) {
        res.writeHead(503).end();
        return;
      }
      if (req.url === '/slow') {
        setTimeout(() => res.writeHead(200, { 'content-type': 'text/plain' }).end('finished'), 800);
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"versions":["v1.11"]}');
    });
    await new Promise<void>((resolve) => homeserver.listen(0, '127.0.0.1', resolve));
    const address = homeserver.address();
    const homeserverUrl = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
    port = await freePort();
    metricsPort = await freePort();
    const path = await writeConfig(baseConfig(port, metricsPort, homeserverUrl));
    child = spawn(process.execPath, [...CLI, '--config', path], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const deadline = Date.now() + 20_000;
    while (!output.includes('proxy.started')) {
      if (Date.now() > deadline || child.exitCode !== null) throw new Error(`proxy did not start:\n${output}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  });
  after(async () => {
    if (child.exitCode === null) child.kill('SIGKILL');
    await new Promise<void>((resolve) => homeserver.close(() => resolve()));
  });

  test('JSON logs; the in-memory store warns at start-up', () => {
    const lines = output.split('\n').filter((line) => line.startsWith('{'));
    assert.ok(lines.length > 0);
    for (const line of lines) JSON.parse(line);
    assert.ok(lines.some((line) => line.includes('store.memory')));
  });

  test('/health and /ready on the main and ops listeners; /ready follows the homeserver', async () => {
    for (const base of [`http://127.0.0.1:${port}`, `http://127.0.0.1:${metricsPort}`]) {
      assert.equal((await fetch(`${base}/health`)).status, 200);
      assert.equal((await fetch(`${base}/ready`)).status, 200);
    }
    // Details (with error text) only for operators, not on the public listener.
    const opsReady = (await (await fetch(`http://127.0.0.1:${metricsPort}/ready`)).json()) as { checks?: Record<string, string> };
    assert.equal(opsReady.checks?.['store'], 'ok');
    const publicReady = (await (await fetch(`http://127.0.0.1:${port}/ready`)).json()) as { checks?: Record<string, string> };
    assert.equal(publicReady.checks, undefined);
    homeserverUp = false;
    const notReady = await fetch(`http://127.0.0.1:${port}/ready`);
    assert.equal(notReady.status, 503);
    homeserverUp = true;
  });

  test('Prometheus metrics on the ops listener only', async () => {
    await fetch(`http://127.0.0.1:${port}/_matrix/client/versions`);
    await fetch(`http://127.0.0.1:${port}/_matrix/client/v3/login`);
    const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    assert.match(metrics, /mcp_http_requests_total\{route="passthrough",method="GET",status="200"\} \d+/);
    assert.match(metrics, /mcp_http_requests_total\{route="login",method="GET",status="200"\} \d+/);
    assert.match(metrics, /mcp_http_request_duration_seconds_bucket/);
    // Not exposed on the client listener: that path goes to the homeserver like any other.
    const viaClient = await fetch(`http://127.0.0.1:${port}/metrics`);
    assert.doesNotMatch(await viaClient.text(), /mcp_http_requests_total/);
  });

  test('SIGTERM: in-flight requests finish, then the process exits 0', async () => {
    const inFlight = fetch(`http://127.0.0.1:${port}/slow`).then(async (response) => ({ status: response.status, body: await response.text() }));
    await new Promise((resolve) => setTimeout(resolve, 200));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const signalled = Date.now();
    child.kill('SIGTERM');
    const response = await inFlight;
    assert.deepEqual(response, { status: 200, body: 'finished' });
    assert.equal(await exited, 0);
    // Drained, not cut at the 10 s bound: exit follows the last response closely.
    assert.ok(Date.now() - signalled < 5000, `exit took ${Date.now() - signalled} ms`);
    assert.match(output, /proxy\.stopped/);
    await assert.rejects(fetch(`http://127.0.0.1:${port}/health`));
  });
});

test('logs redact authorization headers, passwords and tokens', () => {
  let written = '';
  const sink = new Writable({
    write(chunk, _encoding, done) {
      written += String(chunk);
      done();
    },
  });
  const logger = createLogger('info', sink);
  logger.info({ req: { headers: { authorization: 'Bearer mcpa_secret' } }, password: 'hunter2', access_token: 'at-secret', body: { refresh_token: 'rt-secret' } }, 'event');
  assert.match(written, /\[redacted\]/);
  for (const secret of ['mcpa_secret', 'hunter2', 'at-secret', 'rt-secret']) assert.ok(!written.includes(secret), secret);
});

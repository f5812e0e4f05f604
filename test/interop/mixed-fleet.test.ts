import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { stringify } from 'yaml';
import { freePort } from '../support/free-port.js';
import { startHomeserverDouble } from '../support/homeserver-double.js';
import { jsonRequest } from '../support/json-request.js';
import { startRedis, type RunningRedis } from '../support/redis-server.js';
import { testOpProviderBlock } from '../support/test-op-provider.js';
import { startTestOp, type TestOp } from '../support/test-op.js';

/*
 * A mixed fleet (issue 19): the previous release (aaa9c33, built from this repository's history by
 * scripts/build-previous-release.sh) and this one, as two processes on one Redis, during a rolling upgrade. With the
 * default `store.session_format: auto` on a store that already holds sessions, this release writes what the previous
 * one reads: a client logs in on either, refreshes and logs out on the other. The control: this release configured
 * `compact` writes sessions the previous release cannot read — which is why auto does not choose it here.
 */

const PREVIOUS = process.env['PREVIOUS_RELEASE'] ?? 'aaa9c33';
const SECRET = 'homeserver-shared-secret-for-tests-0123456789';

interface RunningProxy {
  readonly url: string;
  readonly output: () => string;
  stop(): Promise<void>;
}

/**
 * The previous release is built from this clone's history; a shallow clone does not have it (the script exits 3).
 * That is the only case skipped, and it says so: any other failure to build fails the suite.
 */
const previousInHistory = spawnSync('git', ['rev-parse', '--verify', '--quiet', `${PREVIOUS}^{commit}`], { stdio: 'ignore' }).status === 0;
const skip = previousInHistory ? false : `commit ${PREVIOUS} is not in this clone's history (shallow clone): the mixed-fleet test needs it`;

describe(`mixed fleet: release ${PREVIOUS} and this one on one Redis`, { skip }, () => {
  let previousTree: string;
  let redis: RunningRedis;
  let op: TestOp;
  let homeserver: Awaited<ReturnType<typeof startHomeserverDouble>>;
  let dir: string;
  const running: RunningProxy[] = [];
  const keyPrefix = `fleet-${process.pid}:`;
  let ports: { previous: number; current: number; compact: number };

  before(async () => {
    previousTree = execFileSync('bash', ['scripts/build-previous-release.sh'], { env: { ...process.env, PREVIOUS_RELEASE: PREVIOUS }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
    dir = await mkdtemp(join(tmpdir(), 'mixed-fleet-'));
    ports = { previous: await freePort(), current: await freePort(), compact: await freePort() };
    redis = await startRedis();
    // The OP sees both proxies as one client (same id and secret): only the password grant is used here.
    op = await startTestOp({ proxyBaseUrl: `http://127.0.0.1:${ports.current}`, idpId: 'testop' });
    // Synapse asks one proxy address (an internal load balancer in production): this release's.
    homeserver = await startHomeserverDouble({ masEndpoint: `http://127.0.0.1:${ports.current}/`, secret: SECRET, serverName: 'example.test' });
  });
  after(async () => {
    for (const proxy of running) await proxy.stop();
    await homeserver?.stop();
    await op?.stop();
    await redis?.stop();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  /** The same configuration for every replica but the port (and, for the control, the session format). */
  async function startReplica(name: string, port: number, command: string[], sessionFormat?: string): Promise<RunningProxy> {
    const url = `http://127.0.0.1:${port}`;
    const config = {
      server_name: 'example.test',
      public_baseurl: `${url}/`,
      listen: { host: '127.0.0.1', port },
      homeserver: { url: homeserver.url, mode: 'synapse', secret: SECRET, upstream_timeout: '10s' },
      oidc_providers: [testOpProviderBlock(op, 'testop', 'Test OP')],
      password_login: { enabled: true, idp_id: 'testop' },
      sessions: { encryption_key: 'an-encryption-key-for-tests-only-0123456789abcdef' },
      store: { redis_url: redis.url, key_prefix: keyPrefix, ...(sessionFormat === undefined ? {} : { session_format: sessionFormat }) },
      rate_limits: { login_per_ip: { burst: 1000, per_second: 100 }, login_per_account: { burst: 1000, per_second: 100 }, sso_per_ip: { burst: 1000, per_second: 100 } },
      metrics: { enabled: false },
      log: { level: 'info' },
    };
    const file = join(dir, `${name}.yaml`);
    await writeFile(file, stringify(config));
    const child: ChildProcess = spawn(process.execPath, [...command, '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const proxy: RunningProxy = {
      url,
      output: () => output,
      async stop() {
        if (child.exitCode === null) child.kill('SIGTERM');
        await exited;
      },
    };
    running.push(proxy);
    for (let attempt = 0; ; attempt++) {
      if (child.exitCode !== null) throw new Error(`${name} exited: ${output}`);
      try {
        if ((await fetch(`${url}/health`)).ok) return proxy;
      } catch {
        // not listening yet
      }
      if (attempt > 300) throw new Error(`${name} did not start: ${output}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  async function login(proxy: RunningProxy, deviceId: string): Promise<{ access: string; refresh: string }> {
    const answer = await jsonRequest(`${proxy.url}/_matrix/client/v3/login`, 'POST', {
      body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: 'alice' }, password: op.users.alice.password, device_id: deviceId, refresh_token: true },
    });
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    return { access: answer.body.access_token, refresh: answer.body.refresh_token };
  }

  async function refresh(proxy: RunningProxy, refreshToken: string): Promise<{ status: number; body: any }> {
    return jsonRequest(`${proxy.url}/_matrix/client/v3/refresh`, 'POST', { body: { refresh_token: refreshToken } });
  }

  async function whoami(proxy: RunningProxy, accessToken: string): Promise<number> {
    return (await jsonRequest(`${proxy.url}/_matrix/client/v3/account/whoami`, 'GET', { token: accessToken })).status;
  }

  test('logged in on either release, refreshed and logged out on the other', async () => {
    const previous = await startReplica('previous', ports.previous, [join(previousTree, 'bin/matrix-compat-proxy.js')]);
    const before = await login(previous, 'OLDPHONE');
    // The upgraded replica starts on a store that holds a session: auto chooses the compatible format, and says so.
    const current = await startReplica('current', ports.current, ['--import', 'tsx', 'test/support/run-cli.ts']);
    assert.match(current.output(), /"event":"sessions.format","format":"compatible","reason":"earlier_sessions"/);
    assert.match(current.output(), /set store.session_format: compact/);

    // Logged in on the previous release; refreshed and used on this one; refreshed again and ended on the previous.
    const rotated = await refresh(current, before.refresh);
    assert.equal(rotated.status, 200, JSON.stringify(rotated.body));
    assert.equal(await whoami(current, rotated.body.access_token), 200);
    const back = await refresh(previous, rotated.body.refresh_token);
    assert.equal(back.status, 200, JSON.stringify(back.body));
    assert.equal(await whoami(previous, back.body.access_token), 200);
    assert.equal((await jsonRequest(`${previous.url}/_matrix/client/v3/logout`, 'POST', { token: back.body.access_token, body: {} })).status, 200);
    assert.equal(await whoami(current, back.body.access_token), 401);

    // Logged in on this release; refreshed on the previous one; /logout/all there ends it for both.
    const after = await login(current, 'NEWPHONE');
    const onPrevious = await refresh(previous, after.refresh);
    assert.equal(onPrevious.status, 200, JSON.stringify(onPrevious.body));
    assert.equal(await whoami(previous, onPrevious.body.access_token), 200);
    const second = await login(current, 'NEWLAPTOP');
    assert.equal((await jsonRequest(`${previous.url}/_matrix/client/v3/logout/all`, 'POST', { token: onPrevious.body.access_token, body: {} })).status, 200);
    assert.equal(await whoami(current, second.access), 401, 'the previous release found and ended the session this one wrote');
    assert.equal(await whoami(current, onPrevious.body.access_token), 401);

    // The control: configured compact, this release writes sessions the previous one does not know.
    const compact = await startReplica('compact', ports.compact, ['--import', 'tsx', 'test/support/run-cli.ts'], 'compact');
    const unreadable = await login(compact, 'COMPACTPHONE');
    assert.equal(await whoami(compact, unreadable.access), 200);
    const refused = await refresh(previous, unreadable.refresh);
    assert.equal(refused.status, 401, JSON.stringify(refused.body));
    assert.equal(refused.body.errcode, 'M_UNKNOWN_TOKEN');
  });
});

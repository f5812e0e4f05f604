import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { stringify } from 'yaml';
import { parseConfig } from '../../src/config/load-config.js';
import type { DoctorCheck } from '../../src/doctor/checks.js';
import { runDoctor } from '../../src/doctor/run-doctor.js';
import { startProxyHarness, type Harness } from '../support/proxy-harness.js';
import { startRedis } from '../support/redis-server.js';

/**
 * `matrix-compat-proxy doctor` against the real neighbours of the harness (oidc-provider, the homeserver double
 * that behaves like Synapse's MAS API, the running proxy), set up wrong on purpose: each of issue 13's three
 * failures must be found with a message that says what to change.
 */

const CLI = ['--import', 'tsx', 'test/support/run-cli.ts'];

/** The CLI in a child process; asynchronously, since the OP, the homeserver double and the proxy run in this one. */
function runCli(args: readonly string[], env: Record<string, string> = {}): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...CLI, ...args], { env: { ...process.env, MCP_DOCTOR_USERNAME: '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.once('error', reject);
    child.once('close', (status) => resolve({ status, stdout, stderr }));
  });
}

function find(checks: readonly DoctorCheck[], scope: string, check: string): DoctorCheck {
  const found = checks.find((entry) => entry.scope === scope && entry.check === check);
  assert.ok(found !== undefined, `no check "${check}" in ${scope}: ${JSON.stringify(checks, null, 1)}`);
  return found;
}

function failures(checks: readonly DoctorCheck[]): DoctorCheck[] {
  return checks.filter((check) => check.status === 'fail');
}

async function doctor(h: Harness, edit: (raw: Record<string, any>) => void = () => undefined, env: Record<string, string> = {}): Promise<DoctorCheck[]> {
  const raw = h.rawConfig();
  edit(raw);
  return runDoctor(parseConfig(stringify(raw), { env: {} }), { env, timeoutMs: 5_000 });
}

describe('doctor against a working setup', () => {
  let h: Harness;
  before(async () => {
    h = await startProxyHarness();
  });
  after(() => h.stop());

  test('every check passes, with a real test login and the templates checked against its claims', async () => {
    const checks = await doctor(h, undefined, { MCP_DOCTOR_USERNAME: 'alice', MCP_DOCTOR_PASSWORD: h.op.users.alice.password });
    assert.deepEqual(failures(checks), []);
    const provider = 'provider testop';
    for (const name of ['discovery', 'issuer', 'ID token algorithms', 'JWKS', 'client authentication', 'password grant', 'test login', 'mapping templates', 'authorization request', 'scopes']) {
      assert.equal(find(checks, provider, name).status, 'pass', name);
    }
    assert.match(find(checks, provider, 'mapping templates').message, /localpart alice/);
    assert.match(find(checks, provider, 'redirect URI').message, new RegExp(`${h.url}/_matrix-compat-proxy/sso/callback/testop`));
    assert.match(find(checks, provider, 'back-channel logout URI').message, /backchannel-logout\/testop/);
    for (const name of ['reachable', 'shared secret', 'auth metadata']) assert.equal(find(checks, 'homeserver', name).status, 'pass', name);
    assert.equal(find(checks, 'store', 'store').status, 'info');
    assert.equal(find(checks, 'public_baseurl', 'reachable').status, 'pass');
  });

  test('with Redis: the session format, and how the next start chooses it (read only)', async () => {
    const redis = await startRedis();
    try {
      const store = { redis_url: redis.url, key_prefix: `doctor-${randomBytes(4).toString('hex')}:` };
      const fresh = find(await doctor(h, (raw) => (raw['store'] = store)), 'store', 'session format');
      assert.deepEqual({ status: fresh.status, message: fresh.message }, { status: 'info', message: 'compact, the next start decides it (auto: no session in the store yet)' });
      const admin = new Redis(redis.url);
      await admin.set(`${store.key_prefix}session:abc`, '{}');
      admin.disconnect();
      const upgraded = find(await doctor(h, (raw) => (raw['store'] = store)), 'store', 'session format');
      assert.equal(upgraded.message, 'compatible, the next start decides it (auto: the store holds sessions)');
      assert.match(upgraded.fix ?? '', /once every replica runs this release, set store.session_format: compact/);
      const configured = find(await doctor(h, (raw) => (raw['store'] = { ...store, session_format: 'compact' })), 'store', 'session format');
      assert.equal(configured.message, 'compact, configured');
    } finally {
      await redis.stop();
    }
  });

  test('the CLI prints one line per check and exits 0; --json gives the same checks', async () => {
    const path = join(await mkdtemp(join(tmpdir(), 'mcp-doctor-')), 'config.yaml');
    await writeFile(path, stringify(h.rawConfig()));
    const run = await runCli(['doctor', '--config', path]);
    assert.equal(run.status, 0, run.stdout + run.stderr);
    assert.match(run.stdout, /^✓ provider testop · discovery: /m);
    assert.match(run.stdout, /^- provider testop · test login: set MCP_DOCTOR_USERNAME/m);
    assert.ok(run.stdout.split('\n').filter((line) => line !== '').every((line) => /^[✓✗!·-] /.test(line)), run.stdout);
    const json = await runCli(['doctor', '--config', path, '--json']);
    assert.equal(json.status, 0);
    const parsed = JSON.parse(json.stdout) as DoctorCheck[];
    assert.ok(parsed.some((check) => check.check === 'client authentication' && check.status === 'pass'));
  });

  test('a wrong issuer (trailing slash), a wrong shared secret: ✗ with the exact value to set, exit 1', async () => {
    const path = join(await mkdtemp(join(tmpdir(), 'mcp-doctor-')), 'config.yaml');
    const raw = h.rawConfig();
    raw['oidc_providers'][0]['issuer'] = `${h.op.issuer}/`;
    raw['homeserver']['secret'] = 'not-the-secret-synapse-has-0123456789';
    await writeFile(path, stringify(raw));
    const run = await runCli(['doctor', '--config', path]);
    assert.equal(run.status, 1, run.stdout + run.stderr);
    assert.match(run.stdout, new RegExp(`^✗ provider testop · issuer: .* → set issuer: "${h.op.issuer}" \\(exactly`, 'm'));
    assert.match(run.stdout, /^✗ homeserver · shared secret: Synapse refused homeserver\.secret .* → make matrix_authentication_service\.secret/m);
  });

  test('a secret rotation half-way (Synapse still has a previous secret): ! naming the step left, not ✗', async () => {
    const checks = await doctor(h, (raw) => {
      raw['homeserver']['previous_secrets'] = [{ secret: 'an-older-secret-nowhere-0123456789' }, { secret: raw['homeserver']['secret'] }];
      raw['homeserver']['secret'] = 'the-next-secret-not-at-synapse-yet-0123';
    });
    const check = find(checks, 'homeserver', 'shared secret');
    assert.equal(check.status, 'warn', check.message);
    assert.match(check.message, /previous_secrets\[1\]/);
    assert.match(check.fix ?? '', /set matrix_authentication_service\.secret in homeserver\.yaml to homeserver\.secret/);
  });
});

describe('doctor finds issue 13’s failures on OPs set up wrong on purpose', () => {
  let h: Harness;
  before(async () => {
    h = await startProxyHarness({
      op: {
        quirks: { refusedGrantStatus: 403, profileClaimsOnlyInUserinfo: true },
        clients: [
          { clientId: 'plus-secret', clientSecret: 'plus+secret/0123456789', redirectUris: ['http://127.0.0.1:1/cb'] },
          { clientId: 'no-password', clientSecret: 'no-password-secret-0123456789', grantTypes: ['authorization_code', 'refresh_token'], redirectUris: ['http://127.0.0.1:1/cb'] },
        ],
      },
    });
  });
  after(() => h.stop());

  test('1. client authentication: Basic refused, client_secret_post accepted (a + in the secret the OP form-decodes) → “set client_auth_method: client_secret_post”', async () => {
    const checks = await doctor(h, (raw) => {
      Object.assign(raw['oidc_providers'][0], { client_id: 'plus-secret', client_secret: 'plus+secret/0123456789' });
    });
    const check = find(checks, 'provider testop', 'client authentication');
    assert.equal(check.status, 'fail');
    assert.match(check.message, /refused client_secret_basic \(HTTP 401 invalid_client\) but accepts client_secret_post \(the client secret contains \+ or %/);
    assert.equal(check.fix, 'set client_auth_method: client_secret_post');
  });

  test('1b. a token endpoint answering 400 with an empty body: ✗ quoting it, naming the causes to check', async () => {
    h.op.answerTokenRequests({ status: 400 });
    try {
      const checks = await doctor(h);
      const auth = find(checks, 'provider testop', 'client authentication');
      assert.equal(auth.status, 'fail');
      assert.match(auth.message, /HTTP 400 with an empty body/);
      assert.match(auth.fix ?? '', /check client_id and client_secret/);
      assert.match(auth.fix ?? '', /the OP refuses the refresh_token grant for this client without saying so/);
      assert.equal(find(checks, 'provider testop', 'password grant').status, 'skip', 'not tried while the client is refused');
    } finally {
      h.op.answerTokenRequests(undefined);
    }
  });

  test('2. a wrong password answered 403 without RFC JSON is recognised as a refusal; a client without the password grant is ✗', async () => {
    const checks = await doctor(h);
    const password = find(checks, 'provider testop', 'password grant');
    assert.equal(password.status, 'pass');
    assert.match(password.message, /HTTP 403 with an empty body — not RFC 6749 JSON, which the proxy reads as a wrong password/);

    const disabled = await doctor(h, (raw) => {
      Object.assign(raw['oidc_providers'][0], { client_id: 'no-password', client_secret: 'no-password-secret-0123456789' });
    });
    const check = find(disabled, 'provider testop', 'password grant');
    assert.equal(check.status, 'fail');
    assert.match(check.message, /does not allow it for this client \(HTTP 400 invalid_request\)/);
    assert.match(check.fix ?? '', /allow the password grant for client no-password at the OP/);
  });

  test('3. profile claims only in userinfo: ✗ naming the claims and “set user_profile_method: userinfo_endpoint”; ! up front without a test account', async () => {
    const withAccount = await doctor(h, undefined, { MCP_DOCTOR_USERNAME: 'bob', MCP_DOCTOR_PASSWORD: h.op.users.bob.password });
    const check = find(withAccount, 'provider testop', 'mapping templates');
    assert.equal(check.status, 'fail');
    assert.match(check.message, /lacks preferred_username, name, email/);
    assert.equal(check.fix, 'set user_profile_method: userinfo_endpoint');

    const upFront = find(await doctor(h), 'provider testop', 'mapping templates');
    assert.equal(upFront.status, 'warn');
    assert.match(upFront.fix ?? '', /set user_profile_method: userinfo_endpoint/);

    const fixed = await doctor(
      h,
      (raw) => {
        raw['oidc_providers'][0]['user_profile_method'] = 'userinfo_endpoint';
      },
      { MCP_DOCTOR_USERNAME: 'bob', MCP_DOCTOR_PASSWORD: h.op.users.bob.password },
    );
    assert.equal(find(fixed, 'provider testop', 'mapping templates').status, 'pass');
  });

  test('an unregistered redirect URI and an unknown scope are ✗ at the authorization request', async () => {
    const checks = await doctor(h, (raw) => {
      Object.assign(raw['oidc_providers'][0], { client_id: 'no-password', client_secret: 'no-password-secret-0123456789', password_grant: { enabled: false } });
      raw['password_login'] = { enabled: false };
    });
    const check = find(checks, 'provider testop', 'authorization request');
    assert.equal(check.status, 'fail');
    assert.match(check.fix ?? '', /register .*\/_matrix-compat-proxy\/sso\/callback\/testop as a redirect URI of client no-password/);

    const scoped = await doctor(h, (raw) => {
      raw['oidc_providers'][0]['scopes'] = ['openid', 'profile', 'no-such-scope'];
    });
    assert.equal(find(scoped, 'provider testop', 'scopes').status, 'warn');
  });
});

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startProxyHarness, HOMESERVER_SECRET, SERVER_NAME, type Harness } from '../support/proxy-harness.js';

/** What Synapse sends: form body, shared secret, X-MAS-Supports-Device-Id (synapse/api/auth/mas.py). */
async function introspect(h: Harness, token: string, options: { secret?: string | null; deviceIdHeader?: boolean; hint?: string } = {}) {
  const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' };
  if (options.secret !== null) headers['authorization'] = `Bearer ${options.secret ?? HOMESERVER_SECRET}`;
  if (options.deviceIdHeader !== false) headers['x-mas-supports-device-id'] = '1';
  const body = new URLSearchParams({ token, token_type_hint: options.hint ?? 'access_token' });
  const response = await fetch(`${h.homeserverFacingUrl}/oauth2/introspect`, { method: 'POST', headers, body });
  return { status: response.status, body: (await response.json()) as Record<string, any> };
}

/** A native OIDC client's token, straight from the OP with the Matrix scopes (no proxy involved). */
async function nativeToken(h: Harness, user: 'alice' | 'bob', deviceId: string): Promise<string> {
  const response = await fetch(`${h.op.issuer}/token`, {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from(`${h.op.clientId}:${h.op.clientSecret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'password',
      username: user,
      password: h.op.users[user].password,
      scope: `openid profile email urn:matrix:client:api:* urn:matrix:client:device:${deviceId}`,
    }),
  });
  const body = (await response.json()) as { access_token?: string };
  assert.equal(response.status, 200, JSON.stringify(body));
  return body.access_token!;
}

describe('homeserver-facing API (Synapse matrix_authentication_service contract)', () => {
  let h: Harness;
  before(async () => {
    h = await startProxyHarness();
  });
  after(async () => {
    await h.stop();
  });

  test('metadata: the OP issuer and endpoints plus account_management_uri (the proxy\'s account page) and its MSC4191 actions', async () => {
    const response = await fetch(`${h.homeserverFacingUrl}/.well-known/openid-configuration`);
    const body = (await response.json()) as Record<string, unknown>;
    assert.equal(response.status, 200);
    assert.equal(body['issuer'], h.op.issuer);
    assert.equal(body['token_endpoint'], `${h.op.issuer}/token`);
    assert.equal(typeof body['authorization_endpoint'], 'string');
    assert.equal(body['account_management_uri'], `${h.url}/_matrix-compat-proxy/account`);
    assert.deepEqual(body['account_management_actions_supported'], [
      'org.matrix.profile',
      'org.matrix.devices_list',
      'org.matrix.device_view',
      'org.matrix.device_delete',
      'org.matrix.cross_signing_reset',
      'org.matrix.account_deactivate',
      'org.matrix.sessions_list',
      'org.matrix.session_view',
      'org.matrix.session_end',
    ]);
  });

  test('metadata: an admin-set account_management_uri wins, without the page\'s actions', async () => {
    const other = await startProxyHarness({ configure: (config) => void (config['homeserver'].account_management_uri = 'https://accounts.example.test/manage') });
    try {
      const body = (await (await fetch(`${other.homeserverFacingUrl}/.well-known/openid-configuration`)).json()) as Record<string, unknown>;
      assert.equal(body['account_management_uri'], 'https://accounts.example.test/manage');
      assert.equal(body['account_management_actions_supported'], undefined);
    } finally {
      await other.stop();
    }
  });

  test('an account page\'s homeserver token introspects as its user without a device; unknown ones are inactive', async () => {
    const { session } = await h.deps.accountSessions.create(
      { localpart: 'alice', idpId: 'testop', issuer: h.op.issuer, sub: h.op.users.alice.sub, authTime: h.deps.clock.now() },
      60_000,
      (secret) => h.deps.keys.seal(secret),
    );
    const token = h.deps.keys.open(session.sealedHomeserverToken);
    const answer = await introspect(h, token);
    assert.equal(answer.status, 200);
    assert.equal(answer.body['active'], true);
    assert.equal(answer.body['username'], 'alice');
    assert.equal(answer.body['device_id'], undefined);
    assert.match(answer.body['scope'], /urn:matrix:client:api:\*/);
    assert.doesNotMatch(answer.body['scope'], /device/);
    assert.deepEqual((await introspect(h, `mcpw_${'A'.repeat(32)}`)).body, { active: false });
  });

  test('introspection requires the shared secret', async () => {
    assert.equal((await introspect(h, 'x', { secret: null })).status, 401);
    assert.equal((await introspect(h, 'x', { secret: 'wrong-secret-of-same-length-0123456789abcde' })).status, 401);
    assert.equal((await introspect(h, 'x', { secret: `${HOMESERVER_SECRET}x` })).status, 401);
  });

  test("the proxy's own tokens: active with API scopes, username, device; device scopes only for old Synapse", async () => {
    const login = await h.passwordLogin('alice', h.op.users.alice.password, { device_id: 'INTRODEV' });
    const modern = await introspect(h, login.body.access_token);
    assert.equal(modern.status, 200);
    assert.equal(modern.body['active'], true);
    assert.equal(modern.body['username'], 'alice');
    assert.equal(modern.body['device_id'], 'INTRODEV');
    assert.equal(modern.body['sub'], h.op.users.alice.sub);
    assert.equal(modern.body['scope'], 'urn:matrix:client:api:* urn:matrix:org.matrix.msc2967.client:api:*');
    assert.equal(modern.body['expires_in'], undefined, 'legacy tokens without refresh do not expire');
    const old = await introspect(h, login.body.access_token, { deviceIdHeader: false });
    assert.match(old.body['scope'], /urn:matrix:client:device:INTRODEV/);
    assert.match(old.body['scope'], /urn:matrix:org\.matrix\.msc2967\.client:device:INTRODEV/);
  });

  test('refreshable tokens carry expires_in; refresh tokens and garbage are inactive', async () => {
    const login = await h.passwordLogin('alice', h.op.users.alice.password, { refresh_token: true });
    const active = await introspect(h, login.body.access_token);
    assert.ok(active.body['expires_in'] > 290 && active.body['expires_in'] <= 300);
    assert.deepEqual((await introspect(h, login.body.refresh_token)).body, { active: false });
    assert.deepEqual((await introspect(h, login.body.refresh_token, { hint: 'refresh_token' })).body, { active: false });
    assert.deepEqual((await introspect(h, 'mcpa_garbage')).body, { active: false });
  });

  test('native OIDC tokens are relayed to the OP: user bound and provisioned, device created', async () => {
    const token = await nativeToken(h, 'bob', 'NATIVEDEV1');
    const answer = await introspect(h, token);
    assert.equal(answer.status, 200);
    assert.equal(answer.body['active'], true, JSON.stringify(answer.body));
    assert.equal(answer.body['username'], 'bob');
    assert.equal(answer.body['device_id'], 'NATIVEDEV1');
    assert.ok(h.homeserver.users.has('bob'));
    assert.ok(h.homeserver.devices('bob').has('NATIVEDEV1'));
    // Through the homeserver, as a native client would call it.
    const whoami = await h.request('GET', '/_matrix/client/v3/account/whoami', { token });
    assert.equal(whoami.status, 200);
    assert.equal(whoami.body.user_id, `@bob:${SERVER_NAME}`);
    assert.equal(whoami.body.device_id, 'NATIVEDEV1');
    // The legacy /logout is not for native tokens.
    assert.equal((await h.request('POST', '/_matrix/client/v3/logout', { token })).body.errcode, 'M_UNKNOWN_TOKEN');
  });

  test('a native token whose device scope holds an unsafe device id is inactive (issue 12 #3)', async () => {
    const token = await nativeToken(h, 'bob', 'DEV<script>');
    const answer = await introspect(h, token);
    assert.equal(answer.status, 200);
    assert.equal(answer.body['active'], false, JSON.stringify(answer.body));
    assert.ok(!h.homeserver.devices('bob').has('DEV<script>'));
  });

  test('OP answers are cached briefly: a burst of introspections costs one OP call', async () => {
    const token = await nativeToken(h, 'alice', 'NATIVEDEV2');
    const before = h.op.requestCount('/token/introspection');
    const answers = await Promise.all(Array.from({ length: 10 }, () => introspect(h, token)));
    assert.ok(answers.every((a) => a.body['active'] === true));
    const calls = h.op.requestCount('/token/introspection') - before;
    assert.ok(calls >= 1 && calls <= 10);
    const again = h.op.requestCount('/token/introspection');
    await introspect(h, token);
    assert.equal(h.op.requestCount('/token/introspection'), again, 'served from the cache');
  });

  test("a native client's refresh token never passes as an access token", async () => {
    const response = await fetch(`${h.op.issuer}/token`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${h.op.clientId}:${h.op.clientSecret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'password',
        username: 'alice',
        password: h.op.users.alice.password,
        scope: 'openid offline_access urn:matrix:client:api:* urn:matrix:client:device:NATIVEDEV4',
      }),
    });
    const tokens = (await response.json()) as { access_token: string; refresh_token?: string };
    assert.ok(tokens.refresh_token, 'the OP issued a refresh token');
    assert.equal((await introspect(h, tokens.access_token)).body['active'], true);
    assert.deepEqual((await introspect(h, tokens.refresh_token)).body, { active: false });
  });

  test('a token without the Matrix API scope, or an unknown one, is inactive', async () => {
    const response = await fetch(`${h.op.issuer}/token`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${h.op.clientId}:${h.op.clientSecret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'password', username: 'alice', password: h.op.users.alice.password, scope: 'openid' }),
    });
    const plain = ((await response.json()) as { access_token: string }).access_token;
    assert.deepEqual((await introspect(h, plain)).body, { active: false });
    assert.deepEqual((await introspect(h, 'not-a-token-anyone-issued')).body, { active: false });
  });

  test('OP unreachable → 503 to the homeserver, never active:false', async () => {
    const token = await nativeToken(h, 'alice', 'NATIVEDEV3');
    h.op.setDown(true);
    try {
      const answer = await introspect(h, token);
      assert.equal(answer.status, 503);
      assert.notEqual(answer.body['active'], false);
    } finally {
      h.op.setDown(false);
    }
  });
});

describe('introspection amplification (issue 12 #7)', () => {
  let h: Harness;
  before(async () => {
    h = await startProxyHarness({
      configure: (config) => {
        config['rate_limits'] = { op_introspection: { burst: 20, per_second: 0.001 } };
      },
    });
  });
  after(async () => {
    await h.stop();
  });

  test('200 random bearer tokens cost at most the budget in OP calls; refusals are cached; garbage costs none', async () => {
    const opCalls = () => h.op.requests.filter((r) => r.path.includes('introspect')).length;
    const before = opCalls();
    const tokens = Array.from({ length: 200 }, (_, i) => `random-token-${i}-${Math.random().toString(36).slice(2)}`);
    const statuses: Record<number, number> = {};
    for (const token of tokens) {
      const { status } = await introspect(h, token);
      statuses[status] = (statuses[status] ?? 0) + 1;
    }
    const spent = opCalls() - before;
    assert.equal(spent, 20, `OP introspections for 200 random tokens: ${spent} (${JSON.stringify(statuses)})`);
    assert.deepEqual(statuses, { 200: 20, 503: 180 }, 'over the budget: 503 (nobody logged out), never active');
    // The 20 refused by the OP are answered from the negative cache, not by the OP again.
    for (const token of tokens.slice(0, 20)) assert.equal((await introspect(h, token)).body['active'], false);
    // Tokens no OP issues (spaces, control characters, 10 kB) never reach the OP.
    for (const token of ['a b', 'x\u0001y', 'y'.repeat(10_000)]) assert.equal((await introspect(h, token)).body['active'], false);
    assert.equal(opCalls() - before, 20);
  });
});

describe('concurrent introspections of one native token (issue 19)', () => {
  let h: Harness;
  before(async () => {
    h = await startProxyHarness({
      configure: (config) => {
        // One OP call in the budget: a second call for the same token would be refused with 503.
        config['rate_limits'] = { op_introspection: { burst: 1, per_second: 0.001 } };
      },
    });
  });
  after(async () => {
    await h.stop();
  });

  test('one native token asked about by 30 requests at once: one OP call, every answer active (issue 19)', async () => {
    const opCalls = () => h.op.requests.filter((r) => r.path.includes('introspect')).length;
    const token = await nativeToken(h, 'bob', 'CONCURRENT1');
    const before = opCalls();
    // Without sharing the call, all but one would spend the empty budget and be 503.
    const answers = await Promise.all(Array.from({ length: 30 }, () => introspect(h, token)));
    assert.equal(opCalls() - before, 1, 'concurrent misses share one OP introspection');
    for (const answer of answers) {
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      assert.equal(answer.body['active'], true);
      assert.equal(answer.body['device_id'], 'CONCURRENT1');
    }
  });
});

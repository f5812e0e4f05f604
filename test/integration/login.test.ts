import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import assert from 'node:assert/strict';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startProxyHarness, HOMESERVER_SECRET, IDP_ID, SERVER_NAME, type Harness } from '../support/proxy-harness.js';
import { FakeClock } from '../support/fake-clock.js';
import { request as httpRequest } from 'node:http';

const LOGIN = '/_matrix/client/v3/login';
const WHOAMI = '/_matrix/client/v3/account/whoami';

describe('legacy login API against the in-process OP (memory store)', () => {
  let h: Harness;
  before(async () => {
    h = await startProxyHarness();
  });
  after(async () => {
    await h.stop();
  });

  test('GET /login lists password, SSO (MSC3824 flags, identity providers) and token, on v3 and r0', async () => {
    for (const version of ['v3', 'r0']) {
      const { status, body, headers } = await h.request('GET', `/_matrix/client/${version}/login`);
      assert.equal(status, 200);
      assert.match(headers.get('content-type') ?? '', /application\/json/);
      assert.deepEqual(body.flows.map((f: { type: string }) => f.type), ['m.login.password', 'm.login.sso', 'm.login.token']);
      const sso = body.flows[1];
      assert.equal(sso.oauth_aware_preferred, true);
      assert.equal(sso['org.matrix.msc3824.delegated_oidc_compatibility'], true);
      assert.deepEqual(sso.identity_providers, [{ id: 'testop', name: 'Test OP' }]);
    }
  });

  test('password login: MXID, device, well_known; whoami works through the homeserver', async () => {
    const { status, body } = await h.passwordLogin(`@ALICE:${SERVER_NAME}`, h.op.users.alice.password, { initial_device_display_name: 'Bot laptop' });
    assert.equal(status, 200, JSON.stringify(body));
    assert.equal(body.user_id, `@alice:${SERVER_NAME}`);
    assert.match(body.device_id, /^[A-Z]{10}$/);
    assert.equal(body.refresh_token, undefined);
    assert.equal(body.expires_in_ms, undefined);
    assert.equal(body.well_known['m.homeserver'].base_url, h.config.public_baseurl);
    const whoami = await h.request('GET', WHOAMI, { token: body.access_token });
    assert.equal(whoami.status, 200);
    assert.equal(whoami.body.user_id, `@alice:${SERVER_NAME}`);
    assert.equal(whoami.body.device_id, body.device_id);
    assert.equal(h.homeserver.devices('alice').get(body.device_id)?.displayName, 'Bot laptop');
    assert.equal(h.homeserver.users.get('alice')?.displayName, h.op.users.alice.name);
  });

  test('a device display name longer than Synapse accepts is shortened, not a failed login', async () => {
    const { status, body } = await h.passwordLogin('alice', h.op.users.alice.password, { initial_device_display_name: 'é'.repeat(150) });
    assert.equal(status, 200, JSON.stringify(body));
    assert.equal(h.homeserver.devices('alice').get(body.device_id)?.displayName, 'é'.repeat(100));
  });

  test('the deprecated top-level user wins over identifier; email identifiers go to the OP as the username', async () => {
    const legacy = await h.request('POST', LOGIN, {
      body: { type: 'm.login.password', user: 'alice', identifier: { type: 'm.id.user', user: 'bob' }, password: h.op.users.alice.password },
    });
    assert.equal(legacy.status, 200);
    assert.equal(legacy.body.user_id, `@alice:${SERVER_NAME}`);
    const thirdParty = await h.request('POST', LOGIN, {
      body: { type: 'm.login.password', identifier: { type: 'm.id.thirdparty', medium: 'email', address: h.op.users.bob.email }, password: h.op.users.bob.password },
    });
    assert.equal(thirdParty.status, 200, JSON.stringify(thirdParty.body));
    assert.equal(thirdParty.body.user_id, `@bob:${SERVER_NAME}`);
    const topLevel = await h.request('POST', LOGIN, { body: { type: 'm.login.password', medium: 'email', address: h.op.users.bob.email, password: h.op.users.bob.password } });
    assert.equal(topLevel.status, 200);
  });

  test('wrong password, unknown user and a foreign server give byte-identical 403s', async () => {
    const responses = await Promise.all([
      fetch(`${h.url}${LOGIN}`, { method: 'POST', body: JSON.stringify({ type: 'm.login.password', identifier: { type: 'm.id.user', user: 'alice' }, password: 'wrong' }) }),
      fetch(`${h.url}${LOGIN}`, { method: 'POST', body: JSON.stringify({ type: 'm.login.password', identifier: { type: 'm.id.user', user: 'nobody' }, password: 'wrong' }) }),
      fetch(`${h.url}${LOGIN}`, { method: 'POST', body: JSON.stringify({ type: 'm.login.password', identifier: { type: 'm.id.user', user: '@alice:other.org' }, password: 'x' }) }),
    ]);
    const bodies = await Promise.all(responses.map((r) => r.text()));
    assert.deepEqual(responses.map((r) => r.status), [403, 403, 403]);
    assert.equal(bodies[0], '{"errcode":"M_FORBIDDEN","error":"Invalid username/password"}');
    assert.equal(bodies[1], bodies[0]);
    assert.equal(bodies[2], bodies[0]);
  });

  test('bad requests get the right Matrix errors', async () => {
    const cases: [string, RequestInit, number, string][] = [
      ['not JSON', { body: '{nope', headers: { 'content-type': 'application/json' } }, 400, 'M_NOT_JSON'],
      ['JSON labelled text/plain is still JSON (as in Synapse)', { body: '{}', headers: { 'content-type': 'text/plain' } }, 400, 'M_BAD_JSON'],
      ['empty body', { body: '' }, 400, 'M_NOT_JSON'],
      ['array', { body: '[]' }, 400, 'M_BAD_JSON'],
      ['no type', { body: '{}' }, 400, 'M_BAD_JSON'],
      ['unknown type', { body: '{"type":"m.login.bogus"}' }, 400, 'M_UNKNOWN'],
      ['phone identifier', { body: '{"type":"m.login.password","identifier":{"type":"m.id.phone","country":"GB","phone":"1"},"password":"x"}' }, 400, 'M_UNKNOWN'],
      ['missing identifier', { body: '{"type":"m.login.password","password":"x"}' }, 400, 'M_BAD_JSON'],
      ['password not a string', { body: '{"type":"m.login.password","user":"alice","password":5}' }, 400, 'M_BAD_JSON'],
      ['too large', { body: JSON.stringify({ type: 'm.login.password', user: 'a', password: 'x'.repeat(200_000) }) }, 413, 'M_TOO_LARGE'],
    ];
    for (const [name, init, status, errcode] of cases) {
      const response = await fetch(`${h.url}${LOGIN}`, { method: 'POST', ...init });
      const body = (await response.json()) as { errcode: string; error: string };
      assert.equal(response.status, status, name);
      assert.equal(body.errcode, errcode, name);
      assert.equal(typeof body.error, 'string', name);
    }
    const put = await h.request('PUT', LOGIN, { body: {} });
    assert.equal(put.status, 405);
    assert.equal(put.body.errcode, 'M_UNRECOGNIZED');
  });

  test('CORS preflight on owned routes runs no login logic', async () => {
    const before = h.op.requestCount('/token');
    const response = await fetch(`${h.url}${LOGIN}`, { method: 'OPTIONS', headers: { origin: 'https://app.example', 'access-control-request-method': 'POST' } });
    assert.ok(response.status >= 200 && response.status < 300);
    assert.equal(response.headers.get('access-control-allow-origin'), '*');
    assert.match(response.headers.get('access-control-allow-headers') ?? '', /Authorization/);
    assert.equal(h.op.requestCount('/token'), before);
  });

  test('normalised path variants of /login are answered by the proxy, never forwarded', async () => {
    for (const path of ['/_matrix/client/v3//login', '/_matrix/client/v3/login/', '/_matrix/client%2Fv3%2Flogin', '/_matrix/client/r0/./login', '/_matrix/client/v3/foo/../login']) {
      const { status, body } = await h.request('GET', path);
      assert.equal(status, 200, path);
      assert.ok(Array.isArray(body.flows), path);
    }
  });

  test('a raw # in the request target ends the path: login#x is answered by the proxy, not forwarded (issue 12 #6)', async () => {
    const seenBefore = h.homeserver.requestsSeen.length;
    const body = JSON.stringify({ type: 'm.login.password', identifier: { type: 'm.id.user', user: 'alice' }, password: h.op.users.alice.password });
    const answer = await rawRequest(h.url, 'POST', `${LOGIN}#x`, body);
    assert.equal(answer.status, 200, answer.body);
    assert.equal(JSON.parse(answer.body).user_id, `@alice:${SERVER_NAME}`);
    const get = await rawRequest(h.url, 'GET', `${LOGIN}#x?y=1`);
    assert.equal(get.status, 200);
    assert.ok(Array.isArray(JSON.parse(get.body).flows));
    // What the homeserver saw: the provisioning calls of the login, never the login itself.
    assert.deepEqual(h.homeserver.requestsSeen.slice(seenBefore).filter((line) => line.includes('/login')), []);
    // A passed-through path loses its fragment too, so the homeserver sees the path the proxy judged.
    await rawRequest(h.url, 'GET', '/_matrix/client/versions#frag');
    assert.ok(h.homeserver.requestsSeen.includes('GET /_matrix/client/versions'), h.homeserver.requestsSeen.slice(-3).join(', '));
  });

  test('device ids outside the safe charset are refused at every login type, before the OP (issue 12 #3)', async () => {
    const tokenCalls = h.op.requestCount('/token');
    for (const deviceId of ['DEV1 urn:synapse:admin:*', 'DEV\u0000', 'DEV"1', 'DEV\\1', 'D'.repeat(256), '']) {
      const password = await h.passwordLogin('alice', h.op.users.alice.password, { device_id: deviceId });
      assert.equal(password.status, 400, `${JSON.stringify(deviceId)}: ${JSON.stringify(password.body)}`);
      assert.equal(password.body.errcode, 'M_INVALID_PARAM');
      const token = await h.request('POST', LOGIN, { body: { type: 'm.login.token', token: 'any', device_id: deviceId } });
      assert.equal(token.status, 400, JSON.stringify(deviceId));
    }
    assert.equal(h.op.requestCount('/token'), tokenCalls, 'the OP saw none of them');
    // What real clients send still works: generated ids, bridges' ids with punctuation.
    for (const deviceId of ['ABCDEFGHIJ', 'mautrix.whatsapp_1-2', 'a'.repeat(255)]) {
      assert.equal((await h.passwordLogin('alice', h.op.users.alice.password, { device_id: deviceId })).status, 200, deviceId);
    }
  });

  test('a stored device id that is no scope-token is never written into scope (issue 12 #3)', async () => {
    // A session from before the check (or any future path) with a space in its device id.
    const issued = await h.deps.lifecycle.start({
      localpart: 'alice',
      deviceId: 'OLD urn:synapse:admin:*',
      origin: { kind: 'password', idpId: 'testop', issuer: h.op.issuer, sub: h.op.users.alice.sub, lastValidatedAt: Date.now() },
      ip: '127.0.0.1',
    });
    const form = (header: boolean) =>
      fetch(`${h.homeserverFacingUrl}/oauth2/introspect`, {
        method: 'POST',
        headers: { authorization: `Bearer ${HOMESERVER_SECRET}`, 'content-type': 'application/x-www-form-urlencoded', ...(header ? { 'x-mas-supports-device-id': '1' } : {}) },
        body: new URLSearchParams({ token: issued.accessToken }),
      }).then((r) => r.json() as Promise<Record<string, unknown>>);
    const old = await form(false);
    assert.equal(old['active'], false, JSON.stringify(old));
    const current = await form(true);
    assert.equal(current['active'], true);
    assert.equal(current['scope'], 'urn:matrix:client:api:* urn:matrix:org.matrix.msc2967.client:api:*');
  });

  test('device_id reuse keeps the device and ends the earlier session', async () => {
    const first = await h.passwordLogin('alice', h.op.users.alice.password, { device_id: 'REUSEDDEV', initial_device_display_name: 'first' });
    const second = await h.passwordLogin('alice', h.op.users.alice.password, { device_id: 'REUSEDDEV', initial_device_display_name: 'second' });
    assert.equal(first.status, 200);
    assert.equal(second.body.device_id, 'REUSEDDEV');
    assert.notEqual(first.body.access_token, second.body.access_token);
    const logoutOld = await h.request('POST', '/_matrix/client/v3/logout', { token: first.body.access_token });
    assert.equal(logoutOld.body.errcode, 'M_UNKNOWN_TOKEN');
    assert.ok(h.homeserver.devices('alice').has('REUSEDDEV'));
    assert.equal((await h.request('GET', WHOAMI, { token: second.body.access_token })).status, 200);
  });

  test('logout: token required, ends the session and removes the device at the homeserver at once', async () => {
    assert.equal((await h.request('POST', '/_matrix/client/v3/logout')).body.errcode, 'M_MISSING_TOKEN');
    assert.equal((await h.request('POST', '/_matrix/client/v3/logout', { token: 'invalidAccessToken' })).body.errcode, 'M_UNKNOWN_TOKEN');
    const login = await h.passwordLogin('alice', h.op.users.alice.password);
    assert.equal((await h.request('GET', WHOAMI, { token: login.body.access_token })).status, 200); // now cached by the homeserver
    const out = await h.request('POST', `/_matrix/client/r0/logout?access_token=${login.body.access_token}`);
    assert.equal(out.status, 200);
    assert.deepEqual(out.body, {});
    assert.equal(h.homeserver.devices('alice').has(login.body.device_id), false);
    const after = await h.request('GET', WHOAMI, { token: login.body.access_token });
    assert.equal(after.status, 401);
    assert.equal(after.body.errcode, 'M_UNKNOWN_TOKEN');
    const again = await h.request('POST', '/_matrix/client/v3/logout', { token: login.body.access_token });
    assert.equal(again.status, 401);
    assert.equal(again.body.soft_logout, undefined);
  });

  test('logout/all ends every legacy session of the user, and only theirs', async () => {
    const a1 = await h.passwordLogin('alice', h.op.users.alice.password);
    const a2 = await h.passwordLogin('alice', h.op.users.alice.password);
    const b = await h.passwordLogin('bob', h.op.users.bob.password);
    const out = await h.request('POST', '/_matrix/client/v3/logout/all', { token: a1.body.access_token, body: {} });
    assert.equal(out.status, 200);
    for (const token of [a1.body.access_token, a2.body.access_token]) assert.equal((await h.request('GET', WHOAMI, { token })).status, 401);
    assert.equal((await h.request('GET', WHOAMI, { token: b.body.access_token })).status, 200);
  });

  test('a token the proxy did not issue cannot log out here', async () => {
    const out = await h.request('POST', '/_matrix/client/v3/logout', { token: 'eyJhbGciOiJSUzI1NiJ9.e30.c2ln' });
    assert.equal(out.status, 401);
    assert.equal(out.body.errcode, 'M_UNKNOWN_TOKEN');
  });

  test('refresh cycle on /v3, /r0 and /v1; reuse of an old generation revokes the family', async () => {
    const login = await h.passwordLogin('alice', h.op.users.alice.password, { refresh_token: true });
    assert.equal(login.body.expires_in_ms, 300_000);
    const r1 = await h.request('POST', '/_matrix/client/v1/refresh', { body: { refresh_token: login.body.refresh_token } });
    assert.equal(r1.status, 200);
    assert.equal(r1.body.expires_in_ms, 300_000);
    assert.notEqual(r1.body.access_token, login.body.access_token);
    assert.notEqual(r1.body.refresh_token, login.body.refresh_token);
    // A lost response: the same refresh token again gives the same pair while the new one is unused.
    const retry = await h.request('POST', '/_matrix/client/v3/refresh', { body: { refresh_token: login.body.refresh_token } });
    assert.equal(retry.body.access_token, r1.body.access_token);
    assert.equal(retry.body.refresh_token, r1.body.refresh_token);
    assert.equal((await h.request('GET', WHOAMI, { token: r1.body.access_token })).status, 200);
    const r2 = await h.request('POST', '/_matrix/client/r0/refresh', { body: { refresh_token: r1.body.refresh_token } });
    assert.equal(r2.status, 200);
    // r1's refresh token was superseded and r2's access token not used yet: r1 still works (idempotent)...
    // ...but the original refresh token is two generations old: reuse → the whole session ends.
    const reuse = await h.request('POST', '/_matrix/client/v3/refresh', { body: { refresh_token: login.body.refresh_token } });
    assert.equal(reuse.status, 401);
    assert.equal(reuse.body.errcode, 'M_UNKNOWN_TOKEN');
    assert.equal((await h.request('POST', '/_matrix/client/v3/refresh', { body: { refresh_token: r2.body.refresh_token } })).status, 401);
    assert.equal(h.homeserver.devices('alice').has(login.body.device_id), false);
    assert.equal((await h.request('POST', '/_matrix/client/v3/refresh', { body: {} })).body.errcode, 'M_BAD_JSON');
    assert.equal((await h.request('POST', '/_matrix/client/v3/refresh', { body: { refresh_token: 'garbage' } })).status, 401);
  });

  test('20 concurrent refreshes through HTTP all get the same new pair', async () => {
    const login = await h.passwordLogin('bob', h.op.users.bob.password, { refresh_token: true });
    const results = await Promise.all(
      Array.from({ length: 20 }, () => h.request('POST', '/_matrix/client/v3/refresh', { body: { refresh_token: login.body.refresh_token } })),
    );
    assert.ok(results.every((r) => r.status === 200));
    assert.equal(new Set(results.map((r) => `${r.body.access_token} ${r.body.refresh_token}`)).size, 1);
  });

  test('m.login.token: single use; unknown → 403', async () => {
    const token = await h.deps.loginTokens.mint(
      { localpart: 'alice', origin: { kind: 'sso', idpId: 'testop', issuer: h.op.issuer, sub: h.op.users.alice.sub, lastValidatedAt: Date.now() } },
      120_000,
    );
    const first = await h.request('POST', LOGIN, { body: { type: 'm.login.token', token } });
    assert.equal(first.status, 200);
    assert.equal(first.body.user_id, `@alice:${SERVER_NAME}`);
    const replay = await h.request('POST', LOGIN, { body: { type: 'm.login.token', token } });
    assert.equal(replay.status, 403);
    assert.equal(replay.body.errcode, 'M_FORBIDDEN');
    assert.equal((await h.request('POST', LOGIN, { body: { type: 'm.login.token', token: 'x'.repeat(32) } })).status, 403);
  });

  test('a login token refused for a deactivated account: 403 M_USER_DEACTIVATED, and its OP grant is revoked at the OP', async () => {
    const bob = h.homeserver.users.get('bob');
    assert.ok(bob);
    const origin = { kind: 'sso' as const, idpId: 'testop', issuer: h.op.issuer, sub: h.op.users.bob.sub, lastValidatedAt: Date.now(), sealedOpRefreshToken: h.deps.keys.seal('op-refresh-token-of-the-sign-in') };
    assert.equal((await h.passwordLogin('bob', h.op.users.bob.password)).status, 200);
    const token = await h.deps.loginTokens.mint({ localpart: 'bob', origin }, 120_000);
    const revocationsBefore = h.op.requestCount('/token/revocation');
    bob.deactivated = true;
    try {
      const response = await h.request('POST', LOGIN, { body: { type: 'm.login.token', token } });
      assert.equal(response.status, 403);
      assert.equal(response.body.errcode, 'M_USER_DEACTIVATED');
    } finally {
      bob.deactivated = false;
    }
    // In the background, after the answer.
    for (let waited = 0; waited < 2000 && h.op.requestCount('/token/revocation') === revocationsBefore; waited += 20) await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(h.op.requestCount('/token/revocation'), revocationsBefore + 1);
  });

  test('OP unreachable → 503 M_UNKNOWN (never 401/403)', async () => {
    h.op.setDown(true);
    try {
      const { status, body } = await h.passwordLogin('alice', h.op.users.alice.password);
      assert.equal(status, 503);
      assert.equal(body.errcode, 'M_UNKNOWN');
    } finally {
      h.op.setDown(false);
    }
  });

  test('homeserver provisioning failure → 503 and no half-made session', async () => {
    const devicesBefore = h.homeserver.devices('bob').size;
    const sessionsBefore = (await h.deps.sessions.idsOfUser('bob')).sort();
    h.homeserver.failProvisioning('upsert_device', 500, 10);
    // Without a device_id (the session is written while the device is created) and with one (device first).
    for (const extra of [{}, { device_id: 'FAILEDDEV' }]) {
      const { status, body } = await h.passwordLogin('bob', h.op.users.bob.password, extra);
      assert.equal(status, 503, JSON.stringify(body));
      assert.equal(h.homeserver.devices('bob').size, devicesBefore);
      assert.deepEqual((await h.deps.sessions.idsOfUser('bob')).sort(), sessionsBefore);
    }
    h.homeserver.failProvisioning('upsert_device', 200, 0);
  });

  test('a back-channel logout that arrives between the OP answer and the session write ends the new session, device and all', async () => {
    await backchannelLogoutDuringLogin(h);
  });

  test('a login token dies when its localpart is re-bound to another subject before redemption', async () => {
    assert.equal((await h.passwordLogin('alice', h.op.users.alice.password)).status, 200);
    const origin = { kind: 'sso' as const, idpId: 'testop', issuer: h.op.issuer, sub: h.op.users.alice.sub, lastValidatedAt: Date.now() };
    const token = await h.deps.loginTokens.mint({ localpart: 'alice', origin }, 120_000);
    const original = await h.deps.bindings.remove(h.op.issuer, h.op.users.alice.sub);
    assert.ok(original);
    const rebound = await h.deps.bindings.claim({ issuer: h.op.issuer, sub: 'another-subject', localpart: 'alice', idpId: 'testop' });
    assert.ok(rebound.ok);
    try {
      const response = await h.request('POST', LOGIN, { body: { type: 'm.login.token', token } });
      assert.equal(response.status, 403);
    } finally {
      await h.deps.bindings.remove(h.op.issuer, 'another-subject');
      await h.deps.bindings.claim({ issuer: original.issuer, sub: original.sub, localpart: original.localpart, idpId: original.idpId });
    }
  });
});

describe('logins racing an OP logout or a binding deletion (Redis store: the session write and its checks are one script)', () => {
  let h: Harness;
  before(async () => {
    h = await startProxyHarness({ store: 'redis' });
  });
  after(async () => {
    await h.stop();
  });

  test('a back-channel logout while the login waits for the device ends the new session, device and all', async () => {
    await backchannelLogoutDuringLogin(h);
  });

  test('a back-channel logout after the OP answered, while the account is being resolved, refuses the login', async () => {
    const bob = h.op.users.bob;
    assert.equal((await h.passwordLogin('bob', bob.password)).status, 200);
    let answered = () => {};
    const tokenAnswered = new Promise<void>((resolve) => (answered = resolve));
    h.op.interceptTokenResponses((body) => {
      answered();
      return body;
    });
    // The homeserver's answer about bob (asked for while the OP checks the password) is held: the login waits in
    // account resolution, after the OP issued its grant.
    const held = h.homeserver.holdProvisioning('query_user');
    try {
      const login = h.passwordLogin('bob', bob.password);
      await held.reached;
      await tokenAnswered;
      await logOutAtOp(h, bob.sub);
      // The proxy's clock moves on: a sign-in time taken after the answer would now be later than the logout's marker.
      await sleep(5);
      held.release();
      const { status, body } = await login;
      assert.equal(status, 403, `a session made from a grant the OP logged out stands: ${JSON.stringify(body)}`);
      assert.match(body.error, /ended at the identity provider/);
      assert.deepEqual(await h.deps.sessions.idsOfUser('bob'), []);
    } finally {
      held.release();
      h.op.interceptTokenResponses(undefined);
    }
    assert.equal((await h.passwordLogin('bob', bob.password)).status, 200);
  });

  test('a binding deleted while an m.login.token login waits for the device refuses the login', async () => {
    assert.equal((await h.passwordLogin('bob', h.op.users.bob.password)).status, 200);
    const binding = await h.deps.bindings.findByLocalpart('bob');
    assert.ok(binding);
    const origin = { kind: 'sso' as const, idpId: IDP_ID, issuer: binding.issuer, sub: binding.sub, lastValidatedAt: Date.now() };
    const token = await h.deps.loginTokens.mint({ localpart: 'bob', origin }, 120_000);
    const held = h.homeserver.holdProvisioning('upsert_device');
    const login = h.request('POST', LOGIN, { body: { type: 'm.login.token', token } });
    await held.reached;
    // What the admin route does (admin-routes.ts deleteBinding): sweep the sessions, remove, sweep again.
    const sweep = async () => h.deps.lifecycle.endMany(await h.deps.sessions.idsOfUser('bob'), 'admin');
    await sweep();
    await h.deps.bindings.remove(binding.issuer, binding.sub);
    await sweep();
    held.release();
    const answer = await login;
    assert.equal(answer.status, 403, JSON.stringify(answer.body));
    assert.match(answer.body.error, /account changed during sign-in/);
    assert.deepEqual(await h.deps.sessions.idsOfUser('bob'), []);
    await h.deps.bindings.claim({ issuer: binding.issuer, sub: binding.sub, localpart: 'bob', idpId: binding.idpId });
  });
});

describe('throttling, appservices, token expiry and storage (Redis store)', () => {
  let h: Harness;
  let clock: FakeClock;
  let registrationDir: string;
  before(async () => {
    clock = new FakeClock(Date.now());
    registrationDir = await mkdtemp(join(tmpdir(), 'mcp-as-'));
    await writeFile(
      join(registrationDir, 'bridge.yaml'),
      ['id: bridge', 'url: http://127.0.0.1:1', 'as_token: as-token-of-the-bridge-0123456789', 'hs_token: hs-token', 'sender_localpart: bridgebot', 'namespaces:', '  users:', `    - exclusive: true`, `      regex: '@bridge_.*:${SERVER_NAME.replace('.', '\\.')}'`].join('\n'),
    );
    h = await startProxyHarness({
      store: 'redis',
      clock,
      configure: (config) => {
        config['rate_limits'] = { login_per_ip: { burst: 3, per_second: 0.05 }, login_per_account: { burst: 1800, per_second: 0.5 } };
        config['appservice_config_files'] = [join(registrationDir, 'bridge.yaml')];
      },
    });
  });
  after(async () => {
    await h.stop();
  });

  test('per-IP throttle answers 429 with retry_after_ms and Retry-After, and the OP sees nothing once limited', async () => {
    for (let i = 0; i < 3; i++) assert.equal((await h.passwordLogin('alice', 'wrong')).status, 403);
    const tokenCalls = h.op.requestCount('/token');
    const limited = await h.passwordLogin('alice', h.op.users.alice.password);
    assert.equal(limited.status, 429);
    assert.equal(limited.body.errcode, 'M_LIMIT_EXCEEDED');
    assert.ok(limited.body.retry_after_ms > 0 && limited.body.retry_after_ms <= 20_000);
    assert.equal(limited.headers.get('retry-after'), String(Math.ceil(limited.body.retry_after_ms / 1000)));
    assert.equal(h.op.requestCount('/token'), tokenCalls, 'the OP saw no request once limited');
    clock.advance(20_001);
    assert.equal((await h.passwordLogin('alice', h.op.users.alice.password)).status, 200);
  });

  test('a store dump holds neither issued tokens nor the OP refresh token in clear', async () => {
    clock.advance(60_000);
    const login = await h.passwordLogin('bob', h.op.users.bob.password, { refresh_token: true });
    assert.equal(login.status, 200);
    const session = await h.deps.sessions.get(login.body.access_token.split('_')[1]);
    assert.ok(session?.origin.kind === 'password' && session.origin.sealedOpRefreshToken !== undefined, 'OP refresh token kept (sealed)');
    const opRefresh = h.deps.keys.open(session.origin.sealedOpRefreshToken);
    const { Redis } = await import('ioredis');
    assert.ok(h.redisUrl !== undefined);
    const redis = new Redis(h.redisUrl);
    try {
      const dump: string[] = [];
      let cursor = '0';
      do {
        const [next, keys] = await redis.scan(cursor, 'COUNT', 1000);
        cursor = next;
        for (const key of keys) {
          const type = await redis.type(key);
          if (type === 'string') dump.push(key, (await redis.get(key)) ?? '');
          else if (type === 'set') dump.push(key, ...(await redis.smembers(key)));
          else if (type === 'hash') dump.push(key, JSON.stringify(await redis.hgetall(key)));
        }
      } while (cursor !== '0');
      const text = dump.join('\n');
      assert.ok(text.includes(session.id), 'the dump is of the right store');
      for (const secret of [login.body.access_token, login.body.refresh_token, opRefresh]) {
        assert.ok(!text.includes(secret), 'secret found in clear in the store');
      }
      // Our tokens are <prefix>_<session id>_<secret>: the secret part alone must not be there either. (Not split for
      // the OP's token: base64url, so its `_` cuts it into fragments short enough to occur in any dump by chance.)
      for (const token of [login.body.access_token, login.body.refresh_token]) {
        const secretPart = token.split('_')[2];
        assert.ok(secretPart !== undefined && secretPart.length >= 20, `the secret part of ${token.slice(0, 5)}…`);
        assert.ok(!text.includes(secretPart), 'secret part found in clear in the store');
      }
    } finally {
      redis.disconnect();
    }
  });

  test('refreshable access tokens expire (soft logout) and still allow /logout', async () => {
    clock.advance(60_000);
    const login = await h.passwordLogin('bob', h.op.users.bob.password, { refresh_token: true });
    clock.advance(300_001);
    h.homeserver.forgetIntrospections();
    const expired = await h.request('POST', '/_matrix/client/v3/logout', { token: login.body.access_token });
    assert.equal(expired.status, 200, 'logout with an expired token is allowed');
  });

  test('login tokens expire', async () => {
    const token = await h.deps.loginTokens.mint(
      { localpart: 'alice', origin: { kind: 'sso', idpId: 'testop', issuer: h.op.issuer, sub: h.op.users.alice.sub, lastValidatedAt: clock.now() } },
      120_000,
    );
    await new Promise((resolve) => setTimeout(resolve, 5));
    // Real Redis expires by its own clock: mint one with a 50 ms lifetime to see it expire.
    const short = await h.deps.loginTokens.mint(
      { localpart: 'alice', origin: { kind: 'sso', idpId: 'testop', issuer: h.op.issuer, sub: h.op.users.alice.sub, lastValidatedAt: clock.now() } },
      50,
    );
    await new Promise((resolve) => setTimeout(resolve, 120));
    assert.equal((await h.request('POST', LOGIN, { body: { type: 'm.login.token', token: short } })).status, 403);
    assert.equal((await h.request('POST', LOGIN, { body: { type: 'm.login.token', token } })).status, 200);
  });

  test('appservice login: token checked, namespace enforced', async () => {
    clock.advance(60_000);
    const flows = await h.request('GET', LOGIN);
    assert.ok(flows.body.flows.some((f: { type: string }) => f.type === 'm.login.application_service'));
    const body = (user: string) => ({ type: 'm.login.application_service', identifier: { type: 'm.id.user', user } });
    const ok = await h.request('POST', LOGIN, { body: body('bridge_alice'), headers: { authorization: 'Bearer as-token-of-the-bridge-0123456789' } });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    assert.equal(ok.body.user_id, `@bridge_alice:${SERVER_NAME}`);
    assert.equal((await h.request('GET', WHOAMI, { token: ok.body.access_token })).body.user_id, `@bridge_alice:${SERVER_NAME}`);
    const sender = await h.request('POST', LOGIN, { body: body('bridgebot'), headers: { authorization: 'Bearer as-token-of-the-bridge-0123456789' } });
    assert.equal(sender.status, 200);
    const outside = await h.request('POST', LOGIN, { body: body('alice'), headers: { authorization: 'Bearer as-token-of-the-bridge-0123456789' } });
    assert.equal(outside.status, 400);
    assert.equal(outside.body.errcode, 'M_EXCLUSIVE');
    const spaced = await h.request('POST', LOGIN, { body: { ...body('bridge_alice'), device_id: 'DEV1 urn:synapse:admin:*' }, headers: { authorization: 'Bearer as-token-of-the-bridge-0123456789' } });
    assert.equal(spaced.status, 400, 'a device id with a space is refused at appservice login too (issue 12 #3)');
    assert.equal(spaced.body.errcode, 'M_INVALID_PARAM');
    const badToken = await h.request('POST', LOGIN, { body: body('bridge_alice'), headers: { authorization: 'Bearer wrong' } });
    assert.equal(badToken.status, 403);
    assert.equal(badToken.body.errcode, 'M_FORBIDDEN');
  });
});

describe('appservice login without registration files', () => {
  test('→ 400 M_APPSERVICE_LOGIN_UNSUPPORTED', async () => {
    const h = await startProxyHarness();
    try {
      const response = await h.request('POST', LOGIN, { body: { type: 'm.login.application_service', identifier: { type: 'm.id.user', user: 'x' } }, headers: { authorization: 'Bearer t' } });
      assert.equal(response.status, 400);
      assert.equal(response.body.errcode, 'M_APPSERVICE_LOGIN_UNSUPPORTED');
    } finally {
      await h.stop();
    }
  });
});

/** A request whose target is sent exactly as given (fetch drops a `#` and what follows it). */
function rawRequest(baseUrl: string, method: string, target: string, body?: string): Promise<{ status: number; body: string }> {
  const url = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: url.hostname, port: url.port, method, path: target, headers: body === undefined ? {} : { 'content-type': 'application/json' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * The OP's back-channel logout of the user (a real logout token signed by the OP, to the proxy's receiver) arrives
 * while the login waits for the homeserver's device: after the OP answered, before the session exists, so the
 * logout finds no session to end. The login must see the marker it left, in the step that writes the session, and
 * end that session (and its device) instead of handing out its token.
 */
async function backchannelLogoutDuringLogin(h: Harness): Promise<void> {
  const bob = h.op.users.bob;
  for (const extra of [{}, { device_id: 'LATEDEVICE' }]) {
    const devicesBefore = [...h.homeserver.devices('bob').keys()];
    const held = h.homeserver.holdProvisioning('upsert_device');
    const login = h.passwordLogin('bob', bob.password, extra);
    await held.reached;
    await logOutAtOp(h, bob.sub);
    held.release();
    const { status, body } = await login;
    assert.equal(status, 403, JSON.stringify(body));
    assert.equal(body.errcode, 'M_FORBIDDEN');
    assert.match(body.error, /ended at the identity provider/);
    // The logout ended bob's earlier sessions; the one being made is gone too.
    assert.deepEqual(await h.deps.sessions.idsOfUser('bob'), []);
    // A device id the proxy made up goes with the session; one the client sent stays (it may be a device the client
    // used before, with its E2EE keys: a refused login must not take those).
    const left = [...h.homeserver.devices('bob').keys()].filter((id) => !devicesBefore.includes(id));
    assert.deepEqual(left, 'device_id' in extra ? [extra.device_id] : []);
  }
  // A later sign-in is not affected by the marker.
  assert.equal((await h.passwordLogin('bob', bob.password)).status, 200);
}

/** The OP's back-channel logout of every session of `sub` (no sid): a logout token signed by the OP, to the proxy. */
async function logOutAtOp(h: Harness, sub: string): Promise<void> {
  const logoutToken = await h.op.signLogoutToken(h.op.logoutTokenClaims({ sub, sid: undefined }));
  const logout = await fetch(`${h.url}/_matrix-compat-proxy/backchannel-logout/${IDP_ID}`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ logout_token: logoutToken }).toString(),
  });
  assert.equal(logout.status, 200, await logout.text());
}

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createClient, type MatrixClient } from 'matrix-js-sdk';
import { startProxyHarness, SERVER_NAME, type Harness } from '../support/proxy-harness.js';
import { FakeClock } from '../support/fake-clock.js';

/**
 * Device deletion by legacy clients (issue 15): `DELETE /devices/{id}` and `POST /delete_devices` with
 * User-Interactive Auth terminated at the proxy, driven by matrix-js-sdk as Element's "sign out" does, against the
 * in-process OP and the homeserver double (which, like Synapse under delegated auth, refuses these itself).
 */

interface JsError {
  readonly httpStatus?: number;
  readonly errcode?: string;
  readonly data?: Record<string, any>;
}

async function uiaError(promise: Promise<unknown>): Promise<JsError> {
  try {
    await promise;
  } catch (err: unknown) {
    return err as JsError;
  }
  assert.fail('expected the request to fail');
}

describe('device deletion with User-Interactive Auth at the proxy', () => {
  let h: Harness;
  const clock = new FakeClock(Date.now());
  const clients: MatrixClient[] = [];

  before(async () => {
    h = await startProxyHarness({ clock });
  });
  after(async () => {
    for (const client of clients) client.stopClient();
    await h.stop();
  });

  async function signIn(user: 'alice' | 'bob', name: string): Promise<{ client: MatrixClient; deviceId: string; token: string }> {
    const anonymous = createClient({ baseUrl: h.url });
    const login = await anonymous.loginRequest({
      type: 'm.login.password',
      identifier: { type: 'm.id.user', user },
      password: h.op.users[user].password,
      initial_device_display_name: name,
    });
    const client = createClient({ baseUrl: h.url, accessToken: login.access_token, userId: login.user_id, deviceId: login.device_id });
    clients.push(anonymous, client);
    return { client, deviceId: login.device_id, token: login.access_token };
  }

  const passwordAuth = (user: string, password: string, session: string) => ({ type: 'm.login.password', identifier: { type: 'm.id.user', user }, password, session });

  test('DELETE /devices/{id}: 401 with the flows, then the password → device gone at the homeserver, its token dead', async () => {
    const phone = await signIn('alice', 'phone');
    const laptop = await signIn('alice', 'laptop');
    assert.ok(h.homeserver.devices('alice').has(laptop.deviceId));

    const challenge = await uiaError(phone.client.deleteDevice(laptop.deviceId));
    assert.equal(challenge.httpStatus, 401);
    const data = challenge.data!;
    assert.deepEqual(data['flows'], [{ stages: ['m.login.password'] }, { stages: ['m.login.sso'] }]);
    assert.deepEqual(data['params'], {});
    assert.match(data['session'], /^[0-9A-Za-z]{32}$/);
    assert.equal(data['errcode'], undefined, 'the first challenge names no error');

    const wrong = await uiaError(phone.client.deleteDevice(laptop.deviceId, passwordAuth('alice', 'not-her-password', data['session'])));
    assert.equal(wrong.httpStatus, 401);
    assert.equal(wrong.errcode, 'M_FORBIDDEN');
    assert.equal(wrong.data!['session'], data['session'], 'a failed stage keeps the session');
    assert.ok(h.homeserver.devices('alice').has(laptop.deviceId));

    await phone.client.deleteDevice(laptop.deviceId, passwordAuth('alice', h.op.users.alice.password, data['session']));
    assert.equal(h.homeserver.devices('alice').has(laptop.deviceId), false);
    const dead = await h.request('GET', '/_matrix/client/v3/account/whoami', { token: laptop.token });
    assert.equal(dead.status, 401);
    assert.equal(dead.body.errcode, 'M_UNKNOWN_TOKEN');
    assert.equal((await h.deps.sessions.idOfDevice('alice', laptop.deviceId)), undefined, 'its proxy session ended');
    assert.equal((await phone.client.whoami()).device_id, phone.deviceId, 'the caller stays signed in');
  });

  test('POST /delete_devices: password stage in the first request; another account in the auth dict is refused', async () => {
    const keep = await signIn('alice', 'keep');
    const a = await signIn('alice', 'old-1');
    const b = await signIn('alice', 'old-2');
    // Password for bob's account while signed in as alice: nothing is deleted.
    const impostor = await uiaError(keep.client.deleteMultipleDevices([a.deviceId, b.deviceId], { type: 'm.login.password', identifier: { type: 'm.id.user', user: 'bob' }, password: h.op.users.bob.password } as never));
    assert.equal(impostor.httpStatus, 401);
    assert.equal(impostor.errcode, 'M_FORBIDDEN');
    assert.ok(h.homeserver.devices('alice').has(a.deviceId));

    await keep.client.deleteMultipleDevices([a.deviceId, b.deviceId], { type: 'm.login.password', identifier: { type: 'm.id.user', user: `@alice:${SERVER_NAME}` }, password: h.op.users.alice.password } as never);
    assert.equal(h.homeserver.devices('alice').has(a.deviceId), false);
    assert.equal(h.homeserver.devices('alice').has(b.deviceId), false);
    for (const token of [a.token, b.token]) assert.equal((await h.request('GET', '/_matrix/client/v3/account/whoami', { token })).status, 401);
  });

  test('another user\'s device id names nothing of theirs', async () => {
    const alice = await signIn('alice', 'alice-device');
    const bob = await signIn('bob', 'bob-device');
    const challenge = await uiaError(alice.client.deleteDevice(bob.deviceId));
    await alice.client.deleteDevice(bob.deviceId, passwordAuth('alice', h.op.users.alice.password, challenge.data!['session']));
    assert.ok(h.homeserver.devices('bob').has(bob.deviceId), "bob's device is still there");
    assert.equal((await bob.client.whoami()).user_id, `@bob:${SERVER_NAME}`);
  });

  test('a UIA session is bound to its token and its operation, used up once, and the reuse window ends', async () => {
    const first = await signIn('alice', 'first');
    const other = await signIn('alice', 'other');
    const target1 = await signIn('alice', 'target-1');
    const target2 = await signIn('alice', 'target-2');
    const target3 = await signIn('alice', 'target-3');

    const challenge = await uiaError(first.client.deleteDevice(target1.deviceId));
    const session = challenge.data!['session'] as string;
    // Another sign-in of the same user presenting that session: refused, nothing deleted.
    const stolen = await uiaError(other.client.deleteDevice(target1.deviceId, passwordAuth('alice', h.op.users.alice.password, session)));
    assert.equal(stolen.httpStatus, 403);
    // The same token for another device than the session was started for.
    const changed = await uiaError(first.client.deleteDevice(target2.deviceId, passwordAuth('alice', h.op.users.alice.password, session)));
    assert.equal(changed.httpStatus, 403);
    assert.ok(h.homeserver.devices('alice').has(target2.deviceId));

    await first.client.deleteDevice(target1.deviceId, passwordAuth('alice', h.op.users.alice.password, session));
    // Replayed by another token: the session was used up.
    const replayed = await uiaError(other.client.deleteDevice(target2.deviceId, { type: 'm.login.sso', session } as never));
    assert.equal(replayed.httpStatus, 400);
    assert.equal(replayed.errcode, 'M_UNKNOWN');
    assert.ok(h.homeserver.devices('alice').has(target2.deviceId));

    // Synapse's ui_auth.session_timeout: the token that just passed is not asked again for a while…
    await first.client.deleteDevice(target2.deviceId);
    assert.equal(h.homeserver.devices('alice').has(target2.deviceId), false);
    // …and is after the window.
    clock.advance(h.config.sessions.uia_reuse_window + 1000);
    const again = await uiaError(first.client.deleteDevice(target3.deviceId));
    assert.equal(again.httpStatus, 401);
    assert.ok(h.homeserver.devices('alice').has(target3.deviceId));
  });

  test('a native OIDC client\'s device (known to the homeserver only) is deleted too', async () => {
    const legacy = await signIn('alice', 'legacy');
    const nativeToken = await opToken(h, 'alice', 'NATIVEDEL1');
    assert.equal((await h.request('GET', '/_matrix/client/v3/account/whoami', { token: nativeToken })).body.device_id, 'NATIVEDEL1');
    const challenge = await uiaError(legacy.client.deleteDevice('NATIVEDEL1'));
    await legacy.client.deleteDevice('NATIVEDEL1', passwordAuth('alice', h.op.users.alice.password, challenge.data!['session']));
    assert.equal(h.homeserver.devices('alice').has('NATIVEDEL1'), false);
    assert.equal((await h.request('GET', '/_matrix/client/v3/account/whoami', { token: nativeToken })).status, 401);
  });

  test("a native client's own DELETE goes on to the homeserver; GET and PUT of a device are the homeserver's", async () => {
    const nativeToken = await opToken(h, 'alice', 'NATIVEDEL2');
    h.homeserver.requestsSeen.length = 0;
    const relayed = await h.request('DELETE', '/_matrix/client/v3/devices/NATIVEDEL2', { token: nativeToken, body: {} });
    // What Synapse answers a user under delegated auth (the double models it).
    assert.equal(relayed.status, 404);
    assert.equal(relayed.body.errcode, 'M_UNRECOGNIZED');
    assert.ok(h.homeserver.requestsSeen.includes('DELETE /_matrix/client/v3/devices/NATIVEDEL2'));
    const legacy = await signIn('alice', 'reader');
    const got = await h.request('GET', `/_matrix/client/v3/devices/${legacy.deviceId}`, { token: legacy.token });
    assert.equal(got.body.display_name, 'reader');
    assert.ok(h.homeserver.requestsSeen.includes(`GET /_matrix/client/v3/devices/${legacy.deviceId}`));
  });

  test('POST /account/password and /account/deactivate say where to go instead of a bare 404', async () => {
    const { token } = await signIn('alice', 'settings');
    for (const path of ['/_matrix/client/v3/account/password', '/_matrix/client/r0/account/deactivate']) {
      const response = await h.request('POST', path, { token, body: { auth: { type: 'm.login.password' } } });
      assert.equal(response.status, 403, path);
      assert.equal(response.body.errcode, 'M_FORBIDDEN');
      assert.match(response.body.error, /identity provider.*http:\/\//);
    }
  });
});

/** A native OIDC client's token, straight from the OP with the Matrix scopes (no proxy involved). */
async function opToken(h: Harness, user: 'alice' | 'bob', deviceId: string): Promise<string> {
  const response = await fetch(`${h.op.issuer}/token`, {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from(`${h.op.clientId}:${h.op.clientSecret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'password',
      username: user,
      password: h.op.users[user].password,
      scope: `openid urn:matrix:client:api:* urn:matrix:client:device:${deviceId}`,
    }),
  });
  const body = (await response.json()) as { access_token?: string };
  assert.equal(response.status, 200, JSON.stringify(body));
  return body.access_token!;
}

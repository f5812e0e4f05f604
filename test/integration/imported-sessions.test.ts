import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createApp } from '../../src/app.js';
import { ADMIN_TOKEN, IDP_ID, startProxyHarness, type Harness } from '../support/proxy-harness.js';

/*
 * Sessions imported from Synapse (issue 14) behave like the proxy's own wherever a session can end: the homeserver's
 * introspection recognises the Synapse token, and logout, logout/all, the admin API, binding deletion, a back-channel
 * logout of the bound subject and an OP login on the same device all end it. Real HTTP through the proxy, the
 * in-process OP and the homeserver double (which introspects like Synapse).
 */

const WHOAMI = '/_matrix/client/v3/account/whoami';
const LIFETIME = 90 * 86_400_000;

describe('imported Synapse sessions', () => {
  let h: Harness;
  let admin: { url: string; close(): Promise<void> };
  let counter = 0;

  before(async () => {
    h = await startProxyHarness();
    const handlers = createApp(h.deps, { forward: (_req, res) => res.writeHead(502).end(), close: () => undefined }, { check: async () => ({ ok: true, checks: {} }) });
    const server: Server = createServer(handlers.homeserverFacing);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    admin = {
      url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      close: () => new Promise<void>((resolve) => server.close(() => resolve())),
    };
    // alice signs in once through the OP: the user exists at the homeserver and her binding exists.
    assert.equal((await h.passwordLogin('alice', h.op.users.alice.password)).status, 200);
  });
  after(async () => {
    await admin.close();
    await h.stop();
  });

  /** A Synapse session as `migrate synapse` imports it: a `syt_` token on a device Synapse kept. */
  async function imported(options: { bound: boolean; refresh?: boolean }): Promise<{ token: string; refreshToken: string; deviceId: string }> {
    counter++;
    const deviceId = `SYNAPSEDEV${counter}`;
    const token = `syt_YWxpY2U_imported${String(counter).padStart(10, '0')}_1a2B3c`;
    const refreshToken = `syr_YWxpY2U_imported${String(counter).padStart(10, '0')}_9z8Y7x`;
    await h.deps.homeserver.upsertDevice('alice', deviceId, 'phone from before');
    const now = h.deps.clock.now();
    const outcome = await h.deps.sessions.importSession({
      localpart: 'alice',
      deviceId,
      accessToken: token,
      ...(options.refresh === true ? { refreshToken, accessExpiresAt: now + 300_000 } : {}),
      origin: { kind: 'imported', importedAt: now, endsAt: now + LIFETIME, ...(options.bound ? { idpId: IDP_ID, issuer: h.op.issuer, sub: h.op.users.alice.sub } : {}) },
    });
    assert.equal(outcome, 'imported');
    return { token, refreshToken, deviceId };
  }

  const whoami = async (token: string) => {
    h.homeserver.forgetIntrospections();
    const response = await fetch(`${h.homeserver.url}${WHOAMI}`, { headers: { authorization: `Bearer ${token}` } });
    return { status: response.status, body: (await response.json()) as { user_id?: string; device_id?: string } };
  };

  test('the homeserver\'s introspection recognises an imported Synapse token', async () => {
    const session = await imported({ bound: false });
    const answer = await whoami(session.token);
    assert.deepEqual([answer.status, answer.body.device_id], [200, session.deviceId]);
    assert.equal((await whoami('syt_never_imported_0000000000_xyz')).status, 401, 'an unknown foreign token is not active');
  });

  test('logout and logout/all end imported sessions at once', async () => {
    const one = await imported({ bound: false });
    assert.equal((await h.request('POST', '/_matrix/client/v3/logout', { token: one.token, body: {} })).status, 200);
    assert.equal((await whoami(one.token)).status, 401);
    assert.equal(h.homeserver.devices('alice').has(one.deviceId), false, 'the device is deleted like any logout');

    const two = await imported({ bound: false });
    const three = await imported({ bound: true });
    assert.equal((await h.request('POST', '/_matrix/client/v3/logout/all', { token: two.token, body: {} })).status, 200);
    assert.equal((await whoami(two.token)).status, 401);
    assert.equal((await whoami(three.token)).status, 401);
    assert.equal((await h.passwordLogin('alice', h.op.users.alice.password)).status, 200);
  });

  test('the admin API lists and ends them', async () => {
    const session = await imported({ bound: false });
    const headers = { authorization: `Bearer ${ADMIN_TOKEN}` };
    const listed = (await (await fetch(`${admin.url}/_matrix-compat-proxy/admin/v1/users/alice/sessions`, { headers })).json()) as { sessions: { device_id: string; login_type: string; ends_ts?: number }[] };
    const row = listed.sessions.find((entry) => entry.device_id === session.deviceId);
    assert.equal(row?.login_type, 'imported');
    assert.equal(typeof row?.ends_ts, 'number');
    assert.equal((await fetch(`${admin.url}/_matrix-compat-proxy/admin/v1/users/alice/sessions`, { method: 'DELETE', headers })).status, 200);
    assert.equal((await whoami(session.token)).status, 401);
    assert.equal((await h.passwordLogin('alice', h.op.users.alice.password)).status, 200);
  });

  test('a back-channel logout of the bound subject ends them; an unbound one is not the OP\'s to end', async () => {
    const bound = await imported({ bound: true });
    const unbound = await imported({ bound: false });
    await h.op.sendBackchannelLogout({ sub: h.op.users.alice.sub });
    assert.equal((await whoami(bound.token)).status, 401);
    assert.equal((await whoami(unbound.token)).status, 200);
  });

  test('an OP login on the same device upgrades the imported session; refresh rotates into a proxy pair', async () => {
    const session = await imported({ bound: false, refresh: true });
    const refreshed = await h.request('POST', '/_matrix/client/v3/refresh', { body: { refresh_token: session.refreshToken } });
    assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
    assert.match(refreshed.body.access_token, /^mcpa_/);
    assert.equal((await whoami(refreshed.body.access_token)).body.device_id, session.deviceId);

    const login = await h.passwordLogin('alice', h.op.users.alice.password, { device_id: session.deviceId });
    assert.equal(login.status, 200);
    assert.equal(login.body.device_id, session.deviceId);
    assert.equal((await whoami(refreshed.body.access_token)).status, 401, 'the imported session was replaced');
    assert.equal(h.homeserver.devices('alice').has(session.deviceId), true, 'the device (and its keys) stayed');
    const now = await h.deps.sessions.authenticate(login.body.access_token);
    assert.ok(now.ok && now.session.origin.kind === 'password', 'a normal session, re-validated at the OP from now on');
  });

  test('deleting the binding ends the imported sessions made under it', async () => {
    const bound = await imported({ bound: true });
    const headers = { authorization: `Bearer ${ADMIN_TOKEN}` };
    const path = `/_matrix-compat-proxy/admin/v1/bindings/${encodeURIComponent(h.op.issuer)}/${encodeURIComponent(h.op.users.alice.sub)}`;
    assert.equal((await fetch(`${admin.url}${path}`, { method: 'DELETE', headers })).status, 200);
    assert.equal((await whoami(bound.token)).status, 401);
  });
});

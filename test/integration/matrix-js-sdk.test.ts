import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createClient } from 'matrix-js-sdk';
import { startProxyHarness, SERVER_NAME, type Harness } from '../support/proxy-harness.js';

// A real legacy client: matrix-js-sdk drives the proxy exactly as Element Web's login code does.
let h: Harness;
before(async () => {
  h = await startProxyHarness();
});
after(async () => {
  await h.stop();
});

test('matrix-js-sdk: loginFlows → password login → whoami → logout', async () => {
  const anonymous = createClient({ baseUrl: h.url });
  const flows = await anonymous.loginFlows();
  assert.deepEqual(flows.flows.map((flow) => flow.type), ['m.login.password', 'm.login.sso', 'm.login.token']);

  const login = await anonymous.loginRequest({
    type: 'm.login.password',
    identifier: { type: 'm.id.user', user: 'alice' },
    password: h.op.users.alice.password,
    initial_device_display_name: 'matrix-js-sdk test',
  });
  assert.equal(login.user_id, `@alice:${SERVER_NAME}`);

  const client = createClient({ baseUrl: h.url, accessToken: login.access_token, userId: login.user_id, deviceId: login.device_id });
  const whoami = await client.whoami();
  assert.equal(whoami.user_id, login.user_id);
  assert.equal(whoami.device_id, login.device_id);

  await client.logout(true);
  await assert.rejects(client.whoami(), (err: { errcode?: string; httpStatus?: number }) => err.errcode === 'M_UNKNOWN_TOKEN' && err.httpStatus === 401);
  anonymous.stopClient();
  client.stopClient();
});

test('matrix-js-sdk: refresh cycle', async () => {
  const anonymous = createClient({ baseUrl: h.url });
  const login = await anonymous.loginRequest({
    type: 'm.login.password',
    identifier: { type: 'm.id.user', user: 'bob' },
    password: h.op.users.bob.password,
    refresh_token: true,
  });
  assert.ok(login.refresh_token);
  assert.equal(login.expires_in_ms, 300_000);
  const refreshed = await anonymous.refreshToken(login.refresh_token);
  assert.ok(refreshed.access_token && refreshed.access_token !== login.access_token);
  assert.ok(refreshed.refresh_token && refreshed.refresh_token !== login.refresh_token);
  const client = createClient({ baseUrl: h.url, accessToken: refreshed.access_token, userId: login.user_id, deviceId: login.device_id });
  assert.equal((await client.whoami()).user_id, login.user_id);
  anonymous.stopClient();
  client.stopClient();
});

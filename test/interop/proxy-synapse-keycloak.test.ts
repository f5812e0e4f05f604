import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createClient, type MatrixClient } from 'matrix-js-sdk';
import { runDoctor } from '../../src/doctor/run-doctor.js';
import { freePort } from '../support/free-port.js';
import { KEYCLOAK_REALM, startKeycloak, type RunningKeycloak } from '../support/keycloak.js';
import {
  createKeycloakUser,
  interopSkipReason,
  INTEROP_SERVER_NAME,
  jsonRequest,
  nativeClientTokens,
  startInteropStack,
  type InteropStack,
  type JsonResponse,
} from '../support/interop-stack.js';

// The production path on real components: matrix-js-sdk and plain HTTP → the proxy → real Synapse (delegated auth
// pointing back at the proxy) with real Keycloak as the OP. A missing Synapse or Keycloak fails the suite with the
// install hint; only MCP_SKIP_INTEROP=1 skips it.

const WHOAMI = '/_matrix/client/v3/account/whoami';
const { alice, bob } = KEYCLOAK_REALM.users;
const mxid = (localpart: string) => `@${localpart}:${INTEROP_SERVER_NAME}`;

let keycloakStarting: Promise<RunningKeycloak> | undefined;
let keycloak: RunningKeycloak | undefined;
let stack: InteropStack;
/** A second deployment on the same Keycloak: no offline_access, back-channel logout registered, slow re-validation. */
let onlineStack: InteropStack;

/** Asks Synapse directly (not through the proxy), so an answer is provably Synapse's own. */
const atSynapse = (method: string, path: string, token: string, body?: unknown): Promise<JsonResponse> =>
  jsonRequest(`${stack.synapse.url}${path}`, method, { token, ...(body === undefined ? {} : { body }) });

function sdkClient(login?: { access_token: string; user_id: string; device_id: string }): MatrixClient {
  return createClient({ baseUrl: stack.url, ...(login === undefined ? {} : { accessToken: login.access_token, userId: login.user_id, deviceId: login.device_id }) });
}

function logsTail(of: InteropStack = stack): string {
  return `\n--- proxy log (tail) ---\n${of.logs().slice(-6000)}\n--- synapse log (tail) ---\n${of.synapse.logs().slice(-4000)}`;
}

async function login(user: string, password: string, extra: Record<string, unknown> = {}): Promise<{ access_token: string; device_id: string; user_id: string; refresh_token?: string }> {
  const response = await stack.passwordLogin(user, password, extra);
  assert.equal(response.status, 200, `login of ${user}: ${JSON.stringify(response.body)}${logsTail()}`);
  return response.body;
}

/** Runs an OP-side change through Keycloak's admin API; the clock for "→ first 401" starts when Keycloak confirmed it. */
async function opSideChange(change: () => Promise<void>): Promise<{ adminCallMs: number; doneAt: number }> {
  const started = performance.now();
  await change();
  const doneAt = performance.now();
  return { adminCallMs: Math.round(doneAt - started), doneAt };
}

/** Polls whoami through the proxy until it is refused; returns the time it took from `since`. */
async function msUntilRejected(through: InteropStack, token: string, since: number, limitMs: number): Promise<{ ms: number; response: JsonResponse }> {
  for (;;) {
    const response = await through.request('GET', WHOAMI, { token });
    if (response.status !== 200) return { ms: Math.round(performance.now() - since), response };
    if (performance.now() - since > limitMs) assert.fail(`token still accepted ${limitMs} ms after the OP-side change${logsTail(through)}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

describe('proxy + real Synapse + real Keycloak', { skip: interopSkipReason(), concurrency: true }, () => {
  before(async () => {
    const started = performance.now();
    // One Keycloak for the file; the Synapses and Redis start while it boots.
    keycloakStarting = startKeycloak();
    [stack, onlineStack] = await Promise.all([
      startInteropStack({ keycloak: keycloakStarting, revalidateInterval: '2s' }),
      startInteropStack({ keycloak: keycloakStarting, revalidateInterval: '10m', offlineAccess: false, backchannelLogout: true }),
    ]);
    keycloak = await keycloakStarting;
    console.log(
      `Keycloak ${keycloak.version} ready after ${keycloak.startupMs} ms, Synapse ${stack.synapse.version} after ${stack.synapse.startupMs} ms; ` +
        `stack up after ${Math.round(performance.now() - started)} ms`,
    );
  });
  after(async () => {
    await stack?.stop();
    await onlineStack?.stop();
    await keycloakStarting?.then((running) => running.stop(), () => undefined);
  });

  test('doctor: every check passes against Keycloak and Synapse, with a real test login', async () => {
    // A generous per-request budget: Keycloak renders its first login page slowly on a busy machine.
    const checks = await runDoctor(stack.config, { env: { MCP_DOCTOR_USERNAME: bob.username, MCP_DOCTOR_PASSWORD: bob.password }, timeoutMs: 30_000 });
    assert.deepEqual(
      checks.filter((check) => check.status === 'fail'),
      [],
      JSON.stringify(checks, null, 1),
    );
    for (const name of ['client authentication', 'password grant', 'test login', 'mapping templates', 'authorization request']) {
      assert.equal(checks.find((check) => check.check === name)?.status, 'pass', name);
    }
  });

  // Sequential among themselves (alice's and bob's sessions), alongside the source-of-truth cases below.
  describe('the legacy client API', { concurrency: 1 }, () => {
    let aliceLogin: { access_token: string; device_id: string; user_id: string };

    test('GET /login offers password, SSO (Keycloak) and token login', async () => {
      const flows = await sdkClient().loginFlows();
      assert.deepEqual(
        flows.flows.map((flow) => flow.type),
        ['m.login.password', 'm.login.sso', 'm.login.token'],
      );
      const sso = flows.flows.find((flow) => flow.type === 'm.login.sso') as { identity_providers?: { id: string }[] } | undefined;
      assert.deepEqual(sso?.identity_providers?.map((idp) => idp.id), ['keycloak']);
    });

    test('matrix-js-sdk password login, then whoami at Synapse', async () => {
      const anonymous = sdkClient();
      aliceLogin = await anonymous.loginRequest({
        type: 'm.login.password',
        identifier: { type: 'm.id.user', user: alice.username },
        password: alice.password,
        initial_device_display_name: 'interop js-sdk',
      });
      assert.equal(aliceLogin.user_id, mxid(alice.username));
      assert.match(aliceLogin.device_id, /^\S+$/);
      const whoami = await sdkClient(aliceLogin).whoami();
      assert.equal(whoami.user_id, aliceLogin.user_id);
      assert.equal(whoami.device_id, aliceLogin.device_id);
      // Synapse itself, not only the proxy's view: the user and device were provisioned there.
      const direct = await atSynapse('GET', WHOAMI, aliceLogin.access_token);
      assert.equal(direct.status, 200);
      assert.equal(direct.body.device_id, aliceLogin.device_id);
      const profile = await atSynapse('GET', `/_matrix/client/v3/profile/${encodeURIComponent(aliceLogin.user_id)}`, aliceLogin.access_token);
      assert.equal(profile.body.displayname, alice.name, 'display_name_template applied at provisioning');
    });

    test('/sync, create a room, send a message and read it back', async () => {
      const sync = await stack.request('GET', '/_matrix/client/v3/sync?timeout=0', { token: aliceLogin.access_token });
      assert.equal(sync.status, 200);
      assert.equal(typeof sync.body.next_batch, 'string');

      const room = await stack.request('POST', '/_matrix/client/v3/createRoom', { token: aliceLogin.access_token, body: { name: 'interop', preset: 'private_chat' } });
      assert.equal(room.status, 200, JSON.stringify(room.body));
      const roomId = room.body.room_id as string;
      const text = `hello from the proxy ${Date.now()}`;
      const sent = await stack.request('PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/txn-${Date.now()}`, {
        token: aliceLogin.access_token,
        body: { msgtype: 'm.text', body: text },
      });
      assert.equal(sent.status, 200, JSON.stringify(sent.body));
      const messages = await stack.request('GET', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/messages?dir=b&limit=10`, { token: aliceLogin.access_token });
      assert.equal(messages.status, 200);
      const found = (messages.body.chunk as { event_id: string; type: string; sender: string; content: { body?: string } }[]).find((event) => event.type === 'm.room.message');
      assert.equal(found?.content.body, text);
      assert.equal(found?.event_id, sent.body.event_id);
      assert.equal(found?.sender, aliceLogin.user_id);

      const synced = await stack.request('GET', `/_matrix/client/v3/sync?timeout=0&since=${encodeURIComponent(sync.body.next_batch)}`, { token: aliceLogin.access_token });
      const timeline = synced.body.rooms?.join?.[roomId]?.timeline?.events as { event_id: string }[] | undefined;
      assert.ok(timeline?.some((event) => event.event_id === sent.body.event_id), 'the message arrives by /sync');
    });

    test('the device list shows the device with its initial_device_display_name', async () => {
      const devices = await stack.request('GET', '/_matrix/client/v3/devices', { token: aliceLogin.access_token });
      assert.equal(devices.status, 200);
      const device = (devices.body.devices as { device_id: string; display_name?: string }[]).find((d) => d.device_id === aliceLogin.device_id);
      assert.equal(device?.display_name, 'interop js-sdk');
    });

    test('logout: the token fails at Synapse at once, cached introspection or not, and the device is gone', async () => {
      const second = await login(alice.username, alice.password, { initial_device_display_name: 'to log out' });
      assert.equal((await atSynapse('GET', WHOAMI, second.access_token)).status, 200); // Synapse now caches it (2 min)
      const out = await stack.request('POST', '/_matrix/client/v3/logout', { token: second.access_token });
      assert.equal(out.status, 200);
      const direct = await atSynapse('GET', WHOAMI, second.access_token);
      assert.equal(direct.status, 401);
      assert.equal(direct.body.errcode, 'M_UNKNOWN_TOKEN');
      const proxied = await stack.request('GET', WHOAMI, { token: second.access_token });
      assert.equal(proxied.status, 401);
      assert.equal(proxied.body.errcode, 'M_UNKNOWN_TOKEN');
      const devices = await stack.request('GET', '/_matrix/client/v3/devices', { token: aliceLogin.access_token });
      const ids = (devices.body.devices as { device_id: string }[]).map((d) => d.device_id);
      assert.ok(!ids.includes(second.device_id), `device ${second.device_id} still listed: ${ids.join(', ')}`);
      assert.ok(ids.includes(aliceLogin.device_id), 'the other session is untouched');
    });

    test('refresh: the new token works at Synapse, the old access token does not', async () => {
      const first = await login(alice.username, alice.password, { refresh_token: true });
      assert.equal(typeof first.refresh_token, 'string');
      const refreshed = await sdkClient().refreshToken(first.refresh_token as string);
      assert.notEqual(refreshed.access_token, first.access_token);
      const whoami = await atSynapse('GET', WHOAMI, refreshed.access_token);
      assert.equal(whoami.status, 200);
      assert.equal(whoami.body.device_id, first.device_id, 'a refresh keeps the device');
      const old = await atSynapse('GET', WHOAMI, first.access_token);
      assert.equal(old.status, 401);
      assert.equal(old.body.errcode, 'M_UNKNOWN_TOKEN');

      // Synapse keeps every introspection answer for 2 minutes and refreshing deletes no device, so an old access
      // token Synapse has already seen keeps working there for up to 2 minutes (synapse/api/auth/mas.py says so).
      const seen = await atSynapse('GET', WHOAMI, refreshed.access_token);
      assert.equal(seen.status, 200);
      const next = await sdkClient().refreshToken(refreshed.refresh_token as string);
      const stale = await atSynapse('GET', WHOAMI, refreshed.access_token);
      console.log(`an access token Synapse had already seen, right after its refresh: ${stale.status} at Synapse`);
      assert.equal((await atSynapse('GET', WHOAMI, next.access_token)).status, 200);
    });

    test('wrong password → 403 M_FORBIDDEN from Keycloak’s refusal', async () => {
      const response = await stack.passwordLogin(alice.username, 'not-the-password');
      assert.equal(response.status, 403);
      assert.equal(response.body.errcode, 'M_FORBIDDEN');
      const unknown = await stack.passwordLogin('nobody-here', 'whatever');
      assert.deepEqual({ status: unknown.status, body: unknown.body }, { status: response.status, body: response.body }, 'unknown user and wrong password look the same');
    });

    test('staged rollout: a native OIDC token from Keycloak works at Synapse through the introspection relay', async () => {
      const native = await nativeClientTokens(keycloak as RunningKeycloak, alice.username, alice.password, 'openid urn:matrix:client:api:* urn:matrix:client:device:NATIVEDEV1');
      assert.match(native.scope, /urn:matrix:client:device:NATIVEDEV1/, `Keycloak granted: ${native.scope}`);
      const whoami = await stack.request('GET', WHOAMI, { token: native.accessToken });
      assert.equal(whoami.status, 200, `${JSON.stringify(whoami.body)}${logsTail()}`);
      assert.equal(whoami.body.user_id, mxid(alice.username), 'the sub is bound to the same localpart as the legacy logins');
      assert.equal(whoami.body.device_id, 'NATIVEDEV1');
      const devices = await atSynapse('GET', '/_matrix/client/v3/devices', native.accessToken);
      const ids = (devices.body.devices as { device_id: string }[]).map((d) => d.device_id);
      assert.ok(ids.includes('NATIVEDEV1') && ids.includes(aliceLogin.device_id), `native and legacy devices side by side: ${ids.join(', ')}`);

      // Without the Matrix API scope a Keycloak token is no Matrix token.
      const plain = await nativeClientTokens(keycloak as RunningKeycloak, alice.username, alice.password, 'openid urn:matrix:client:device:NATIVEDEV2');
      const refused = await stack.request('GET', WHOAMI, { token: plain.accessToken });
      assert.equal(refused.status, 401);
      assert.equal(refused.body.errcode, 'M_UNKNOWN_TOKEN');
    });

    test('logout/all ends every legacy session of the user at Synapse', async () => {
      const one = await login(bob.username, bob.password);
      const two = await login(bob.username, bob.password);
      for (const token of [one.access_token, two.access_token]) assert.equal((await atSynapse('GET', WHOAMI, token)).status, 200);
      const out = await stack.request('POST', '/_matrix/client/v3/logout/all', { token: one.access_token, body: {} });
      assert.equal(out.status, 200);
      for (const token of [one.access_token, two.access_token]) {
        const direct = await atSynapse('GET', WHOAMI, token);
        assert.equal(direct.status, 401);
        assert.equal(direct.body.errcode, 'M_UNKNOWN_TOKEN');
      }
      const three = await login(bob.username, bob.password);
      const devices = await stack.request('GET', '/_matrix/client/v3/devices', { token: three.access_token });
      assert.deepEqual(
        (devices.body.devices as { device_id: string }[]).map((d) => d.device_id),
        [three.device_id],
      );
      // alice was not touched
      assert.equal((await atSynapse('GET', WHOAMI, aliceLogin.access_token)).status, 200);
    });

    test('Keycloak unreachable → password login 503 M_UNKNOWN (a second proxy pointed at a dead port)', async () => {
      const deadPort = await freePort();
      const second = await stack.startSecondProxy((provider) => {
        provider['issuer'] = `http://127.0.0.1:${deadPort}/realms/${KEYCLOAK_REALM.realm}`;
      });
      try {
        const response = await second.passwordLogin(alice.username, alice.password);
        assert.equal(response.status, 503, JSON.stringify(response.body));
        assert.equal(response.body.errcode, 'M_UNKNOWN');
      } finally {
        await second.stop();
      }
    });
  });

  // Keycloak is the source of truth (issue 7). Fresh users, so that disabling them disturbs no other case.
  describe('Keycloak as the source of truth', { concurrency: true }, () => {
    // Counted from Keycloak's confirmation: a poll every 250 ms, a refresh grant at Keycloak, the device deletion at
    // Synapse, on a busy machine.
    const slackMs = 5_000;

    test('a user disabled in Keycloak loses the legacy session within the re-validation interval', { timeout: 60_000 }, async () => {
      const carol = await createKeycloakUser(keycloak as RunningKeycloak, 'carol');
      const session = await login(carol.username, carol.password);
      // Synapse now holds an active introspection answer for 2 minutes: only the device's deletion can end it early.
      assert.equal((await atSynapse('GET', WHOAMI, session.access_token)).status, 200);
      const disabled = await opSideChange(() => (keycloak as RunningKeycloak).disableUser(carol.username));
      const intervalMs = stack.config.sessions.revalidate_interval;
      const { ms, response } = await msUntilRejected(stack, session.access_token, disabled.doneAt, intervalMs + slackMs);
      console.log(`disable in Keycloak (admin call ${disabled.adminCallMs} ms) → first 401 ${ms} ms later (revalidate_interval ${intervalMs} ms)`);
      assert.equal(response.status, 401, JSON.stringify(response.body));
      assert.equal(response.body.errcode, 'M_UNKNOWN_TOKEN');
      const direct = await atSynapse('GET', WHOAMI, session.access_token);
      assert.equal(direct.status, 401, 'Synapse itself refuses the token: the device is gone');
      assert.equal(direct.body.errcode, 'M_UNKNOWN_TOKEN');
      const again = await stack.passwordLogin(carol.username, carol.password);
      assert.equal(again.status, 403, 'no new session for a disabled user');
    });

    test('Keycloak’s "Sign out" of a user ends the legacy session within the re-validation interval', { timeout: 60_000 }, async () => {
      const dave = await createKeycloakUser(keycloak as RunningKeycloak, 'dave');
      const session = await login(dave.username, dave.password);
      assert.equal((await atSynapse('GET', WHOAMI, session.access_token)).status, 200);
      // Keycloak keeps offline sessions on "Sign out" and sends no back-channel logout for them; it only sets the
      // user's not-before time, in whole seconds, and refuses older tokens (iat < not-before) as "Stale token". A
      // grant issued in the same second as the sign-out survives it, so sign out in a later second.
      await new Promise((resolve) => setTimeout(resolve, 1_100));
      const signedOut = await opSideChange(() => (keycloak as RunningKeycloak).logoutUser(dave.username));
      const intervalMs = stack.config.sessions.revalidate_interval;
      const { ms, response } = await msUntilRejected(stack, session.access_token, signedOut.doneAt, intervalMs + slackMs);
      console.log(`sign-out in Keycloak, offline session (admin call ${signedOut.adminCallMs} ms) → first 401 ${ms} ms later, by re-validation`);
      assert.equal(response.status, 401, JSON.stringify(response.body));
      assert.equal((await atSynapse('GET', WHOAMI, session.access_token)).status, 401);
      const again = await login(dave.username, dave.password);
      assert.equal((await atSynapse('GET', WHOAMI, again.access_token)).status, 200, 'a sign-out is not a ban');
    });

    test('Keycloak’s "Sign out" reaches a proxy without offline_access at once, by back-channel logout', { timeout: 60_000 }, async () => {
      const erin = await createKeycloakUser(keycloak as RunningKeycloak, 'erin');
      const response = await onlineStack.passwordLogin(erin.username, erin.password);
      assert.equal(response.status, 200, JSON.stringify(response.body));
      const token = response.body.access_token as string;
      assert.equal((await jsonRequest(`${onlineStack.synapse.url}${WHOAMI}`, 'GET', { token })).status, 200);
      const signedOut = await opSideChange(() => (keycloak as RunningKeycloak).logoutUser(erin.username));
      // This stack re-validates only every 10 minutes: a quick 401 can only come from the logout token.
      const { ms, response: rejected } = await msUntilRejected(onlineStack, token, signedOut.doneAt, slackMs);
      console.log(`sign-out in Keycloak (admin call ${signedOut.adminCallMs} ms) → back-channel logout → first 401 ${ms} ms later`);
      assert.equal(rejected.status, 401);
      const direct = await jsonRequest(`${onlineStack.synapse.url}${WHOAMI}`, 'GET', { token });
      assert.equal(direct.status, 401);
      assert.equal(direct.body.errcode, 'M_UNKNOWN_TOKEN');
      assert.match(onlineStack.logs(), /"msg":"backchannel_logout.ok"/, "the proxy accepted Keycloak’s logout token");
    });
  });
});

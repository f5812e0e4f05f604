import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createClient } from 'matrix-js-sdk';
import { registerWithSharedSecret, writeRegistrations, type RegistrationFiles } from './appservice-homeserver.js';
import { interopSkipReason } from './interop-stack.js';
import { jsonRequest, type JsonResponse } from './json-request.js';
import { SERVER_NAME, startProxyHarness, type Harness } from './proxy-harness.js';
import { locationOf, ProxyBrowser } from './proxy-browser.js';
import { sessionKeys } from '../../src/sessions/session-store.js';
import { generateKeyPairSync } from 'node:crypto';
import { completeAuthorizationCodeGrant } from 'matrix-js-sdk';
import { authorizationUrl, codeVerifierOf, discover, follow, REDIRECT_URI, register, signInPageOf } from './native-client.js';
import { parseToken } from '../../src/sessions/tokens.js';

/** A homeserver the suite runs against, started with the two registrations and a shared registration secret. */
export interface SuiteHomeserver {
  readonly url: string;
  readonly version: string;
  readonly startupMs: number;
  stop(): Promise<void>;
  logs(): string;
}

export interface AppserviceSuiteOptions {
  readonly name: string;
  readonly flavour: 'synapse' | 'dendrite';
  /** `url` of the registrations: null on Synapse, "" on Dendrite. */
  readonly registrationUrl: null | '';
  /** The proxy's backend; jwt: `jwt` is the shared secret of the homeserver's jwt_config (HS256). Default appservice. */
  readonly backend?: { readonly mode: 'appservice' } | { readonly mode: 'jwt'; readonly secret: string; readonly issuer: string; readonly audience: string };
  start(registrations: RegistrationFiles, sharedSecret: string): Promise<SuiteHomeserver>;
}

// Issue 16: the appservice backend on a real homeserver WITHOUT delegated auth. The client holds only the proxy's
// tokens; the proxy logs each device in with m.login.application_service and swaps tokens on the way through. Every
// "the homeserver refuses it" below is asked of the homeserver directly, not through the proxy.

const V3 = '/_matrix/client/v3';
const WHOAMI = `${V3}/account/whoami`;
const ADMIN_PASSWORD = 'admin-password-0123456789';
const mxid = (localpart: string) => `@${localpart}:${SERVER_NAME}`;

export function describeAppserviceBackend(options: AppserviceSuiteOptions): void {
let synapse: SuiteHomeserver;
let registrations: RegistrationFiles;
let h: Harness;
let adminToken: string;

const atHomeserver = (method: string, path: string, token?: string, body?: unknown): Promise<JsonResponse> =>
  jsonRequest(`${synapse.url}${path}`, method, { ...(token === undefined ? {} : { token }), ...(body === undefined ? {} : { body }) });

/** The homeserver token the proxy keeps for a client token (test-only peek into the store). */
async function homeserverTokenOf(clientToken: string): Promise<string> {
  const sessionId = parseToken(clientToken)?.sessionId;
  assert.ok(sessionId);
  const session = await h.deps.sessions.get(sessionId);
  assert.ok(session?.homeserverToken, 'the session keeps a sealed homeserver token');
  return h.deps.keys.open(session.homeserverToken);
}

function logsTail(): string {
  return `\n--- homeserver log (tail) ---\n${synapse.logs().slice(-3000)}`;
}

async function login(user: 'alice' | 'bob', extra: Record<string, unknown> = {}): Promise<{ access_token: string; device_id: string; user_id: string; refresh_token?: string }> {
  const response = await h.passwordLogin(user, h.op.users[user].password, extra);
  assert.equal(response.status, 200, `login of ${user}: ${JSON.stringify(response.body)}${logsTail()}`);
  return response.body;
}

/**
 * A native client (matrix-js-sdk's helpers) registered and authorized by `username` through the sign-in page's
 * password form (and the consent page): where the client's redirect stopped, with the code and state.
 */
async function authorizeNatively(username: string, password: string) {
  const metadata = await discover(h.url);
  const clientId = await register(metadata);
  const url = await authorizationUrl(h.url, metadata, clientId, { login_hint: `mxid:@${username}:${SERVER_NAME}` });
  const deviceId = /device:(\S+)/.exec(url.searchParams.get('scope') ?? '')?.[1];
  assert.ok(deviceId);
  const browser = new ProxyBrowser(h.url);
  const isClient = (at: URL) => at.href.startsWith(REDIRECT_URI);
  const started = await follow(browser, await browser.get(url), isClient);
  const form = signInPageOf(await started.response.text());
  assert.equal(form.username, username);
  let { response, stoppedAt } = await follow(browser, await browser.post(form.action, { csrf_token: form.csrfToken, username, password }), isClient);
  if (stoppedAt === undefined) {
    // The consent page of a third-party client.
    const page = await response.text();
    assert.match(page, /Allow Test App/, page.slice(0, 500));
    ({ response, stoppedAt } = await follow(browser, await browser.post(response.url, { decision: 'allow' }), isClient));
  }
  assert.ok(stoppedAt, `no code: ${response.status}`);
  return { metadata, clientId, deviceId, stoppedAt };
}

describe(`appservice backend on real ${options.name}`, { skip: interopSkipReason(), concurrency: false }, () => {
  before(async () => {
    registrations = await writeRegistrations(SERVER_NAME, { url: options.registrationUrl });
    const sharedSecret = randomBytes(16).toString('hex');
    synapse = await options.start(registrations, sharedSecret);
    adminToken = (await registerWithSharedSecret(synapse.url, sharedSecret, 'admin', ADMIN_PASSWORD, true)).accessToken;
    h = await startProxyHarness({
      store: 'redis',
      op: { users: [{ username: 'admin', password: 'op-admin-password', sub: 'sub-admin', email: 'admin@example.test', name: 'Admin', groups: [] }, { username: 'bridge_sneaky', password: 'sneaky-password', sub: 'sub-sneaky', email: 'sneaky@example.test', name: 'Sneaky', groups: [] }, { username: 'carol', password: 'carol-password', sub: 'sub-carol', email: 'carol@example.test', name: 'Carol', groups: [] }] },
      configure: (config) => {
        const deny = [`@admin:${SERVER_NAME.replace(/\./g, '\\.')}`];
        const backend = options.backend ?? { mode: 'appservice' };
        config['homeserver'] = {
          url: synapse.url,
          mode: backend.mode,
          flavour: options.flavour,
          ...(backend.mode === 'appservice'
            ? { appservice: { registration_file: registrations.proxy.path, deny_users: deny } }
            : { jwt: { key: backend.secret, algorithm: 'HS256', issuer: backend.issuer, audience: backend.audience, deny_users: deny } }),
          admin_token: adminToken,
          upstream_timeout: '10s',
        };
        config['appservice_config_files'] = [registrations.bridge.path];
        // Native OAuth clients served by the proxy on this backend too (issue 17).
        config['native_clients'] = 'serve';
        config['oauth_server'] = { signing_key: generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'pem', type: 'pkcs8' }).toString() };
        config['sessions'] = { ...config['sessions'], revalidate_interval: '1s' };
      },
    });
    console.log(`${options.name} ${synapse.version} ready after ${synapse.startupMs} ms`);
  });

  after(async () => {
    await h?.stop();
    await synapse?.stop();
    await registrations?.remove();
  });

  test('password login (matrix-js-sdk): the client gets the proxy token, whoami/device/profile are the homeserver\'s own', async () => {
    const sdk = createClient({ baseUrl: h.url });
    const logged = await sdk.loginRequest({ type: 'm.login.password', identifier: { type: 'm.id.user', user: 'alice' }, password: h.op.users.alice.password, initial_device_display_name: 'Alice phone' });
    assert.ok(parseToken(logged.access_token), 'a proxy token, not a homeserver one');
    const client = createClient({ baseUrl: h.url, accessToken: logged.access_token, userId: logged.user_id, deviceId: logged.device_id });
    const whoami = await client.whoami();
    assert.equal(whoami.user_id, mxid('alice'));
    assert.equal(whoami.device_id, logged.device_id);
    const homeserverToken = await homeserverTokenOf(logged.access_token);
    assert.notEqual(homeserverToken, logged.access_token);
    // The homeserver made the device with the client's display name, and the profile name from the OP's claims.
    const device = await atHomeserver('GET', `${V3}/devices/${logged.device_id}`, homeserverToken);
    assert.equal(device.body.display_name, 'Alice phone');
    const profile = await atHomeserver('GET', `${V3}/profile/${encodeURIComponent(mxid('alice'))}/displayname`);
    assert.equal(profile.body.displayname, h.op.users.alice.name);
    // The homeserver does not know the proxy's token at all.
    assert.equal((await atHomeserver('GET', WHOAMI, logged.access_token)).status, 401);
  });

  test('room, message and sync through the swap; the access_token query parameter is swapped too', async () => {
    const alice = await login('alice');
    const room = await h.request('POST', `${V3}/createRoom`, { token: alice.access_token, body: { name: 'swap test' } });
    assert.equal(room.status, 200, JSON.stringify(room.body));
    const sent = await h.request('PUT', `${V3}/rooms/${encodeURIComponent(room.body.room_id)}/send/m.room.message/txn1`, { token: alice.access_token, body: { msgtype: 'm.text', body: 'hello through the swap' } });
    assert.equal(sent.status, 200, JSON.stringify(sent.body));
    // A homeserver may not have the event in the sync stream the moment /send answers (Dendrite persists it
    // asynchronously): long-poll from the last position until it shows up, as a client would.
    let since: string | undefined;
    let seen = false;
    for (let round = 0; round < 10 && !seen; round++) {
      const query = `timeout=${since === undefined ? 0 : 3000}${since === undefined ? '' : `&since=${encodeURIComponent(since)}`}&access_token=${encodeURIComponent(alice.access_token)}`;
      const sync = await h.request('GET', `${V3}/sync?${query}`);
      assert.equal(sync.status, 200, JSON.stringify(sync.body));
      since = sync.body.next_batch;
      const events = (sync.body.rooms?.join?.[room.body.room_id]?.timeline?.events ?? []) as { type: string; content: { body?: string } }[];
      seen = events.some((event) => event.type === 'm.room.message' && event.content.body === 'hello through the swap');
    }
    assert.ok(seen, 'the message arrives through /sync (the access_token query parameter swapped)');
  });

  test('SSO login ends in a homeserver device too', async () => {
    const browser = new ProxyBrowser(h.url);
    const redirect = await browser.get(`${h.url}${V3}/login/sso/redirect?${new URLSearchParams({ redirectUrl: 'https://client.example/done' })}`);
    assert.equal(redirect.status, 302);
    const callbackUrl = await h.op.browser().authorize(locationOf(redirect), { login: 'bob', password: h.op.users.bob.password });
    const callback = await browser.get(callbackUrl);
    assert.equal(callback.status, 302, await callback.text());
    const confirmation = locationOf(callback);
    const page = await (await browser.get(confirmation)).text();
    const csrf = /name="csrf_token" value="([^"]+)"/.exec(page)?.[1];
    assert.ok(csrf);
    const landing = locationOf(await browser.post(confirmation, { csrf_token: csrf }));
    const loginToken = landing.searchParams.get('loginToken');
    assert.ok(loginToken);
    const logged = await h.request('POST', `${V3}/login`, { body: { type: 'm.login.token', token: loginToken } });
    assert.equal(logged.status, 200, JSON.stringify(logged.body));
    const whoami = await atHomeserver('GET', WHOAMI, await homeserverTokenOf(logged.body.access_token));
    assert.equal(whoami.body.user_id, mxid('bob'));
  });

  test('logout ends the homeserver token at once; logout/all ends every token of the user, also ones made at the homeserver', async () => {
    const one = await login('bob');
    const oneAtHomeserver = await homeserverTokenOf(one.access_token);
    const started = performance.now();
    assert.equal((await h.request('POST', `${V3}/logout`, { token: one.access_token, body: {} })).status, 200);
    const logoutMs = Math.round(performance.now() - started);
    assert.equal((await atHomeserver('GET', WHOAMI, oneAtHomeserver)).status, 401, 'the homeserver refuses its token right after the logout answer');
    assert.equal((await h.request('GET', WHOAMI, { token: one.access_token })).status, 401);
    console.log(`${options.name}: logout (proxy → homeserver /logout) took ${logoutMs} ms; the homeserver token was dead on the next request`);

    const two = await login('bob');
    const three = await login('bob');
    // A token the proxy never saw: a bridge-style appservice login made directly at the homeserver.
    const direct = await atHomeserver('POST', `${V3}/login`, registrations.proxy.asToken, { type: 'm.login.application_service', identifier: { type: 'm.id.user', user: mxid('bob') } });
    assert.equal(direct.status, 200);
    const hsTokens = [await homeserverTokenOf(two.access_token), await homeserverTokenOf(three.access_token), direct.body.access_token as string];
    assert.equal((await h.request('POST', `${V3}/logout/all`, { token: two.access_token, body: {} })).status, 200);
    for (const token of hsTokens) assert.equal((await atHomeserver('GET', WHOAMI, token)).status, 401);
    for (const token of [two.access_token, three.access_token]) assert.equal((await h.request('GET', WHOAMI, { token })).status, 401);
  });

  test('same-device re-login: the old client token dies, one homeserver token stays, and the device keeps its keys', async () => {
    const first = await login('alice', { device_id: 'REUSEDDEV' });
    const keys = await h.request('POST', `${V3}/keys/upload`, { token: first.access_token, body: { one_time_keys: { 'signed_curve25519:AAAAAQ': { key: 'x', signatures: {} } } } });
    assert.equal(keys.status, 200, JSON.stringify(keys.body));
    const firstAtHomeserver = await homeserverTokenOf(first.access_token);
    const second = await login('alice', { device_id: 'REUSEDDEV' });
    assert.equal((await h.request('GET', WHOAMI, { token: first.access_token })).status, 401);
    assert.equal((await h.request('GET', WHOAMI, { token: second.access_token })).body.device_id, 'REUSEDDEV');
    // No second token at the homeserver: the live one was kept, not doubled (Synapse would keep both valid).
    assert.equal(await homeserverTokenOf(second.access_token), firstAtHomeserver);
    const counts = await h.request('POST', `${V3}/keys/upload`, { token: second.access_token, body: {} });
    assert.equal(counts.body.one_time_key_counts.signed_curve25519, 1, 'the device and its keys survived');

    // A homeserver token that died behind the proxy's back is replaced by a fresh login, not reused.
    assert.equal((await atHomeserver('POST', `${V3}/logout`, firstAtHomeserver, {})).status, 200);
    const third = await login('alice', { device_id: 'REUSEDDEV' });
    const thirdAtHomeserver = await homeserverTokenOf(third.access_token);
    assert.notEqual(thirdAtHomeserver, firstAtHomeserver);
    assert.equal((await atHomeserver('GET', WHOAMI, thirdAtHomeserver)).body.device_id, 'REUSEDDEV');
    assert.equal((await atHomeserver('GET', WHOAMI, firstAtHomeserver)).status, 401);
  });

  test('refresh: the proxy rotates its own tokens; the homeserver token stays behind them', async () => {
    const logged = await login('alice', { refresh_token: true });
    assert.ok(logged.refresh_token);
    const refreshed = await h.request('POST', `${V3}/refresh`, { body: { refresh_token: logged.refresh_token } });
    assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
    assert.equal((await h.request('GET', WHOAMI, { token: refreshed.body.access_token })).body.user_id, mxid('alice'));
    assert.equal(await homeserverTokenOf(refreshed.body.access_token), await homeserverTokenOf(logged.access_token));
  });

  test('a user disabled at the OP is logged out at the homeserver within seconds (re-validation)', async () => {
    const logged = await login('bob');
    const disabledToken = await homeserverTokenOf(logged.access_token);
    const started = performance.now();
    h.op.disableUser('bob');
    try {
      for (;;) {
        const response = await h.request('GET', WHOAMI, { token: logged.access_token });
        if (response.status === 401) break;
        assert.ok(performance.now() - started < 15_000, 'still accepted 15 s after the OP disabled the user');
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      const ms = Math.round(performance.now() - started);
      assert.equal((await atHomeserver('GET', WHOAMI, disabledToken)).status, 401, 'the homeserver token is dead there too');
      console.log(`${options.name}: OP disable → first 401 after ${ms} ms (revalidate_interval 1s)`);
      if (options.flavour === 'synapse') {
        // With homeserver.admin_token the account is locked too: tokens the proxy never issued stop as well.
        const user = await atHomeserver('GET', `/_synapse/admin/v2/users/${encodeURIComponent(mxid('bob'))}`, adminToken);
        assert.equal(user.body.locked, true, JSON.stringify(user.body));
      }
    } finally {
      h.op.enableUser('bob');
    }
    // The OP accepts bob again: the next sign-in unlocks the account and works.
    const again = await login('bob');
    assert.equal((await h.request('GET', WHOAMI, { token: again.access_token })).body.user_id, mxid('bob'));
    if (options.flavour === 'synapse') {
      const user = await atHomeserver('GET', `/_synapse/admin/v2/users/${encodeURIComponent(mxid('bob'))}`, adminToken);
      assert.equal(user.body.locked, false);
    }
  });

  test('deny rules: an admin and a bridge-namespace user cannot log in through the proxy', async () => {
    const admin = await h.passwordLogin('admin', 'op-admin-password');
    assert.equal(admin.status, 403, JSON.stringify(admin.body));
    const sneaky = await h.passwordLogin('bridge_sneaky', 'sneaky-password');
    assert.equal(sneaky.status, 403, JSON.stringify(sneaky.body));
    // And nothing was made at the homeserver for the bridge's namespace.
    assert.equal((await atHomeserver('GET', `${V3}/profile/${encodeURIComponent(mxid('bridge_sneaky'))}`)).status, 404);
  });

  test("a bridge registers and logs its puppets in through the proxy untouched; the proxy's as_token is refused", async () => {
    const bridge = registrations.bridge.asToken;
    const registered = await h.request('POST', `${V3}/register`, { token: bridge, body: { type: 'm.login.application_service', username: 'bridge_puppet1', inhibit_login: true } });
    assert.equal(registered.status, 200, JSON.stringify(registered.body));
    const logged = await h.request('POST', `${V3}/login`, { token: bridge, body: { type: 'm.login.application_service', identifier: { type: 'm.id.user', user: mxid('bridge_puppet1') } } });
    assert.equal(logged.status, 200, JSON.stringify(logged.body));
    assert.equal(parseToken(logged.body.access_token), undefined, 'the bridge gets a homeserver token');
    assert.equal((await h.request('GET', WHOAMI, { token: logged.body.access_token })).body.user_id, mxid('bridge_puppet1'));
    assert.equal((await h.request('GET', `${WHOAMI}?user_id=${encodeURIComponent(mxid('bridge_puppet1'))}`, { token: bridge })).body.user_id, mxid('bridge_puppet1'), 'the bridge acts as its puppets with its own as_token');

    // The proxy's own as_token exists only in appservice mode.
    if ((options.backend?.mode ?? 'appservice') !== 'appservice') return;
    const own = registrations.proxy.asToken;
    for (const response of [
      await h.request('GET', WHOAMI, { token: own }),
      await h.request('GET', `${WHOAMI}?access_token=${own}`),
      await h.request('POST', `${V3}/login`, { token: own, body: { type: 'm.login.application_service', identifier: { type: 'm.id.user', user: mxid('alice') } } }),
    ]) {
      assert.equal(response.status, 403, JSON.stringify(response.body));
    }
  });

  test('native OAuth client (native_clients: serve): the device is made at the homeserver at the code exchange, the token swapped through, refresh keeps it, revocation ends it there', async () => {
    const { metadata, clientId, deviceId, stoppedAt } = await authorizeNatively('alice', h.op.users.alice.password);
    assert.equal(metadata.issuer, `${h.url}/_matrix-compat-proxy/oauth2`);
    const completed = await completeAuthorizationCodeGrant(stoppedAt.searchParams.get('code') ?? '', stoppedAt.searchParams.get('state') ?? '');
    const token = completed.tokenResponse.access_token;
    assert.ok(parseToken(token), 'a proxy token, not a homeserver one');
    const whoami = await h.request('GET', WHOAMI, { token });
    assert.equal(whoami.status, 200, `${JSON.stringify(whoami.body)}${logsTail()}`);
    assert.equal(whoami.body.user_id, mxid('alice'));
    assert.equal(whoami.body.device_id, deviceId);
    // The homeserver made the device (named after the client) and knows only its own token for it.
    const homeserverToken = await homeserverTokenOf(token);
    assert.equal((await atHomeserver('GET', WHOAMI, homeserverToken)).body.device_id, deviceId);
    assert.equal((await atHomeserver('GET', `${V3}/devices/${deviceId}`, homeserverToken)).body.display_name, 'Test App');
    assert.equal((await atHomeserver('GET', WHOAMI, token)).status, 401);

    const refreshed = await fetch(`${metadata.issuer}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: completed.tokenResponse.refresh_token ?? '', client_id: clientId }).toString(),
    });
    const pair = (await refreshed.json()) as { access_token: string; refresh_token: string };
    assert.equal(refreshed.status, 200, JSON.stringify(pair));
    assert.equal((await h.request('GET', WHOAMI, { token: pair.access_token })).body.device_id, deviceId);
    assert.equal(await homeserverTokenOf(pair.access_token), homeserverToken, 'the homeserver token stays behind the rotated pair');

    const revoked = await fetch(`${metadata.issuer}/revoke`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ token: pair.access_token, client_id: clientId }).toString() });
    assert.equal(revoked.status, 200);
    assert.equal((await h.request('GET', WHOAMI, { token: pair.access_token })).status, 401);
    assert.equal((await atHomeserver('GET', WHOAMI, homeserverToken)).status, 401, 'the homeserver token is dead at once');
  });

  test(
    'native OAuth client: an account deactivated at the homeserver between consent and the code exchange gets invalid_grant, no device',
    { skip: options.flavour === 'synapse' ? false : "deactivating a user without a password needs Synapse's admin API" },
    async () => {
      // A legacy login first: with JWT login the homeserver makes the user only at its first login.
      const first = await h.passwordLogin('carol', 'carol-password');
      assert.equal(first.status, 200, JSON.stringify(first.body));
      const { metadata, clientId, deviceId, stoppedAt } = await authorizeNatively('carol', 'carol-password');
      const deactivated = await atHomeserver('POST', `/_synapse/admin/v1/deactivate/${encodeURIComponent(mxid('carol'))}`, adminToken, { erase: false });
      assert.equal(deactivated.status, 200, JSON.stringify(deactivated.body));
      const exchange = await fetch(`${metadata.issuer}/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({
          grant_type: 'authorization_code',
          code: stoppedAt.searchParams.get('code') ?? '',
          redirect_uri: REDIRECT_URI,
          client_id: clientId,
          code_verifier: codeVerifierOf(stoppedAt.searchParams.get('state') ?? ''),
        }).toString(),
      });
      const body = (await exchange.json()) as Record<string, unknown>;
      assert.equal(exchange.status, 400, `${JSON.stringify(body)}${logsTail()}`);
      assert.equal(body['error'], 'invalid_grant');
      assert.equal(body['access_token'], undefined);
      const sessions = await Promise.all((await h.deps.sessions.idsOfUser('carol')).map((id) => h.deps.sessions.get(id)));
      assert.equal(sessions.some((session) => session?.deviceId === deviceId), false);
      const devices = await atHomeserver('GET', `/_synapse/admin/v2/users/${encodeURIComponent(mxid('carol'))}/devices`, adminToken);
      assert.equal(devices.status, 200, JSON.stringify(devices.body));
      assert.equal((devices.body.devices as { device_id: string }[]).some((device) => device.device_id === deviceId), false);
    },
  );

  test('the stored session record keeps the homeserver token sealed, never in clear', async () => {
    const logged = await login('alice');
    const sessionId = parseToken(logged.access_token)?.sessionId ?? '';
    const raw = await h.store.get(sessionKeys.session(sessionId));
    const hsToken = await homeserverTokenOf(logged.access_token);
    assert.ok(raw !== undefined && !raw.includes(hsToken));
    assert.match(raw, /"v":2/);
  });
});
}

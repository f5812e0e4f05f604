import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Browser } from 'playwright-core';
import { runDoctor } from '../../src/doctor/run-doctor.js';
import { parseToken } from '../../src/sessions/tokens.js';
import { launchChromium, ssoLoginInChromium } from '../support/chromium-sso.js';
import { HYDRA_SETUP, startHydra, type RunningHydra } from '../support/hydra.js';
import { interopSkipReason, INTEROP_SERVER_NAME, jsonRequest, type JsonResponse } from '../support/interop-stack.js';
import { startOpInteropStack, type OpInteropStack, type StartedOp } from '../support/op-interop-stack.js';

// Ory Hydra (real, built from the Go module proxy by scripts/install-hydra.sh) as the OP, with the login and
// consent app it delegates to (test/support/hydra.ts), real Synapse behind the proxy, SSO in headless Chromium. The
// provider block is the one of docs/providers/ory-hydra.md. Hydra has no password grant, so this is the SSO path:
// code + PKCE, refresh tokens (rotated on each use) for re-validation, and back-channel logout sent by Hydra itself.

const WHOAMI = '/_matrix/client/v3/account/whoami';
const IDP_ID = 'hydra';
const { alice, bob } = HYDRA_SETUP.users;
const mxid = (localpart: string) => `@${localpart}:${INTEROP_SERVER_NAME}`;

type HydraOp = StartedOp & { readonly hydra: RunningHydra };
let stack: OpInteropStack<HydraOp>;
let browser: Browser;

function hydraProviderBlock(issuer: string): Record<string, unknown> {
  return {
    idp_name: 'Ory Hydra',
    issuer,
    client_id: HYDRA_SETUP.client.clientId,
    client_secret: HYDRA_SETUP.client.clientSecret,
    scopes: ['openid', 'profile', 'email', 'offline_access'],
    backchannel_logout_enabled: true,
    user_mapping_provider: {
      config: { localpart_template: '{{ user.preferred_username }}', display_name_template: '{{ user.name }}', email_template: '{{ user.email }}' },
    },
  };
}

const atSynapse = (method: string, path: string, token: string): Promise<JsonResponse> => jsonRequest(`${stack.synapse.url}${path}`, method, { token });

function logsTail(): string {
  return `\n--- proxy log (tail) ---\n${stack.logs().slice(-4000)}\n--- hydra log (tail) ---\n${stack.op.hydra.logs().slice(-3000)}`;
}

/** SSO in Chromium through Hydra's login app, then m.login.token: the client's login answer. */
async function ssoLogin(user: { readonly username: string; readonly password: string }, extra: Record<string, unknown> = {}): Promise<JsonResponse> {
  const loginToken = await ssoLoginInChromium(browser, {
    proxyUrl: stack.url,
    idpId: IDP_ID,
    expectedUserId: mxid(user.username),
    signIn: async (page) => {
      await page.waitForURL((url) => url.pathname === '/login');
      await page.fill('#username', user.username);
      await page.fill('#password', user.password);
      await page.click('#sign-in');
    },
  });
  const login = await stack.request('POST', '/_matrix/client/v3/login', { body: { type: 'm.login.token', token: loginToken, ...extra } });
  assert.equal(login.status, 200, `${JSON.stringify(login.body)}${logsTail()}`);
  return login;
}

describe('proxy + real Synapse + real Ory Hydra', { skip: interopSkipReason() }, () => {
  before(async () => {
    const started = performance.now();
    [stack, browser] = await Promise.all([
      startOpInteropStack<HydraOp>({
        idpId: IDP_ID,
        passwordLogin: false,
        startOp: async (urls) => {
          const hydra = await startHydra({ redirectUris: [urls.callbackUri], backchannelLogoutUri: urls.backchannelLogoutUri });
          return { hydra, providerBlock: hydraProviderBlock(hydra.issuer), stop: () => hydra.stop() };
        },
      }),
      launchChromium(),
    ]);
    console.log(`Hydra ${stack.op.hydra.issuer} ready after ${stack.op.hydra.startupMs} ms; stack up after ${Math.round(performance.now() - started)} ms`);
  });
  after(async () => {
    await browser?.close();
    await stack?.stop();
  });

  test('doctor: every check passes against Hydra and Synapse', async () => {
    const checks = await runDoctor(stack.config, { env: {}, timeoutMs: 30_000 });
    assert.deepEqual(
      checks.filter((check) => check.status === 'fail'),
      [],
      JSON.stringify(checks, null, 1),
    );
    assert.equal(checks.find((check) => check.check === 'client authentication')?.status, 'pass');
    assert.equal(checks.find((check) => check.check === 'authorization request')?.status, 'pass');
  });

  test('GET /login offers SSO (Hydra) and token login, no password', async () => {
    const flows = await stack.request('GET', '/_matrix/client/v3/login');
    assert.deepEqual(
      flows.body.flows.map((flow: { type: string }) => flow.type),
      ['m.login.sso', 'm.login.token'],
    );
  });

  test('SSO in Chromium through Hydra’s login and consent app; whoami and profile at Synapse', { timeout: 90_000 }, async () => {
    const login = await ssoLogin(alice);
    assert.equal(login.body.user_id, mxid('alice'));
    const direct = await atSynapse('GET', WHOAMI, login.body.access_token);
    assert.equal(direct.status, 200);
    const profile = await atSynapse('GET', `/_matrix/client/v3/profile/${encodeURIComponent(mxid('alice'))}`, login.body.access_token);
    assert.equal(profile.body.displayname, alice.name);
  });

  test('refresh at the proxy; re-validation by Hydra’s rotating refresh tokens keeps the session', { timeout: 90_000 }, async () => {
    const login = await ssoLogin(bob, { refresh_token: true });
    const refreshed = await stack.request('POST', '/_matrix/client/v3/refresh', { body: { refresh_token: login.body.refresh_token } });
    assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
    assert.equal((await atSynapse('GET', WHOAMI, refreshed.body.access_token)).status, 200);

    const revalidated = async () => (await stack.deps.metrics.revalidations.get()).values.find((value) => value.labels['outcome'] === 'revalidated')?.value ?? 0;
    const before = await revalidated();
    for (let round = 0; round < 2; round += 1) {
      await new Promise((resolve) => setTimeout(resolve, 2_500));
      const whoami = await stack.request('GET', WHOAMI, { token: refreshed.body.access_token });
      assert.equal(whoami.status, 200, `${JSON.stringify(whoami.body)}${logsTail()}`);
    }
    assert.ok((await revalidated()) >= before + 2, `two refresh grants at Hydra succeeded${logsTail()}`);
  });

  test('back-channel logout: Hydra ends the login session, posts a logout token, the session ends at Synapse', { timeout: 90_000 }, async () => {
    const login = await ssoLogin(alice);
    const session = await stack.deps.sessions.get(parseToken(login.body.access_token)?.sessionId ?? '');
    assert.ok(session !== undefined && session.origin.kind === 'sso', 'an SSO session');
    const sid = session.origin.sid;
    assert.ok(sid !== undefined, 'Hydra’s ID token carried sid');
    assert.equal((await atSynapse('GET', WHOAMI, login.body.access_token)).status, 200);

    await stack.op.hydra.endSession(sid);
    const deadline = performance.now() + 10_000;
    for (;;) {
      const whoami = await atSynapse('GET', WHOAMI, login.body.access_token);
      if (whoami.status === 401) break;
      assert.ok(performance.now() < deadline, `the session survived Hydra's logout${logsTail()}`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    // The proxy deletes the device at Synapse before it removes its own session record (SessionLifecycle.end), so
    // Synapse's 401 can come a moment before the record is gone: the record must be gone within the same deadline.
    while ((await stack.deps.sessions.get(session.id)) !== undefined) {
      assert.ok(performance.now() < deadline, `the proxy kept the session after Hydra's logout${logsTail()}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  });
});

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Browser } from 'playwright-core';
import { runDoctor } from '../../src/doctor/run-doctor.js';
import { launchChromium, ssoLoginInChromium } from '../support/chromium-sso.js';
import { DEX_SETUP, startDex, type RunningDex } from '../support/dex.js';
import { interopSkipReason, INTEROP_SERVER_NAME, jsonRequest, type JsonResponse } from '../support/interop-stack.js';
import { startOpInteropStack, type OpInteropStack, type StartedOp } from '../support/op-interop-stack.js';

// Dex (a real one, built from the Go module proxy by scripts/install-dex.sh) as the OP, real Synapse behind the
// proxy: the Synapse `oidc_providers` block from docs/providers/dex.md, pasted as it is. Dex answers a wrong password
// with 401 `access_denied` (not invalid_grant), rotates refresh tokens, logs users in by email and has no
// back-channel logout.

const WHOAMI = '/_matrix/client/v3/account/whoami';
const IDP_ID = 'dex';
const { alice, bob } = DEX_SETUP.users;
const mxid = (localpart: string) => `@${localpart}:${INTEROP_SERVER_NAME}`;

type DexOp = StartedOp & { readonly dex: RunningDex };
let stack: OpInteropStack<DexOp>;
let browser: Browser | undefined;

/** The block of docs/providers/dex.md. */
function dexProviderBlock(issuer: string): Record<string, unknown> {
  return {
    idp_name: 'Dex',
    issuer,
    client_id: DEX_SETUP.client.clientId,
    client_secret: DEX_SETUP.client.clientSecret,
    scopes: ['openid', 'profile', 'email', 'offline_access'],
    password_grant: { enabled: true },
    user_mapping_provider: {
      config: { localpart_template: '{{ user.preferred_username }}', display_name_template: '{{ user.name }}', email_template: '{{ user.email }}' },
    },
  };
}

const atSynapse = (method: string, path: string, token: string): Promise<JsonResponse> => jsonRequest(`${stack.synapse.url}${path}`, method, { token });

function logsTail(): string {
  return `\n--- proxy log (tail) ---\n${stack.logs().slice(-4000)}\n--- dex log (tail) ---\n${stack.op.dex.logs().slice(-3000)}`;
}

async function emailLogin(email: string, password: string, extra: Record<string, unknown> = {}): Promise<JsonResponse> {
  return stack.request('POST', '/_matrix/client/v3/login', { body: { type: 'm.login.password', identifier: { type: 'm.id.thirdparty', medium: 'email', address: email }, password, ...extra } });
}

describe('proxy + real Synapse + real Dex', { skip: interopSkipReason() }, () => {
  before(async () => {
    const started = performance.now();
    stack = await startOpInteropStack<DexOp>({
      idpId: IDP_ID,
      passwordLogin: true,
      startOp: async (urls) => {
        const dex = await startDex({ redirectUris: [urls.callbackUri] });
        return { dex, providerBlock: dexProviderBlock(dex.issuer), stop: () => dex.stop() };
      },
    });
    console.log(`Dex ${stack.op.dex.issuer} ready after ${stack.op.dex.startupMs} ms; stack up after ${Math.round(performance.now() - started)} ms`);
  });
  after(async () => {
    await browser?.close();
    await stack?.stop();
  });

  test('doctor: every check passes against Dex and Synapse, with a real test login', async () => {
    const checks = await runDoctor(stack.config, { env: { MCP_DOCTOR_USERNAME: alice.email, MCP_DOCTOR_PASSWORD: alice.password }, timeoutMs: 30_000 });
    const failed = checks.filter((check) => check.status === 'fail');
    assert.deepEqual(failed, [], JSON.stringify(checks, null, 1));
    assert.equal(checks.find((check) => check.check === 'password grant')?.status, 'pass');
    assert.equal(checks.find((check) => check.check === 'mapping templates')?.status, 'pass');
  });

  test('wrong password → 403 M_FORBIDDEN (Dex answers 401 access_denied), same as an unknown user', async () => {
    const wrong = await emailLogin(alice.email, 'not-the-password');
    assert.equal(wrong.status, 403, JSON.stringify(wrong.body));
    assert.deepEqual(wrong.body, { errcode: 'M_FORBIDDEN', error: 'Invalid username/password' });
    const unknown = await emailLogin('nobody@example.test', 'whatever');
    assert.deepEqual(unknown.body, wrong.body);
  });

  test('password login by email, then by localpart (the OP username is remembered); whoami at Synapse', async () => {
    const first = await emailLogin(alice.email, alice.password);
    assert.equal(first.status, 200, `${JSON.stringify(first.body)}${logsTail()}`);
    assert.equal(first.body.user_id, mxid('alice'));
    const direct = await atSynapse('GET', WHOAMI, first.body.access_token);
    assert.equal(direct.status, 200);
    assert.equal(direct.body.user_id, mxid('alice'));
    const profile = await atSynapse('GET', `/_matrix/client/v3/profile/${encodeURIComponent(mxid('alice'))}`, first.body.access_token);
    assert.equal(profile.body.displayname, alice.name);

    const byLocalpart = await stack.passwordLogin('alice', alice.password);
    assert.equal(byLocalpart.status, 200, JSON.stringify(byLocalpart.body));
    assert.equal(byLocalpart.body.user_id, mxid('alice'));
  });

  test('refresh at the proxy, and re-validation by Dex’s rotating refresh tokens keeps the session', async () => {
    const login = await emailLogin(bob.email, bob.password, { refresh_token: true });
    assert.equal(login.status, 200, JSON.stringify(login.body));
    const refreshed = await stack.request('POST', '/_matrix/client/v3/refresh', { body: { refresh_token: login.body.refresh_token } });
    assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
    assert.equal((await atSynapse('GET', WHOAMI, refreshed.body.access_token)).status, 200);

    const revalidated = async () => (await stack.deps.metrics.revalidations.get()).values.find((value) => value.labels['outcome'] === 'revalidated')?.value ?? 0;
    const before = await revalidated();
    // revalidate_interval is 2 s: each round is due, and Dex rotates the refresh token every time.
    for (let round = 0; round < 2; round += 1) {
      await new Promise((resolve) => setTimeout(resolve, 2_500));
      const whoami = await stack.request('GET', WHOAMI, { token: refreshed.body.access_token });
      assert.equal(whoami.status, 200, `${JSON.stringify(whoami.body)}${logsTail()}`);
    }
    assert.ok((await revalidated()) >= before + 2, `two refresh grants at Dex succeeded${logsTail()}`);
  });

  test('SSO in Chromium through Dex’s own login page, then m.login.token and whoami at Synapse', { timeout: 90_000 }, async () => {
    browser = await launchChromium();
    const loginToken = await ssoLoginInChromium(browser, {
      proxyUrl: stack.url,
      idpId: IDP_ID,
      expectedUserId: mxid('bob'),
      signIn: async (page) => {
        await page.waitForURL((url) => url.href.startsWith(stack.op.dex.issuer));
        await page.fill('#login', bob.email);
        await page.fill('#password', bob.password);
        await page.click('#submit-login');
      },
    });
    const login = await stack.request('POST', '/_matrix/client/v3/login', { body: { type: 'm.login.token', token: loginToken } });
    assert.equal(login.status, 200, JSON.stringify(login.body));
    assert.equal(login.body.user_id, mxid('bob'));
    assert.equal((await atSynapse('GET', WHOAMI, login.body.access_token)).status, 200);
  });
});

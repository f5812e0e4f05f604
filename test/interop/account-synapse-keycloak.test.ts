import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chromium, type Browser, type Page } from 'playwright-core';
import { createClient } from 'matrix-js-sdk';
import { createKeycloakUser, interopSkipReason, INTEROP_SERVER_NAME, jsonRequest, nativeClientTokens, startInteropStack, type InteropStack, type KeycloakTestUser } from '../support/interop-stack.js';

/**
 * Issue 15 on real components: device deletion through the proxy's User-Interactive Auth and the account page
 * (device list read from real Synapse with the page's device-less token, signing a device out, the cross-signing
 * reset Synapse itself asks for) with real Keycloak as the OP, driven by matrix-js-sdk and Chromium.
 */

const CHROMIUM = '/usr/bin/chromium';
const ACCOUNT = '/_matrix-compat-proxy/account';
const WHOAMI = '/_matrix/client/v3/account/whoami';

function skipReason(): string | false {
  const interop = interopSkipReason();
  if (interop !== false) return interop;
  if (!existsSync(CHROMIUM) && process.env['CI'] === undefined) return `${CHROMIUM} is not installed; skipped outside CI`;
  return false;
}

describe('account page and device deletion: proxy + real Synapse + real Keycloak', { skip: skipReason(), concurrency: 1 }, () => {
  let stack: InteropStack;
  let browser: Browser;
  let user: KeycloakTestUser;

  before(async () => {
    stack = await startInteropStack();
    user = await createKeycloakUser(stack.keycloak, 'carol');
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-sync'] });
  });
  after(async () => {
    await browser?.close();
    await stack?.stop();
  });

  const atSynapse = (method: string, path: string, token: string, body?: unknown) =>
    jsonRequest(`${stack.synapse.url}${path}`, method, { token, ...(body === undefined ? {} : { body }) });

  async function login(name: string): Promise<{ access_token: string; device_id: string; user_id: string }> {
    const response = await stack.passwordLogin(user.username, user.password, { initial_device_display_name: name });
    assert.equal(response.status, 200, JSON.stringify(response.body));
    return response.body;
  }

  /** Keycloak's login form, when it shows one. */
  async function keycloakSignIn(page: Page): Promise<void> {
    await page.waitForSelector('#username');
    await page.fill('#username', user.username);
    await page.fill('#password', user.password);
    await page.click('#kc-login');
  }

  test('matrix-js-sdk deletes another device through UIA (password checked at Keycloak); Synapse drops it at once', async () => {
    const phone = await login('phone');
    const laptop = await login('laptop');
    const client = createClient({ baseUrl: stack.url, accessToken: phone.access_token, userId: phone.user_id, deviceId: phone.device_id });
    let session: string | undefined;
    try {
      await client.deleteDevice(laptop.device_id);
    } catch (err: unknown) {
      session = (err as { data?: { session?: string } }).data?.session;
    }
    assert.ok(session);
    await client.deleteDevice(laptop.device_id, { type: 'm.login.password', identifier: { type: 'm.id.user', user: user.username }, password: user.password, session } as never);
    assert.equal((await atSynapse('GET', WHOAMI, laptop.access_token)).status, 401);
    const devices = await atSynapse('GET', '/_matrix/client/v3/devices', phone.access_token);
    assert.equal(devices.status, 200);
    assert.deepEqual(
      (devices.body.devices as { device_id: string }[]).map((device) => device.device_id).filter((id) => id === laptop.device_id),
      [],
    );
    client.stopClient();
  });

  test('the account page lists what Synapse knows (a native client included), signs one out, and approves a cross-signing reset', async () => {
    const phone = await login('page phone');
    const native = await nativeClientTokens(stack.keycloak, user.username, user.password, 'openid urn:matrix:client:api:* urn:matrix:client:device:CAROLNATIVE');
    assert.equal((await stack.request('GET', WHOAMI, { token: native.accessToken })).status, 200);

    const context = await browser.newContext();
    try {
      const page = await context.newPage();
      page.setDefaultTimeout(20_000);
      await page.goto(`${stack.url}${ACCOUNT}`);
      await keycloakSignIn(page);
      await page.waitForURL((url) => url.pathname === ACCOUNT);
      assert.equal(await page.locator('.mxid').first().innerText(), `@${user.username}:${INTEROP_SERVER_NAME}`);
      assert.equal(await page.locator('.warning').count(), 0, 'Synapse answered the device list');
      const ids = await page.locator('li.device').evaluateAll((items) => items.map((item) => item.getAttribute('data-device-id')));
      assert.ok(ids.includes(phone.device_id) && ids.includes('CAROLNATIVE'), ids.join(', '));

      await page.goto(`${stack.url}${ACCOUNT}?action=org.matrix.device_delete&device_id=CAROLNATIVE`);
      await page.click('#sign-out-device');
      await page.waitForURL((url) => url.searchParams.get('signed_out') !== null);
      assert.equal((await atSynapse('GET', WHOAMI, native.accessToken)).status, 401);
      assert.equal((await atSynapse('GET', WHOAMI, phone.access_token)).status, 200);

      // Cross-signing: the first upload needs nothing, a replacement gets Synapse's 401 naming this page. Synapse
      // decodes the keys (unpadded base64 of an Ed25519 public key).
      const newKey = () => generateKeyPairSync('ed25519').publicKey.export({ format: 'jwk' }).x!.replace(/-/g, '+').replace(/_/g, '/');
      const [first, second] = [newKey(), newKey()];
      const upload = (key: string) =>
        stack.request('POST', '/_matrix/client/v3/keys/device_signing/upload', {
          token: phone.access_token,
          body: { master_key: { user_id: phone.user_id, usage: ['master'], keys: { [`ed25519:${key}`]: key } } },
        });
      const firstUpload = await upload(first);
      assert.equal(firstUpload.status, 200, JSON.stringify(firstUpload.body));
      const refused = await upload(second);
      assert.equal(refused.status, 401, JSON.stringify(refused.body));
      const url = refused.body.params['org.matrix.cross_signing_reset'].url as string;
      assert.equal(url, `${stack.url}${ACCOUNT}?action=org.matrix.cross_signing_reset`);
      await page.goto(url);
      await page.click('#allow-reset');
      await page.waitForSelector('#reset-allowed');
      const replaced = await upload(second);
      assert.equal(replaced.status, 200, JSON.stringify(replaced.body));
    } finally {
      await context.close();
    }
  });

  test('UIA m.login.sso: the fallback page sends the user to Keycloak for a fresh sign-in (prompt=login, auth_time checked)', async () => {
    const phone = await login('sso phone');
    const tablet = await login('sso tablet');
    const client = createClient({ baseUrl: stack.url, accessToken: phone.access_token, userId: phone.user_id, deviceId: phone.device_id });
    let session: string | undefined;
    try {
      await client.deleteDevice(tablet.device_id);
    } catch (err: unknown) {
      session = (err as { data?: { session?: string } }).data?.session;
    }
    assert.ok(session);
    const context = await browser.newContext();
    try {
      const page = await context.newPage();
      page.setDefaultTimeout(20_000);
      await page.goto(`${stack.url}/_matrix/client/v3/auth/m.login.sso/fallback/web?session=${encodeURIComponent(session)}`);
      await page.click('#continue');
      await keycloakSignIn(page);
      await page.waitForSelector('#done');
    } finally {
      await context.close();
    }
    await client.deleteDevice(tablet.device_id, { type: 'm.login.sso', session } as never);
    assert.equal((await atSynapse('GET', WHOAMI, tablet.access_token)).status, 401);
    client.stopClient();
  });
});

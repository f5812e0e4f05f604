import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { chromium, type Browser, type Page } from 'playwright-core';
import { createClient, type MatrixClient } from 'matrix-js-sdk';
import { SERVER_NAME, startProxyHarness, type Harness } from '../support/proxy-harness.js';

/**
 * The m.login.sso stage of User-Interactive Auth (issue 15) in headless Chromium: matrix-js-sdk gets the 401, the
 * "client" opens the spec's fallback page in a popup, the user signs in again at the in-process OP, the page posts
 * "authDone" to its opener, and the client repeats the deletion with the session.
 */

const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = new URL('../../test-artifacts/', import.meta.url);
const chromiumMissing = !existsSync(CHROMIUM);
if (chromiumMissing && process.env['CI'] !== undefined) {
  throw new Error(`${CHROMIUM} is missing: the UIA browser test must run in CI (apt-get install chromium)`);
}
const skip = chromiumMissing ? `${CHROMIUM} is not installed (apt-get install chromium); skipped outside CI` : false;

describe('UIA m.login.sso fallback in headless Chromium', { skip }, () => {
  let h: Harness;
  let browser: Browser;
  const clients: MatrixClient[] = [];

  before(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    h = await startProxyHarness();
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync'],
    });
  });
  after(async () => {
    for (const client of clients) client.stopClient();
    await browser?.close();
    await h?.stop();
  });

  async function signIn(name: string): Promise<{ client: MatrixClient; deviceId: string; token: string }> {
    const login = await h.passwordLogin('alice', h.op.users.alice.password, { initial_device_display_name: name });
    assert.equal(login.status, 200);
    const client = createClient({ baseUrl: h.url, accessToken: login.body.access_token, userId: login.body.user_id, deviceId: login.body.device_id });
    clients.push(client);
    return { client, deviceId: login.body.device_id, token: login.body.access_token };
  }

  async function challengeSession(client: MatrixClient, deviceId: string): Promise<string> {
    try {
      await client.deleteDevice(deviceId);
    } catch (err: unknown) {
      const data = (err as { data?: Record<string, unknown> }).data;
      assert.ok(typeof data?.['session'] === 'string');
      return data['session'];
    }
    assert.fail('expected a 401 challenge');
  }

  /** Opens the fallback page as a popup of a client page and signs in at the OP there; resolves with the popup. */
  async function fallbackInPopup(opener: Page, session: string, user: 'alice' | 'bob'): Promise<Page> {
    const fallbackUrl = `${h.url}/_matrix/client/v3/auth/m.login.sso/fallback/web?session=${encodeURIComponent(session)}`;
    // Strings, not functions: the test's TypeScript has no DOM types.
    await opener.evaluate("window.received = []; window.addEventListener('message', (event) => window.received.push(event.data)); undefined");
    const [popup] = await Promise.all([opener.context().waitForEvent('page'), opener.evaluate(`void window.open(${JSON.stringify(fallbackUrl)}, 'uia')`)]);
    popup.setDefaultTimeout(10_000);
    await popup.waitForLoadState();
    assert.equal(await popup.locator('h1').innerText(), 'Confirm it is you');
    assert.equal(await popup.locator('.mxid').innerText(), `@alice:${SERVER_NAME}`);
    assert.match(await popup.locator('main').innerText(), /sign out one of its sessions/);
    await popup.getByRole('link', { name: 'Continue with Test OP' }).click();
    // prompt=login: the OP asks for the password even when it has a session for this browser.
    await popup.waitForURL((url) => url.origin === h.op.issuer && url.pathname.startsWith('/interaction/'));
    await popup.fill('input[name="login"]', user);
    await popup.fill('input[name="password"]', h.op.users[user].password);
    await popup.click('#submit');
    await popup.waitForURL((url) => url.pathname.startsWith('/_matrix-compat-proxy/sso/callback/'));
    return popup;
  }

  test('fallback page → fresh sign-in at the OP → authDone to the opener → the deletion goes through', async () => {
    const phone = await signIn('phone');
    const laptop = await signIn('laptop');
    const session = await challengeSession(phone.client, laptop.deviceId);

    const context = await browser.newContext();
    try {
      const opener = await context.newPage();
      await opener.goto(`${h.url}/health`);
      const violations: string[] = [];
      context.on('console', (message) => {
        if (/Content Security Policy/i.test(message.text())) violations.push(message.text());
      });
      const popup = await fallbackInPopup(opener, session, 'alice');
      assert.equal(await popup.locator('h1').innerText(), 'Thank you, you are confirmed');
      await popup.screenshot({ path: new URL('uia-sso-done.png', ARTIFACTS).pathname, fullPage: true });
      await opener.waitForFunction("window.received.includes('authDone')");
      assert.deepEqual(violations, [], 'the CSP let the page run its one script');
    } finally {
      await context.close();
    }

    await phone.client.deleteDevice(laptop.deviceId, { type: 'm.login.sso', session } as never);
    assert.equal(h.homeserver.devices('alice').has(laptop.deviceId), false);
    assert.equal((await h.request('GET', '/_matrix/client/v3/account/whoami', { token: laptop.token })).status, 401);
  });

  test('signing in as someone else on the fallback page confirms nothing', async () => {
    const phone = await signIn('phone-2');
    const tablet = await signIn('tablet');
    const session = await challengeSession(phone.client, tablet.deviceId);
    const context = await browser.newContext();
    try {
      const opener = await context.newPage();
      await opener.goto(`${h.url}/health`);
      const popup = await fallbackInPopup(opener, session, 'bob');
      assert.equal(await popup.locator('h1').innerText(), 'You signed in with another account');
    } finally {
      await context.close();
    }
    try {
      await phone.client.deleteDevice(tablet.deviceId, { type: 'm.login.sso', session } as never);
      assert.fail('the deletion must not go through');
    } catch (err: unknown) {
      assert.equal((err as { httpStatus?: number }).httpStatus, 401);
    }
    assert.ok(h.homeserver.devices('alice').has(tablet.deviceId));
  });

  test('an unknown session gets a page that says what to do', async () => {
    const context = await browser.newContext();
    try {
      const page = await context.newPage();
      const response = await page.goto(`${h.url}/_matrix/client/r0/auth/m.login.sso/fallback/web?session=0123456789abcdefghijABCDEFGHIJ01`);
      assert.equal(response?.status(), 400);
      assert.equal(await page.locator('h1').innerText(), 'This confirmation link is not valid');
    } finally {
      await context.close();
    }
  });
});

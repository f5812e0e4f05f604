import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { chromium, type Browser, type Page } from 'playwright-core';
import { SERVER_NAME, startProxyHarness, type Harness } from '../support/proxy-harness.js';

/**
 * The SSO flow in a real browser (headless Chromium): cookies, redirects, the OP's login form, the confirmation
 * page's CSP (form-action must let the form's 303 reach the client) and the final landing on the client's URL.
 * Screenshots of the picker and confirmation pages go to test-artifacts/ (git-ignored) for a human look.
 */

const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = new URL('../../test-artifacts/', import.meta.url);
const chromiumMissing = !existsSync(CHROMIUM);
if (chromiumMissing && process.env['CI'] !== undefined) {
  throw new Error(`${CHROMIUM} is missing: the SSO browser test must run in CI (apt-get install chromium)`);
}
const skip = chromiumMissing ? `${CHROMIUM} is not installed (apt-get install chromium); skipped outside CI` : false;

/** The "client" the SSO flow returns to: a loopback page that records the URLs it was opened with. */
async function startClient(): Promise<{ url: string; visits: URL[]; server: Server }> {
  const visits: URL[] = [];
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://client.invalid');
    visits.push(url);
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end('<!doctype html><title>Client</title><h1 id="client">Client page</h1>');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, visits, server };
}

describe('SSO in headless Chromium', { skip }, () => {
  let h: Harness;
  let browser: Browser;
  let client: Awaited<ReturnType<typeof startClient>>;

  before(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    client = await startClient();
    h = await startProxyHarness({
      configure: (config) => {
        // A second provider (the same OP, another entry) so that the bare redirect shows the picker.
        const first = config['oidc_providers'][0];
        config['oidc_providers'].push({
          ...first,
          idp_id: 'company-sso',
          idp_name: 'Company SSO',
          password_grant: { enabled: false },
          backchannel_logout_enabled: false,
        });
        first.idp_name = 'Test OP';
      },
    });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync'],
    });
  });

  after(async () => {
    await browser?.close();
    await h?.stop();
    await new Promise<void>((resolve) => client?.server.close(() => resolve()));
  });

  /** Collects CSP violations the page reports in its console: a blocked form redirect shows up here. */
  function watchCsp(page: Page): string[] {
    const violations: string[] = [];
    page.on('console', (message) => {
      if (/Content Security Policy/i.test(message.text())) violations.push(message.text());
    });
    return violations;
  }

  test('picker → OP login form → callback → confirmation → client with loginToken → m.login.token → whoami', async () => {
    const context = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
    try {
      const page = await context.newPage();
      page.setDefaultTimeout(10_000);
      const violations = watchCsp(page);
      const redirectUrl = `${client.url}/sso-done?session=abc`;

      await page.goto(`${h.url}/_matrix/client/v3/login/sso/redirect?redirectUrl=${encodeURIComponent(redirectUrl)}`);
      assert.equal(await page.title(), 'Choose how to sign in');
      await page.screenshot({ path: new URL('sso-picker.png', ARTIFACTS).pathname, fullPage: true });

      await page.getByRole('link', { name: 'Continue with Test OP' }).click();
      await page.waitForURL((url) => url.origin === h.op.issuer && url.pathname.startsWith('/interaction/'));
      await page.fill('input[name="login"]', 'alice');
      await page.fill('input[name="password"]', h.op.users.alice.password);
      await page.click('#submit');

      await page.waitForURL((url) => url.pathname.startsWith('/_matrix-compat-proxy/sso/confirm/'));
      assert.equal(await page.locator('h1').innerText(), `Continue to ${new URL(client.url).host}?`);
      assert.equal(await page.locator('.mxid').innerText(), `@alice:${SERVER_NAME}`);
      await page.screenshot({ path: new URL('sso-confirmation.png', ARTIFACTS).pathname, fullPage: true });

      await page.getByRole('button', { name: 'Continue' }).click();
      await page.waitForURL((url) => url.href.startsWith(`${client.url}/sso-done`));
      assert.deepEqual(violations, [], 'the CSP let the confirmation form redirect to the client');
      const landing = new URL(page.url());
      assert.equal(landing.searchParams.get('session'), 'abc');
      const loginToken = landing.searchParams.get('loginToken');
      assert.ok(loginToken);
      assert.equal(client.visits.filter((visit) => visit.pathname === '/sso-done').length, 1);

      const login = await h.request('POST', '/_matrix/client/v3/login', { body: { type: 'm.login.token', token: loginToken, initial_device_display_name: 'Chromium test' } });
      assert.equal(login.status, 200, JSON.stringify(login.body));
      assert.equal(login.body.user_id, `@alice:${SERVER_NAME}`);
      const whoami = await h.request('GET', '/_matrix/client/v3/account/whoami', { token: login.body.access_token });
      assert.equal(whoami.status, 200, JSON.stringify(whoami.body));
      assert.equal(whoami.body.user_id, `@alice:${SERVER_NAME}`);
      assert.equal(whoami.body.device_id, login.body.device_id);

      // Back and "Continue" again: the confirmation was used up, the browser gets a page, not a second token.
      await page.goBack();
      await page.waitForURL((url) => url.pathname.startsWith('/_matrix-compat-proxy/sso/confirm/'));
      assert.match(await page.locator('h1').innerText(), /no longer valid/);
    } finally {
      await context.close();
    }
  });

  test('a custom-scheme redirectUrl (mobile app) passes the CSP of the confirmation form', async () => {
    const context = await browser.newContext();
    try {
      const page = await context.newPage();
      page.setDefaultTimeout(10_000);
      const violations = watchCsp(page);
      await page.goto(`${h.url}/_matrix/client/v3/login/sso/redirect/company-sso?redirectUrl=${encodeURIComponent('im.app://sso-done?x=1')}`);
      await page.fill('input[name="login"]', 'alice');
      await page.fill('input[name="password"]', h.op.users.alice.password);
      await page.click('#submit');
      await page.waitForURL((url) => url.pathname.startsWith('/_matrix-compat-proxy/sso/confirm/'));
      assert.equal(await page.locator('h1').innerText(), 'Continue to im.app://sso-done?');
      // Headless Chromium has no handler for im.app, so nothing lands anywhere; but with form-action lacking im.app:
      // Chromium blocks the submission's redirect and this response never arrives.
      const redirected = page.waitForResponse((response) => response.request().method() === 'POST');
      await page.getByRole('button', { name: 'Continue' }).click();
      const response = await redirected;
      assert.equal(response.status(), 303);
      assert.match(response.headers()['location'] ?? '', /^im\.app:\/\/sso-done\?x=1&loginToken=[0-9A-Za-z]{32}$/);
      assert.deepEqual(violations, []);
    } finally {
      await context.close();
    }
  });

  test('an explicit idpId goes straight to its OP; an unknown one gets a readable error page', async () => {
    const context = await browser.newContext();
    try {
      const page = await context.newPage();
      page.setDefaultTimeout(10_000);
      const redirectUrl = `${client.url}/again`;
      await page.goto(`${h.url}/_matrix/client/v3/login/sso/redirect/company-sso?redirectUrl=${encodeURIComponent(redirectUrl)}`);
      await page.fill('input[name="login"]', 'bob');
      await page.fill('input[name="password"]', h.op.users.bob.password);
      await page.click('#submit');
      await page.waitForURL((url) => url.pathname.startsWith('/_matrix-compat-proxy/sso/confirm/'));

      await page.goto(`${h.url}/_matrix/client/v3/login/sso/redirect/test-op-that-does-not-exist?redirectUrl=${encodeURIComponent(redirectUrl)}`);
      assert.equal(await page.locator('h1').innerText(), 'Unknown sign-in provider');
      await page.screenshot({ path: new URL('sso-error-unknown-provider.png', ARTIFACTS).pathname, fullPage: true });
    } finally {
      await context.close();
    }
  });
});

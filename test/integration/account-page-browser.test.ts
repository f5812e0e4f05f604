import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { IDP_ID, SERVER_NAME, startProxyHarness, type Harness } from '../support/proxy-harness.js';
import { FakeClock } from '../support/fake-clock.js';

/**
 * The account page (issue 15) in headless Chromium against the in-process OP and the homeserver double: sign-in
 * through the OP, the device list (a password device, an SSO device, a native OIDC client's device), signing one
 * out, the MSC4191 deep links, the cross-signing reset approval Synapse's 401 points at, and the negative cases
 * (CSRF, stale authentication, another user's device id).
 */

const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = new URL('../../test-artifacts/', import.meta.url);
const chromiumMissing = !existsSync(CHROMIUM);
if (chromiumMissing && process.env['CI'] !== undefined) {
  throw new Error(`${CHROMIUM} is missing: the account page browser test must run in CI (apt-get install chromium)`);
}
const skip = chromiumMissing ? `${CHROMIUM} is not installed (apt-get install chromium); skipped outside CI` : false;
const ACCOUNT = '/_matrix-compat-proxy/account';

/** The "client" an SSO login returns to. */
async function startClient(): Promise<{ url: string; server: Server }> {
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end('<!doctype html><title>Client</title><h1 id="client">Client page</h1>');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

describe('account page in headless Chromium', { skip }, () => {
  let h: Harness;
  let browser: Browser;
  let client: Awaited<ReturnType<typeof startClient>>;
  // Behind real time, so that a sign-in at the OP (its auth_time is real time) can later be both stale and fresh.
  const clock = new FakeClock(Date.now() - 10 * 60_000);

  before(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    client = await startClient();
    h = await startProxyHarness({ clock });
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

  /** An SSO login of alice in this browser (the OP session it leaves lets the account page sign in without a form). */
  async function ssoLogin(page: Page, name: string): Promise<{ token: string; deviceId: string }> {
    await page.goto(`${h.url}/_matrix/client/v3/login/sso/redirect?redirectUrl=${encodeURIComponent(`${client.url}/done`)}`);
    if (page.url().startsWith(h.op.issuer)) {
      await page.fill('input[name="login"]', 'alice');
      await page.fill('input[name="password"]', h.op.users.alice.password);
      await page.click('#submit');
    }
    await page.waitForURL((url) => url.pathname.startsWith('/_matrix-compat-proxy/sso/confirm/'));
    await page.getByRole('button', { name: 'Continue' }).click();
    await page.waitForURL((url) => url.href.startsWith(`${client.url}/done`));
    const loginToken = new URL(page.url()).searchParams.get('loginToken');
    const login = await h.request('POST', '/_matrix/client/v3/login', { body: { type: 'm.login.token', token: loginToken, initial_device_display_name: name } });
    assert.equal(login.status, 200, JSON.stringify(login.body));
    return { token: login.body.access_token, deviceId: login.body.device_id };
  }

  async function deviceIdsOnPage(page: Page): Promise<string[]> {
    return page.locator('li.device').evaluateAll((items) => items.map((item) => item.getAttribute('data-device-id') ?? ''));
  }

  async function whoamiStatus(token: string): Promise<number> {
    return (await h.request('GET', '/_matrix/client/v3/account/whoami', { token })).status;
  }

  let context: BrowserContext;
  let page: Page;
  let password: { token: string; deviceId: string };
  let sso: { token: string; deviceId: string };
  let nativeToken: string;

  test('sign in through the OP; the list shows the password, SSO and native devices; the metadata points here', async () => {
    password = (await h.passwordLogin('alice', h.op.users.alice.password, { initial_device_display_name: 'Password phone' })).body;
    password = { token: (password as any).access_token, deviceId: (password as any).device_id };
    nativeToken = await opToken(h, 'NATIVEPAGE1');
    assert.equal(await whoamiStatus(nativeToken), 200);

    context = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
    page = await context.newPage();
    page.setDefaultTimeout(10_000);
    sso = await ssoLogin(page, 'SSO laptop');

    const response = await page.goto(`${h.url}${ACCOUNT}`);
    assert.equal(response?.status(), 200);
    assert.equal(new URL(page.url()).pathname, ACCOUNT);
    assert.equal(await page.locator('.mxid').first().innerText(), `@alice:${SERVER_NAME}`);
    const ids = await deviceIdsOnPage(page);
    for (const id of [password.deviceId, sso.deviceId, 'NATIVEPAGE1']) assert.ok(ids.includes(id), `${id} is listed: ${ids.join(', ')}`);
    const text = await page.locator('ul.devices').innerText();
    assert.match(text, /Password phone[\s\S]*Signed in with a password|Signed in with a password/);
    assert.match(text, /Signed in with single sign-on/);
    assert.match(text, /Signed in directly with your identity provider/);
    await page.screenshot({ path: new URL('account-overview.png', ARTIFACTS).pathname, fullPage: true });

    const cookies = await context.cookies(h.url);
    const cookie = cookies.find((candidate) => candidate.name === 'mcp-account');
    assert.ok(cookie, 'the page session cookie (plain-http dev name)');
    assert.equal(cookie.httpOnly, true);
    assert.equal(cookie.sameSite, 'Lax');
    // The page session keeps when the OP was asked (a back-channel logout from then on ends it), before its creation.
    const pageSession = await h.deps.accountSessions.get(cookie.value);
    assert.ok(pageSession?.signedInAt !== undefined && pageSession.signedInAt <= pageSession.createdAt, JSON.stringify(pageSession));
    const csp = response?.headers()['content-security-policy'] ?? '';
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /form-action 'self'/);

    const metadata = await fetch(`${h.homeserverFacingUrl}/.well-known/openid-configuration`).then((r) => r.json() as Promise<Record<string, unknown>>);
    assert.equal(metadata['account_management_uri'], `${h.url}${ACCOUNT}`);
    assert.ok((metadata['account_management_actions_supported'] as string[]).includes('org.matrix.session_end'));
  });

  test('sign out a native device and a password device from the page: their tokens die at once', async () => {
    await page.goto(`${h.url}${ACCOUNT}?action=org.matrix.device_view&device_id=NATIVEPAGE1`);
    assert.equal(await page.locator('h1').innerText(), 'Device NATIVEPAGE1');
    await page.click('#sign-out-device');
    await page.waitForURL((url) => url.pathname === ACCOUNT && url.searchParams.get('signed_out') !== null);
    assert.match(await page.locator('#notice').innerText(), /NATIVEPAGE1 was signed out/);
    assert.equal(await whoamiStatus(nativeToken), 401);
    assert.equal((await deviceIdsOnPage(page)).includes('NATIVEPAGE1'), false);

    // MSC4191's older name for device_delete, as Element X sends it: the question comes first.
    await page.goto(`${h.url}${ACCOUNT}?action=org.matrix.session_end&device_id=${password.deviceId}`);
    assert.equal(await page.locator('h1').innerText(), 'Sign out Password phone?');
    await page.click('#sign-out-device');
    await page.waitForURL((url) => url.searchParams.get('signed_out') !== null);
    assert.equal(await whoamiStatus(password.token), 401);
    assert.equal(h.homeserver.devices('alice').has(password.deviceId), false);
    assert.equal(await whoamiStatus(sso.token), 200, 'the others stay');
  });

  test("CSRF: a form without the page's token changes nothing; another user's device id is unknown", async () => {
    const forged = await page.request.post(`${h.url}${ACCOUNT}/devices/sign-out`, { form: { device_id: sso.deviceId, csrf_token: 'forged' }, maxRedirects: 0 });
    assert.equal(forged.status(), 403);
    assert.match(await forged.text(), /This form could not be checked/);
    const noToken = await page.request.post(`${h.url}${ACCOUNT}/devices/sign-out`, { form: { device_id: sso.deviceId }, maxRedirects: 0 });
    assert.equal(noToken.status(), 403);
    assert.equal(await whoamiStatus(sso.token), 200);

    const bob = await h.passwordLogin('bob', h.op.users.bob.password);
    const response = await page.goto(`${h.url}${ACCOUNT}?action=org.matrix.device_delete&device_id=${bob.body.device_id}`);
    assert.equal(response?.status(), 404);
    assert.equal(await page.locator('h1').innerText(), 'Unknown device');
    // Posting it with a valid CSRF token (taken from a real form of the page) deletes nothing of bob's.
    await page.goto(`${h.url}${ACCOUNT}?action=org.matrix.device_view&device_id=${sso.deviceId}`);
    const csrf = await page.locator('input[name="csrf_token"]').first().getAttribute('value');
    const other = await page.request.post(`${h.url}${ACCOUNT}/devices/sign-out`, { form: { device_id: bob.body.device_id, csrf_token: csrf ?? '' }, maxRedirects: 0 });
    assert.equal(other.status(), 404);
    assert.equal(await whoamiStatus(bob.body.access_token), 200);
  });

  test('cross-signing reset: Synapse points here, the user approves, the replacement goes through', async () => {
    const upload = (master: string) =>
      h.request('POST', '/_matrix/client/v3/keys/device_signing/upload', {
        token: sso.token,
        body: { master_key: { user_id: `@alice:${SERVER_NAME}`, usage: ['master'], keys: { [`ed25519:${master}`]: master } } },
      });
    assert.equal((await upload('first-master-key')).status, 200);
    const refused = await upload('second-master-key');
    assert.equal(refused.status, 401);
    const url = refused.body.params['org.matrix.cross_signing_reset'].url as string;
    assert.equal(url, `${h.url}${ACCOUNT}?action=org.matrix.cross_signing_reset`);

    await page.goto(url);
    assert.equal(await page.locator('h1').innerText(), 'Reset your encryption identity?');
    await page.click('#allow-reset');
    await page.waitForSelector('#reset-allowed');
    assert.match(await page.locator('main').innerText(), /within 10 minutes/);
    await page.screenshot({ path: new URL('account-cross-signing-allowed.png', ARTIFACTS).pathname, fullPage: true });
    assert.equal((await upload('second-master-key')).status, 200);
  });

  test('stale authentication: a sensitive action sends the user to sign in again (prompt=login), then it works', async () => {
    clock.advance(h.config.account.recent_auth_window + 60_000);
    await page.goto(`${h.url}${ACCOUNT}?action=org.matrix.device_view&device_id=${sso.deviceId}`);
    await page.click('#sign-out-device');
    // The OP asks for the password although its session for this browser is alive.
    await page.waitForURL((url) => url.origin === h.op.issuer && url.pathname.startsWith('/interaction/')).catch(async (err: unknown) => {
      throw new Error(`landed on ${page.url()}: ${(await page.locator('body').innerText()).slice(0, 400)}`, { cause: err });
    });
    assert.equal(await whoamiStatus(sso.token), 200, 'nothing happened before the new sign-in');
    await page.fill('input[name="login"]', 'alice');
    await page.fill('input[name="password"]', h.op.users.alice.password);
    await page.click('#submit');
    await page.waitForURL((url) => url.pathname === ACCOUNT && url.searchParams.get('action') === 'org.matrix.device_delete');
    await page.click('#sign-out-device');
    await page.waitForURL((url) => url.searchParams.get('signed_out') !== null);
    assert.equal(await whoamiStatus(sso.token), 401);
  });

  test('signing out of the page ends only the page session', async () => {
    const remaining = await h.passwordLogin('alice', h.op.users.alice.password);
    await page.goto(`${h.url}${ACCOUNT}`);
    await page.getByRole('button', { name: 'Sign out of this page' }).click();
    await page.waitForSelector('text=You are signed out of this page');
    assert.equal(await whoamiStatus(remaining.body.access_token), 200);
    const again = await page.request.post(`${h.url}${ACCOUNT}/devices/sign-out`, { form: { device_id: remaining.body.device_id, csrf_token: 'x' }, maxRedirects: 0 });
    assert.equal(again.status(), 403);
    await context.close();
  });

  test("a back-channel logout of the OP session the page signed in with ends the page session; another sid's does not", async () => {
    const fresh = await browser.newContext();
    const freshPage = await fresh.newPage();
    freshPage.setDefaultTimeout(10_000);
    await freshPage.goto(`${h.url}${ACCOUNT}`);
    if (freshPage.url().startsWith(h.op.issuer)) {
      await freshPage.fill('input[name="login"]', 'alice');
      await freshPage.fill('input[name="password"]', h.op.users.alice.password);
      await freshPage.click('#submit');
    }
    await freshPage.waitForURL((url) => url.pathname === ACCOUNT);
    const cookie = (await fresh.cookies(h.url)).find((candidate) => candidate.name === 'mcp-account');
    assert.ok(cookie);
    const pageSession = await h.deps.accountSessions.get(cookie.value);
    assert.ok(pageSession?.sid, 'the page session knows its OP session');
    const pageStatus = async () => (await freshPage.request.get(`${h.url}${ACCOUNT}`, { maxRedirects: 0 })).status();
    assert.equal(await pageStatus(), 200);

    const postLogout = async (claims: Record<string, unknown>) => {
      // The proxy runs on this suite's clock (behind real time): the logout token is issued by that clock.
      const iat = Math.floor(clock.now() / 1000);
      const token = await h.op.signJwt(h.op.logoutTokenClaims({ iat, exp: iat + 120, ...claims }));
      const answer = await fetch(`${h.url}/_matrix-compat-proxy/backchannel-logout/${IDP_ID}`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ logout_token: token }),
      });
      assert.equal(answer.status, 200, await answer.text());
    };
    await postLogout({ sid: `another-${pageSession.sid}` });
    assert.equal(await pageStatus(), 200, "another OP session's logout leaves the page signed in");

    await postLogout({ sid: pageSession.sid });
    const after = await freshPage.request.get(`${h.url}${ACCOUNT}`, { maxRedirects: 0 });
    assert.ok([302, 303].includes(after.status()), `signed out: sent to sign in again (got ${after.status()})`);
    assert.ok((after.headers()['location'] ?? '').startsWith(h.op.issuer), after.headers()['location']);
    assert.equal(await h.deps.accountSessions.get(cookie.value), undefined);
    await fresh.close();
  });
});

/** A native OIDC client's token for alice, straight from the OP with the Matrix scopes. */
async function opToken(h: Harness, deviceId: string): Promise<string> {
  const response = await fetch(`${h.op.issuer}/token`, {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from(`${h.op.clientId}:${h.op.clientSecret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'password', username: 'alice', password: h.op.users.alice.password, scope: `openid urn:matrix:client:api:* urn:matrix:client:device:${deviceId}` }),
  });
  const body = (await response.json()) as { access_token?: string };
  assert.equal(response.status, 200, JSON.stringify(body));
  return body.access_token!;
}

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { createClient } from 'matrix-js-sdk';
import { chromium, type Browser, type Page } from 'playwright-core';
import { appPasswordKeys } from '../../src/sessions/app-passwords.js';
import { SERVER_NAME, startProxyHarness, type Harness } from '../support/proxy-harness.js';
import { FakeClock } from '../support/fake-clock.js';

/**
 * App passwords (issue 15, item 3) end to end: created on the account page in headless Chromium (signed in through
 * the in-process OP), used by matrix-js-sdk with the provider's password grant DISABLED in the proxy, revoked on the
 * page, and ended by the OP when the user is disabled there (re-validation with the app password's own OP grant).
 * The OP's token endpoint is watched throughout: an app password never reaches its password grant.
 */

const CHROMIUM = '/usr/bin/chromium';
const chromiumMissing = !existsSync(CHROMIUM);
if (chromiumMissing && process.env['CI'] !== undefined) {
  throw new Error(`${CHROMIUM} is missing: the app password browser test must run in CI (apt-get install chromium)`);
}
const skip = chromiumMissing ? `${CHROMIUM} is not installed (apt-get install chromium); skipped outside CI` : false;
const ACCOUNT = '/_matrix-compat-proxy/account';
const ACCOUNT_BURST = 16;

describe('app passwords: account page in Chromium, login with matrix-js-sdk, revocation, OP refusal', { skip }, () => {
  let h: Harness;
  let browser: Browser;
  let page: Page;
  const clock = new FakeClock(Date.now());

  before(async () => {
    h = await startProxyHarness({
      clock,
      op: { rotateRefreshTokens: true },
      configure: (config) => {
        config['password_login'] = { enabled: false };
        config['oidc_providers'][0]['password_grant'] = { enabled: false };
        config['app_passwords'] = { enabled: true, max_per_user: 3 };
        config['rate_limits']['login_per_account'] = { burst: ACCOUNT_BURST, per_second: 0.001 };
      },
    });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync'],
    });
    const context = await browser.newContext();
    page = await context.newPage();
    page.setDefaultTimeout(10_000);
  });
  after(async () => {
    await browser?.close();
    await h?.stop();
  });

  /** OP password grants and all token requests so far. */
  const opPasswordGrants = () => h.op.requestCount('/token', 'password');
  const opTokenRequests = () => h.op.requestCount('/token');

  async function whoami(token: string): Promise<{ status: number; errcode: unknown }> {
    h.homeserver.forgetIntrospections();
    const answer = await h.request('GET', '/_matrix/client/v3/account/whoami', { token });
    return { status: answer.status, errcode: answer.body?.errcode };
  }

  async function login(user: string | { email: string }, password: string) {
    const identifier = typeof user === 'string' ? { type: 'm.id.user', user } : { type: 'm.id.thirdparty', medium: 'email', address: user.email };
    return h.request('POST', '/_matrix/client/v3/login', { body: { type: 'm.login.password', identifier, password } });
  }

  async function createOnPage(name: string): Promise<string> {
    await page.goto(`${h.url}${ACCOUNT}`);
    if (page.url().startsWith(h.op.issuer)) {
      await page.fill('input[name="login"]', 'alice');
      await page.fill('input[name="password"]', h.op.users.alice.password);
      await page.click('#submit');
      await page.waitForURL((url) => url.pathname === ACCOUNT);
    }
    await page.fill('#app-password-name', name);
    await page.click('#create-app-password');
    // A second app password in the same page session needs a new OP sign-in (each gets its own refresh token).
    if (page.url().startsWith(h.op.issuer)) {
      await page.fill('input[name="login"]', 'alice');
      await page.fill('input[name="password"]', h.op.users.alice.password);
      await page.click('#submit');
      await page.waitForURL((url) => url.pathname === ACCOUNT);
      await page.fill('#app-password-name', name);
      await page.click('#create-app-password');
    }
    const secret = await page.locator('#app-password-secret').innerText();
    assert.match(secret, /^mcpp_[0-9A-Za-z]{16}_[0-9A-Za-z]{32}$/, 'about 190 bits of randomness behind a recognisable prefix');
    return secret;
  }

  let first: string;
  let firstToken: string;

  test('GET /login offers m.login.password although the password grant is disabled', async () => {
    const flows = await createClient({ baseUrl: h.url }).loginFlows();
    assert.ok(flows.flows.some((flow) => flow.type === 'm.login.password'));
  });

  test('create on the page (shown once, stored hashed), log in with matrix-js-sdk: no OP password grant', async () => {
    first = await createOnPage('Bot');
    const id = first.split('_')[1] ?? '';
    const stored = await h.store.get(appPasswordKeys.record(id));
    assert.ok(stored !== undefined && !stored.includes(first) && !stored.includes(first.split('_')[2] ?? '-'), 'only a hash is stored');
    assert.ok(JSON.parse(stored).sealedOpRefreshToken.startsWith('v1.'), 'the OP grant is kept sealed');

    await page.goto(`${h.url}${ACCOUNT}`);
    assert.match(await page.locator('#app-passwords + p + ul').innerText(), /Bot/);
    assert.equal((await page.content()).includes(first), false, 'never shown again');

    const anonymous = createClient({ baseUrl: h.url });
    const answer = await anonymous.loginRequest({ type: 'm.login.password', identifier: { type: 'm.id.user', user: `@alice:${SERVER_NAME}` }, password: first, initial_device_display_name: 'bot' });
    assert.equal(answer.user_id, `@alice:${SERVER_NAME}`);
    firstToken = answer.access_token;
    const client = createClient({ baseUrl: h.url, accessToken: answer.access_token, userId: answer.user_id, deviceId: answer.device_id });
    assert.equal((await client.whoami()).user_id, `@alice:${SERVER_NAME}`);

    // Any identifier form of the bound account: localpart and e-mail too.
    assert.equal((await login('alice', first)).status, 200);
    assert.equal((await login({ email: 'alice@example.test' }, first)).status, 200);
    assert.equal(opPasswordGrants(), 0, 'the OP never saw a password grant');
  });

  test("a wrong app password, or another user's identifier: 403 without any OP call", async () => {
    const before = opTokenRequests();
    const wrong = await login('alice', `${first.slice(0, -4)}AAAA`);
    assert.equal(wrong.status, 403);
    assert.equal(wrong.body.errcode, 'M_FORBIDDEN');
    const made = await login('alice', 'mcpp_AAAAAAAAAAAAAAAA_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB');
    assert.equal(made.status, 403);
    const otherUser = await login('bob', first);
    assert.equal(otherUser.status, 403);
    // Not an app password and no password grant: refused here too, never sent to the OP.
    assert.equal((await login('bob', h.op.users.bob.password)).status, 403);
    assert.equal(opTokenRequests(), before);
  });

  test('throttled like passwords: a burst of wrong guesses gets 429, none reaches the OP', async () => {
    const before = opTokenRequests();
    // bob took one token above; the burst runs out within ACCOUNT_BURST more.
    const statuses: number[] = [];
    for (let i = 0; i < ACCOUNT_BURST; i++) statuses.push((await login('bob', `mcpp_AAAAAAAAAAAAAAAA_${String(i).padStart(32, 'C')}`)).status);
    assert.ok(statuses.includes(429), statuses.join(','));
    assert.ok(statuses.slice(0, statuses.indexOf(429)).every((status) => status === 403), statuses.join(','));
    assert.equal(opTokenRequests(), before);
  });

  test('revoke on the page: its session dies at once, the app password logs nobody in', async () => {
    await page.goto(`${h.url}${ACCOUNT}`);
    await page.locator('li[data-app-password-id] button', { hasText: 'Revoke' }).first().click();
    await page.waitForURL((url) => url.searchParams.get('revoked') !== null);
    assert.match(await page.locator('#notice').innerText(), /App password Bot was revoked/);
    assert.equal((await whoami(firstToken)).status, 401);
    assert.equal((await login('alice', first)).status, 403);
  });

  test('back-channel logout of the bound subject ends the app password sessions', async () => {
    const third = await createOnPage('Bridge');
    const answer = await login('alice', third);
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    await h.op.sendBackchannelLogout({ sub: h.op.users.alice.sub });
    assert.equal((await whoami(answer.body.access_token)).status, 401);
    // The OP logged the subject out after the grant was last checked: refused until the OP vouches for it again.
    assert.equal((await login('alice', third)).status, 403);
    clock.advance(1000);
    await page.goto(`${h.url}${ACCOUNT}`);
    await page.locator('li[data-app-password-id] button', { hasText: 'Revoke' }).first().click();
    await page.waitForURL((url) => url.searchParams.get('revoked') !== null);
  });

  test('user disabled at the OP: re-validation with the app password grant ends its sessions, login refused', async () => {
    const second = await createOnPage('Phone');
    const answer = await login('alice', second);
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    const token = answer.body.access_token as string;
    const id = second.split('_')[1] ?? '';
    const sealedBefore = (await h.deps.appPasswords.get(id))?.sealedOpRefreshToken;

    // User-Interactive Auth's m.login.password takes the app password too (device deletion, no OP password grant).
    const other = await login('alice', second);
    assert.equal(other.status, 200);
    const path = `/_matrix/client/v3/devices/${other.body.device_id}`;
    const challenge = await h.request('DELETE', path, { token, body: {} });
    assert.equal(challenge.status, 401);
    assert.ok(challenge.body.flows.some((flow: { stages: string[] }) => flow.stages.includes('m.login.password')), JSON.stringify(challenge.body));
    const deleted = await h.request('DELETE', path, {
      token,
      body: { auth: { type: 'm.login.password', session: challenge.body.session, identifier: { type: 'm.id.user', user: 'alice' }, password: second } },
    });
    assert.equal(deleted.status, 200, JSON.stringify(deleted.body));
    assert.equal((await whoami(other.body.access_token)).status, 401);

    // Due: one refresh grant at the OP, the rotated token is written back to the app password.
    const refreshesBefore = h.op.requestCount('/token', 'refresh_token');
    clock.advance(h.config.sessions.revalidate_interval + 1000);
    assert.equal((await whoami(token)).status, 200);
    assert.equal(h.op.requestCount('/token', 'refresh_token'), refreshesBefore + 1);
    const sealedAfter = (await h.deps.appPasswords.get(id))?.sealedOpRefreshToken;
    assert.notEqual(sealedAfter, sealedBefore, 'the rotated OP refresh token is kept');

    h.op.disableUser('alice');
    clock.advance(h.config.sessions.revalidate_interval + 1000);
    assert.equal((await whoami(token)).status, 401);
    const refused = await login('alice', second);
    assert.equal(refused.status, 403);
    assert.ok((await h.deps.appPasswords.get(id))?.refusedAt !== undefined);
    h.op.enableUser('alice');
    assert.equal((await login('alice', second)).status, 403, 'refused for good: a new app password needs a new OP grant');
    assert.equal(opPasswordGrants(), 0);
  });
});

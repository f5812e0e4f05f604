import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chromium } from 'playwright-core';
import { completeAuthorizationCodeGrant } from 'matrix-js-sdk';
import { authorizationUrl, clientPage, discover, follow, REDIRECT_URI, register, signInPageOf } from '../support/native-client.js';
import { ProxyBrowser } from '../support/proxy-browser.js';
import { SERVER_NAME, startProxyHarness, type Harness } from '../support/proxy-harness.js';

/**
 * The sign-in step of native_clients: serve (issue 17): the proxy's own password form next to "sign in with <OP>"
 * when password_login is on (the password checked at the in-process OP exactly as POST /login checks it), and
 * MSC4198's login_hint (prefilled user name, passed on to the OP, a foreign server refused, garbage ignored).
 * matrix-js-sdk's OIDC helpers play the client; the browser hops are real HTTP (and Chromium for the form).
 */

const signingKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();

let h: Harness;
before(async () => {
  h = await startProxyHarness({
    op: {
      users: [
        { username: 'carol', password: 'carol-password-123', sub: 'sub-carol', email: 'carol@example.test', name: 'Carol', groups: [] },
        { username: 'dave', password: 'dave-password-123', sub: 'sub-dave', email: 'dave.work@example.test', name: 'Dave', groups: [] },
      ],
    },
    configure: (config) => {
      config['native_clients'] = 'serve';
      // op_username: the binding's OP user name goes to the OP (the default, localpart, is the unit test's).
      config['oauth_server'] = { signing_key: signingKey, first_party_client_uris: ['https://app.example.test'], upstream_login_hint: 'op_username' };
      // Small per-account bucket (5, no refill in the test's time): the form and POST /login drain the SAME one; no
      // account below takes more than 5 attempts otherwise.
      config['rate_limits'] = { ...config['rate_limits'], login_per_account: { burst: 5, per_second: 0.001 } };
    },
  });
});
after(async () => {
  await h.stop();
});

const whoami = (token: string) => h.request('GET', '/_matrix/client/v3/account/whoami', { token });
const isClient = (url: URL) => url.href.startsWith(REDIRECT_URI);
const isOp = (url: URL) => url.origin === new URL(h.op.issuer).origin;

/** A fresh client's authorization started in a fresh browser: the sign-in page it lands on. */
async function startAuthorization(extra: Record<string, string> = {}) {
  const metadata = await discover(h.url);
  const clientId = await register(metadata);
  const url = await authorizationUrl(h.url, metadata, clientId, extra);
  const browser = new ProxyBrowser(h.url);
  const { response, stoppedAt } = await follow(browser, await browser.get(url), (at) => isClient(at) || isOp(at));
  return { clientId, url, browser, response, stoppedAt };
}

async function submitPassword(browser: ProxyBrowser, page: string, username: string, password: string, csrfToken?: string) {
  const form = signInPageOf(page);
  return browser.post(form.action, { csrf_token: csrfToken ?? form.csrfToken, username, password });
}

async function codeOf(browser: ProxyBrowser, response: Response): Promise<URL> {
  const { stoppedAt, response: last } = await follow(browser, response, isClient);
  assert.ok(stoppedAt, `expected the client's redirect URI, got ${last.status}: ${await last.text()}`);
  return stoppedAt;
}

describe('native sign-in: the proxy password form (password_login)', () => {
  test('the page offers the OP and the form; the right password completes the authorization; the token works with its device', async () => {
    const { response } = await startAuthorization();
    assert.equal(response.status, 200);
    const page = await response.text();
    const form = signInPageOf(page);
    assert.equal(form.ssoLinks.length, 1);
    assert.match(page, /Sign in with Test OP/);
    assert.equal(form.username, '');
    assert.match(response.headers.get('content-security-policy') ?? '', /form-action 'self' https:\/\/app\.example\.test/);

    const started = await startAuthorization();
    const landing = await codeOf(started.browser, await submitPassword(started.browser, await started.response.text(), 'alice', h.op.users.alice.password));
    assert.equal(landing.searchParams.get('error'), null);
    const completed = await completeAuthorizationCodeGrant(landing.searchParams.get('code') ?? '', landing.searchParams.get('state') ?? '');
    const me = await whoami(completed.tokenResponse.access_token);
    assert.equal(me.status, 200);
    assert.equal(me.body.user_id, `@alice:${SERVER_NAME}`);
    const deviceId = started.url.searchParams.get('scope')?.match(/device:(\S+)/)?.[1];
    assert.equal(me.body.device_id, deviceId);
    assert.ok(h.homeserver.devices('alice').has(deviceId ?? ''));
    // One session list: the native session is a password session of the OP account.
    const sessions = await Promise.all((await h.deps.sessions.idsOfUser('alice')).map((id) => h.deps.sessions.get(id)));
    const native = sessions.find((session) => session?.deviceId === deviceId);
    assert.equal(native?.origin.kind, 'password');
  });

  test("a wrong password shows the form again with /login's words; the same interaction then takes the right one", async () => {
    const { browser, response } = await startAuthorization();
    const refused = await submitPassword(browser, await response.text(), 'bob', 'not-bobs-password');
    assert.equal(refused.status, 403);
    const again = signInPageOf(await refused.text());
    assert.equal(again.error, 'Invalid username/password');
    assert.equal(again.username, 'bob', 'the user name stays in the field');
    // The same interaction still accepts the right password afterwards.
    const landing = await codeOf(browser, await browser.post(again.action, { csrf_token: again.csrfToken, username: 'bob', password: h.op.users.bob.password }));
    assert.ok(landing.searchParams.get('code'));
  });

  test('CSRF: a missing or foreign token, a JSON body, or a POST without the interaction cookie is refused', async () => {
    const { browser, response } = await startAuthorization();
    const page = await response.text();
    const form = signInPageOf(page);
    const other = await startAuthorization();
    const otherForm = signInPageOf(await other.response.text());
    for (const token of ['', otherForm.csrfToken]) {
      const refused = await browser.post(form.action, { csrf_token: token, username: 'alice', password: h.op.users.alice.password });
      assert.equal(refused.status, 403, `token ${JSON.stringify(token)}`);
    }
    const json = await fetch(form.action, { method: 'POST', headers: { 'content-type': 'application/json', cookie: browser.cookieHeader() }, body: JSON.stringify({ csrf_token: form.csrfToken, username: 'alice', password: 'x' }) });
    assert.equal(json.status, 403);
    // A cross-site POST carries no SameSite=Lax interaction cookie: the interaction is not found for it.
    const cookieless = await new ProxyBrowser(h.url).post(form.action, { csrf_token: form.csrfToken, username: 'alice', password: h.op.users.alice.password });
    assert.equal(cookieless.status, 400);
    // None of those consumed the interaction.
    assert.ok((await codeOf(browser, await submitPassword(browser, page, 'alice', h.op.users.alice.password))).searchParams.get('code'));
  });

  test('the same per-account throttle as POST /login: failures at the form drain the bucket /login then finds empty', async () => {
    const { browser, response } = await startAuthorization();
    let page = await response.text();
    for (let attempt = 0; attempt < 5; attempt++) {
      const refused = await submitPassword(browser, page, 'carol', 'wrong-password');
      assert.equal(refused.status, 403);
      page = await refused.text();
    }
    const limited = await submitPassword(browser, page, 'carol', 'carol-password-123');
    assert.equal(limited.status, 429);
    assert.ok(Number(limited.headers.get('retry-after')) >= 1);
    assert.match(await limited.text(), /Too many attempts/);
    const legacy = await h.passwordLogin('carol', 'carol-password-123');
    assert.equal(legacy.status, 429, JSON.stringify(legacy.body));
    assert.equal(legacy.body.errcode, 'M_LIMIT_EXCEEDED');
  });

  test('prompt=create still goes straight to the OP registration (no form)', async () => {
    const { stoppedAt } = await startAuthorization({ prompt: 'create' });
    assert.ok(stoppedAt && isOp(stoppedAt));
    assert.equal(stoppedAt.searchParams.get('prompt'), 'create');
  });
});

describe('native sign-in: MSC4198 login_hint', () => {
  test('mxid of this server: the user name is prefilled and the OP gets its own login_hint (the localpart)', async () => {
    const { browser, response } = await startAuthorization({ login_hint: `mxid:@bob:${SERVER_NAME}` });
    const form = signInPageOf(await response.text());
    assert.equal(form.username, 'bob');
    const sso = form.ssoLinks[0] ?? '';
    assert.equal(new URL(sso, h.url).searchParams.get('login_hint'), `mxid:@bob:${SERVER_NAME}`);
    const { stoppedAt } = await follow(browser, await browser.get(sso), isOp);
    assert.ok(stoppedAt);
    assert.equal(stoppedAt.searchParams.get('login_hint'), 'bob');
  });

  test('the hint is read without the openid scope too (MSC4198: a plain OAuth 2.0 request)', async () => {
    const metadata = await discover(h.url);
    const clientId = await register(metadata);
    const url = await authorizationUrl(h.url, metadata, clientId, { login_hint: `mxid:@bob:${SERVER_NAME}` });
    url.searchParams.set('scope', (url.searchParams.get('scope') ?? '').split(' ').filter((scope) => scope !== 'openid').join(' '));
    url.searchParams.delete('nonce'); // an OIDC parameter: oidc-provider refuses it without openid
    assert.doesNotMatch(url.searchParams.get('scope') ?? '', /openid/);
    const browser = new ProxyBrowser(h.url);
    const { response, stoppedAt } = await follow(browser, await browser.get(url), (at) => isClient(at) || isOp(at));
    assert.equal(response.status, 200, stoppedAt?.href);
    assert.equal(signInPageOf(await response.text()).username, 'bob');
  });

  test("upstream_login_hint: op_username: the binding's OP user name is the OP's hint (an account that signs in with its e-mail address)", async () => {
    // dave signs in by e-mail address: his binding remembers that the OP took "dave.work@example.test".
    const legacy = await h.request('POST', '/_matrix/client/v3/login', { body: { type: 'm.login.password', identifier: { type: 'm.id.thirdparty', medium: 'email', address: 'dave.work@example.test' }, password: 'dave-password-123' } });
    assert.equal(legacy.status, 200, JSON.stringify(legacy.body));
    assert.equal(legacy.body.user_id, `@dave:${SERVER_NAME}`);
    assert.equal((await h.deps.bindings.findByLocalpart('dave'))?.opUsername, 'dave.work@example.test');
    const { browser, response } = await startAuthorization({ login_hint: `mxid:@dave:${SERVER_NAME}` });
    const form = signInPageOf(await response.text());
    assert.equal(form.username, 'dave');
    const { stoppedAt } = await follow(browser, await browser.get(form.ssoLinks[0] ?? ''), isOp);
    assert.equal(stoppedAt?.searchParams.get('login_hint'), 'dave.work@example.test');
  });

  test('mxid of another server: the authorization ends at the client with invalid_request, naming the server', async () => {
    const { stoppedAt } = await startAuthorization({ login_hint: 'mxid:@mallory:elsewhere.example' });
    assert.ok(stoppedAt && isClient(stoppedAt), 'redirected to the client');
    assert.equal(stoppedAt.searchParams.get('error'), 'invalid_request');
    assert.match(stoppedAt.searchParams.get('error_description') ?? '', /@mallory:elsewhere\.example.*not a user of example\.test/);
    assert.equal(stoppedAt.searchParams.get('code'), null);
  });

  test('malformed or unknown hints are ignored: no prefill, no hint at the OP, sign-in works', async () => {
    for (const hint of ['alice', 'email:alice@example.test', 'mxid:alice', 'mxid:@:example.test', 'mxid:@alice:', 'mxid:@al ice:example.test', `mxid:@${'a'.repeat(400)}:${SERVER_NAME}`]) {
      const { browser, response, stoppedAt } = await startAuthorization({ login_hint: hint });
      assert.equal(stoppedAt, undefined, `hint ${hint}`);
      assert.equal(response.status, 200, `hint ${hint}`);
      const form = signInPageOf(await response.text());
      assert.equal(form.username, '', `hint ${hint}`);
      const sso = new URL(form.ssoLinks[0] ?? '', h.url);
      assert.equal(sso.searchParams.get('login_hint'), null);
      const op = await follow(browser, await browser.get(sso), isOp);
      assert.equal(op.stoppedAt?.searchParams.get('login_hint'), null, `hint ${hint}`);
    }
  });
});

const CHROMIUM = '/usr/bin/chromium';
const chromiumSkip = existsSync(CHROMIUM) ? false : `${CHROMIUM} is not installed (apt-get install chromium)`;

describe('native sign-in in headless Chromium', { skip: chromiumSkip }, () => {
  test('login_hint prefills the form; the password form signs in under the page CSP and the code reaches matrix-js-sdk', async () => {
    const metadata = await discover(h.url);
    const clientId = await register(metadata);
    const url = await authorizationUrl(h.url, metadata, clientId, { login_hint: `mxid:@alice:${SERVER_NAME}` });
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic', '--no-first-run'] });
    try {
      const { page, violations } = await clientPage(browser);
      await page.goto(url.href);
      assert.equal(await page.inputValue('#username'), 'alice');
      await page.fill('#password', 'wrong');
      await page.click('#sign-in');
      assert.equal(await page.locator('#error').innerText(), 'Invalid username/password');
      await page.fill('#password', h.op.users.alice.password);
      await page.click('#sign-in');
      await page.waitForURL((at) => at.href.startsWith(REDIRECT_URI));
      assert.deepEqual(violations, []);
      const landing = new URL(page.url());
      const completed = await completeAuthorizationCodeGrant(landing.searchParams.get('code') ?? '', landing.searchParams.get('state') ?? '');
      assert.equal((await whoami(completed.tokenResponse.access_token)).body.user_id, `@alice:${SERVER_NAME}`);
    } finally {
      await browser.close();
    }
  });
});

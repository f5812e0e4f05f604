import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import * as client from 'openid-client';
import type { Browser, Page } from 'playwright-core';
import { chromiumMissing, launchChromium } from '../support/chromium-sso.js';
import { ProxyBrowser, locationOf } from '../support/proxy-browser.js';
import { HOMESERVER_SECRET, SERVER_NAME, startProxyHarness, type Harness } from '../support/proxy-harness.js';

/**
 * The device authorization grant (RFC 8628, MSC4341) on native_clients: serve, end to end over real HTTP: the
 * device is openid-client's own device-flow functions (discovery through the homeserver double's auth_metadata,
 * initiateDeviceAuthorization, pollDeviceAuthorizationGrant, refresh, revocation); the user is headless Chromium on
 * the proxy's code page, the in-process OP's login form and the proxy's consent page. The resulting token is a proxy
 * session: it works at the homeserver (double), introspects with its device, and is in the user's one session list.
 */

const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
const API_SCOPE = 'urn:matrix:client:api:*';
const signingKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();

const issuerOf = (h: Harness) => `${h.url}/_matrix-compat-proxy/oauth2`;
const newDeviceId = () => randomBytes(5).toString('hex').toUpperCase();
const deviceScope = (deviceId: string) => `openid ${API_SCOPE} urn:matrix:client:device:${deviceId}`;

const FIRST_PARTY_URI = 'https://app.first-party.test/';

function startServe(extra: { lifetime?: string; userCodeBurst?: number } = {}): Promise<Harness> {
  return startProxyHarness({
    configure: (config) => {
      config['native_clients'] = 'serve';
      config['oauth_server'] = {
        signing_key: signingKey,
        device_code_poll_interval: '1s',
        // A first-party app's address that device-only clients claim (they have no redirect URI to prove it).
        first_party_client_uris: [FIRST_PARTY_URI],
        ...(extra.lifetime === undefined ? {} : { device_code_lifetime: extra.lifetime }),
      };
      config['rate_limits'] = { ...(config['rate_limits'] ?? {}), device_user_code_per_ip: { burst: extra.userCodeBurst ?? 100, per_second: 0.01 } };
    },
  });
}

/** The homeserver's auth_metadata (what Synapse relays from the proxy), as a TV app discovers it. */
async function authMetadata(h: Harness): Promise<Record<string, any>> {
  const response = await h.request('GET', '/_matrix/client/v1/auth_metadata');
  assert.equal(response.status, 200);
  return response.body;
}

async function registerDeviceClient(h: Harness, metadata: Record<string, unknown> = {}): Promise<{ status: number; body: Record<string, any> }> {
  const response = await fetch(`${issuerOf(h)}/reg`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      client_name: 'Living Room TV',
      client_uri: 'https://tv.example.test/',
      application_type: 'native',
      grant_types: [DEVICE_GRANT, 'refresh_token'],
      token_endpoint_auth_method: 'none',
      ...metadata,
    }),
  });
  return { status: response.status, body: (await response.json()) as Record<string, any> };
}

/** openid-client configured for a freshly registered device-only client, from the homeserver's metadata. */
async function deviceClient(h: Harness): Promise<{ config: client.Configuration; clientId: string }> {
  const registered = await registerDeviceClient(h);
  assert.equal(registered.status, 201, JSON.stringify(registered.body));
  const clientId = String(registered.body['client_id']);
  const config = new client.Configuration((await authMetadata(h)) as client.ServerMetadata, clientId, undefined, client.None());
  client.allowInsecureRequests(config);
  return { config, clientId };
}

async function tokenPoll(h: Harness, clientId: string, deviceCode: string) {
  const response = await fetch(`${issuerOf(h)}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: DEVICE_GRANT, device_code: deviceCode, client_id: clientId }).toString(),
  });
  return { status: response.status, body: (await response.json()) as Record<string, any> };
}

const whoami = (h: Harness, token: string) => h.request('GET', '/_matrix/client/v3/account/whoami', { token });

/**
 * The user's part in Chromium: open verification_uri_complete (code prefilled), check and continue, confirm, sign
 * in at the OP, then allow (or cancel) on the consent page. Returns the last page's heading.
 */
async function userSignsIn(browser: Browser, h: Harness, url: string, options: { user?: 'alice' | 'bob'; consent?: 'allow' | 'deny'; via?: 'op' | 'password-form' } = {}): Promise<{ heading: string; page: Page }> {
  const user = h.op.users[options.user ?? 'alice'];
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(20_000);
  const violations: string[] = [];
  page.on('console', (message) => {
    if (/Content Security Policy/i.test(message.text())) violations.push(message.text());
  });
  await page.goto(url);
  await page.click('#continue');
  await page.waitForSelector('#user-code');
  await page.click('#confirm');
  // password_login is on in the harness: the sign-in page offers the OP (SSO bridge) and the proxy's password form.
  await page.waitForSelector('#password-form');
  if (options.via === 'password-form') {
    await page.fill('#username', user.username);
    await page.fill('#password', user.password);
    await page.click('#sign-in');
  } else {
    await page.click('a.sso');
    await page.waitForURL((at) => at.origin === new URL(h.op.issuer).origin && at.pathname.startsWith('/interaction/'));
    await page.fill('input[name="login"]', user.username);
    await page.fill('input[name="password"]', user.password);
    await page.click('#submit');
  }
  await page.waitForURL((at) => at.pathname.includes('/_matrix-compat-proxy/oauth2/interaction/'));
  assert.match(await page.locator('h1').innerText(), /Allow Living Room TV/);
  assert.equal(await page.locator('.mxid').innerText(), `@${user.username}:${SERVER_NAME}`);
  await page.click(options.consent === 'deny' ? '#deny' : '#allow');
  await page.waitForURL((at) => at.pathname.startsWith('/_matrix-compat-proxy/oauth2/device'));
  const heading = await page.locator('h1').innerText();
  assert.deepEqual(violations, [], 'no page broke its CSP');
  return { heading, page };
}

/**
 * The user's part without Chromium (a cookie-keeping fetch, each hop checked): code page, confirmation, the
 * Refresh-header hop to sign-in, the OP's login (the test OP's own browser), consent, and the done page.
 */
async function userSignsInByFetch(h: Harness, url: string, user = h.op.users.alice) {
  const browser = new ProxyBrowser(h.url);
  const opBrowser = h.op.browser();
  const xsrfIn = (page: string) => /name="xsrf" value="([^"]+)"/.exec(page)?.[1] ?? '';
  const entry = await (await browser.get(url)).text();
  const userCode = /id="user_code"[^>]* value="([^"]*)"/.exec(entry)?.[1] ?? '';
  const confirm = await (await browser.post(`${issuerOf(h)}/device`, { xsrf: xsrfIn(entry), user_code: userCode })).text();
  const onward = await browser.post(`${issuerOf(h)}/device`, { xsrf: xsrfIn(confirm), user_code: userCode, confirm: 'yes' });
  assert.equal(onward.status, 200);
  const refresh = /^0; url=(.+)$/.exec(onward.headers.get('refresh') ?? '')?.[1];
  assert.ok(refresh, 'the confirmation moves on with a Refresh header');
  const pages = [confirm];
  let response = await browser.get(refresh);
  for (let hop = 0; hop < 20; hop++) {
    if (response.status === 200) {
      const page = await response.text();
      pages.push(page);
      if (/id="done"/.test(page)) return { opBrowser, pages };
      // The sign-in page (password_login is on in the harness): through the OP, so that its session can log out.
      const sso = /<a class="button secondary sso" href="([^"]+)"/.exec(page)?.[1];
      if (sso !== undefined) {
        response = await browser.get(new URL(sso.replace(/&#(\d+);/g, (_, code: string) => String.fromCharCode(Number(code))), response.url));
        continue;
      }
      assert.match(page, /Allow (Living Room TV|Element)/, page);
      response = await browser.post(response.url, { decision: 'allow' });
      continue;
    }
    assert.ok([302, 303].includes(response.status), `unexpected ${response.status}: ${await response.text()}`);
    const next = locationOf(response);
    response = next.origin === new URL(h.op.issuer).origin ? await browser.get(await opBrowser.authorize(next, { login: user.username, password: user.password })) : await browser.get(next);
  }
  throw new Error('too many redirects');
}

describe('device authorization grant (RFC 8628) on native_clients: serve', () => {
  let h: Harness;
  before(async () => {
    h = await startServe();
  });
  after(async () => {
    await h.stop();
  });

  test("the homeserver's auth_metadata advertises the device endpoint and grant (MSC4341)", async () => {
    const metadata = await authMetadata(h);
    assert.equal(metadata['device_authorization_endpoint'], `${issuerOf(h)}/device/auth`);
    assert.ok((metadata['grant_types_supported'] as string[]).includes(DEVICE_GRANT));
    // The proxy's own discovery document at the issuer says the same (what Synapse reads in delegated mode).
    const atIssuer = (await (await fetch(`${issuerOf(h)}/.well-known/openid-configuration`)).json()) as Record<string, any>;
    assert.equal(atIssuer['device_authorization_endpoint'], metadata['device_authorization_endpoint']);
  });

  test('registration: a device-only client needs no redirect URI; code clients still do; mixed grants are checked', async () => {
    const deviceOnly = await registerDeviceClient(h);
    assert.equal(deviceOnly.status, 201, JSON.stringify(deviceOnly.body));
    assert.deepEqual(deviceOnly.body['grant_types'], [DEVICE_GRANT, 'refresh_token']);
    assert.deepEqual(deviceOnly.body['response_types'], []);
    // Both grants: the code grant's rules apply (redirect URIs on the client_uri host).
    const both = await registerDeviceClient(h, { grant_types: ['authorization_code', DEVICE_GRANT, 'refresh_token'], redirect_uris: ['test.example.tv:/cb'], response_types: ['code'] });
    assert.equal(both.status, 201, JSON.stringify(both.body));
    const bothWithoutRedirect = await registerDeviceClient(h, { grant_types: ['authorization_code', DEVICE_GRANT, 'refresh_token'] });
    assert.equal(bothWithoutRedirect.status, 400);
    assert.equal(bothWithoutRedirect.body['error'], 'invalid_redirect_uri');
    // No refresh grant (MSC4341: the server MUST issue a refresh token), or `code` without the code grant.
    assert.equal((await registerDeviceClient(h, { grant_types: [DEVICE_GRANT] })).body['error'], 'invalid_client_metadata');
    assert.equal((await registerDeviceClient(h, { response_types: ['code'] })).body['error'], 'invalid_client_metadata');
    // A foreign redirect URI is refused even where the grant does not use it.
    assert.equal((await registerDeviceClient(h, { redirect_uris: ['https://evil.example/cb'] })).body['error'], 'invalid_redirect_uri');
  });

  test('the device authorization request: codes, interval, and MSC2967 scope rules; code-only clients may not ask', async () => {
    const { config, clientId } = await deviceClient(h);
    const started = await client.initiateDeviceAuthorization(config, { scope: deviceScope(newDeviceId()) });
    assert.equal(started.verification_uri, `${issuerOf(h)}/device`);
    assert.match(started.user_code, /^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$/);
    assert.equal(started.verification_uri_complete, `${issuerOf(h)}/device?user_code=${started.user_code}`);
    assert.equal(started.interval, 1);
    assert.ok(started.expires_in > 500 && started.expires_in <= 600, String(started.expires_in));

    const ask = async (form: Record<string, string>) => {
      const response = await fetch(`${issuerOf(h)}/device/auth`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(form).toString() });
      return { status: response.status, body: (await response.json()) as Record<string, any> };
    };
    const twoDevices = await ask({ client_id: clientId, scope: `${API_SCOPE} urn:matrix:client:device:AAAAAAAAAA urn:matrix:client:device:BBBBBBBBBB` });
    assert.equal(twoDevices.status, 400);
    assert.equal(twoDevices.body['error'], 'invalid_scope');
    assert.equal((await ask({ client_id: clientId, scope: 'openid urn:matrix:client:device:AAAAAAAAAA' })).body['error'], 'invalid_scope');
    // A client registered for the code grant only.
    const codeClient = await fetch(`${issuerOf(h)}/reg`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ client_uri: 'https://app.example.test/', redirect_uris: ['https://app.example.test/cb'], grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], token_endpoint_auth_method: 'none' }),
    });
    const codeClientId = String(((await codeClient.json()) as Record<string, any>)['client_id']);
    const refused = await ask({ client_id: codeClientId, scope: API_SCOPE });
    assert.equal(refused.status, 400);
    // oidc-provider's answer (RFC 6749 §5.2 would also allow unauthorized_client).
    assert.equal(refused.body['error'], 'invalid_request');
    assert.match(String(refused.body['error_description']), /device_code is not allowed for this client/);
  });

  test('polling before the user acts: authorization_pending, and slow_down when faster than the interval (§3.5)', async () => {
    const { config, clientId } = await deviceClient(h);
    const started = await client.initiateDeviceAuthorization(config, { scope: deviceScope(newDeviceId()) });
    const first = await tokenPoll(h, clientId, started.device_code);
    assert.equal(first.status, 400);
    assert.equal(first.body['error'], 'authorization_pending');
    const tooSoon = await tokenPoll(h, clientId, started.device_code);
    assert.equal(tooSoon.status, 400);
    assert.equal(tooSoon.body['error'], 'slow_down');
    await new Promise((resolve) => setTimeout(resolve, 1100));
    assert.equal((await tokenPoll(h, clientId, started.device_code)).body['error'], 'authorization_pending');
    // Another client cannot poll this device code.
    const other = await deviceClient(h);
    assert.equal((await tokenPoll(h, other.clientId, started.device_code)).body['error'], 'invalid_grant');
  });

  test('a wrong code is refused on the page, which says so and asks again', async () => {
    const browser = new ProxyBrowser(h.url);
    const form = await browser.get(`${issuerOf(h)}/device`);
    assert.equal(form.status, 200);
    assert.match(String(form.headers.get('content-security-policy')), /form-action 'self'/);
    const xsrf = /name="xsrf" value="([^"]+)"/.exec(await form.text())?.[1] ?? '';
    assert.ok(xsrf);
    const wrong = await browser.post(`${issuerOf(h)}/device`, { xsrf, user_code: 'BBBB-BBBB' });
    assert.equal(wrong.status, 200);
    assert.match(await wrong.text(), /id="problem">This code is not valid/);
    // A wrong CSRF token in the same browser: refused, the form is shown again with a new token.
    const badToken = await browser.post(`${issuerOf(h)}/device`, { xsrf: 'x', user_code: 'BBBB-BBBB' });
    assert.equal(badToken.status, 400);
    assert.match(await badToken.text(), /id="problem">This form was not sent/);
    // Another site's form (no session cookie: it is SameSite=lax): sent back to a fresh form, nothing looked up.
    const stranger = new ProxyBrowser(h.url);
    const forged = await stranger.post(`${issuerOf(h)}/device`, { xsrf: xsrf, user_code: 'BBBB-BBBB' });
    assert.equal(forged.status, 303);
    const fresh = await stranger.get(String(forged.headers.get('location')));
    assert.equal(fresh.status, 200);
    assert.match(await fresh.text(), /id="problem">This form was not sent/);
    // Resuming a sign-in from a browser that never started one: back to the form, told so.
    const elsewhere = new ProxyBrowser(h.url);
    const resumed = await elsewhere.get(`${issuerOf(h)}/device/nosuchinteraction`);
    assert.equal(resumed.status, 303);
    assert.match(await (await elsewhere.get(String(resumed.headers.get('location')))).text(), /id="problem">This sign-in was started in another browser/);
  });

  test('a back-channel logout from the OP ends a device-grant session and its device (user driven by fetch)', async () => {
    const { config } = await deviceClient(h);
    const deviceId = newDeviceId();
    const started = await client.initiateDeviceAuthorization(config, { scope: deviceScope(deviceId) });
    const polling = client.pollDeviceAuthorizationGrant(config, started);
    const { opBrowser } = await userSignsInByFetch(h, started.verification_uri_complete ?? '', h.op.users.bob);
    const tokens = await polling;
    assert.equal((await whoami(h, tokens.access_token)).body.device_id, deviceId);
    await opBrowser.logout({ clientId: h.op.clientId });
    assert.equal(h.op.backchannelDeliveries.at(-1)?.ok, true);
    assert.equal((await whoami(h, tokens.access_token)).status, 401);
    assert.equal(h.homeserver.devices('bob').has(deviceId), false);
  });

  test("a device-only client naming a first-party app's address is not trusted: 'not verified', and consent is asked", async () => {
    const registered = await registerDeviceClient(h, { client_name: 'Element', client_uri: FIRST_PARTY_URI });
    assert.equal(registered.status, 201, JSON.stringify(registered.body));
    const config = new client.Configuration((await authMetadata(h)) as client.ServerMetadata, String(registered.body['client_id']), undefined, client.None());
    client.allowInsecureRequests(config);
    const deviceId = newDeviceId();
    const started = await client.initiateDeviceAuthorization(config, { scope: deviceScope(deviceId) });
    const polling = client.pollDeviceAuthorizationGrant(config, started);
    const { pages } = await userSignsInByFetch(h, started.verification_uri_complete ?? '');
    assert.match(pages[0] ?? '', /The app says it comes from <strong>app\.first-party\.test<\/strong> \(not verified/);
    const consent = pages.find((page) => /Allow Element/.test(page));
    assert.ok(consent, 'the consent page was shown although client_uri is a first-party address');
    assert.match(consent, /An app that says it is at <strong>app\.first-party\.test<\/strong>.*not verified/s);
    assert.equal((await whoami(h, (await polling).access_token)).body.device_id, deviceId, 'allowed by the user, it signs in');
  });

  test('cancelling on the confirmation page answers the device access_denied', async () => {
    const { config, clientId } = await deviceClient(h);
    const started = await client.initiateDeviceAuthorization(config, { scope: deviceScope(newDeviceId()) });
    const browser = new ProxyBrowser(h.url);
    const entry = await browser.get(started.verification_uri_complete ?? '');
    const xsrf = /name="xsrf" value="([^"]+)"/.exec(await entry.text())?.[1] ?? '';
    const confirm = await browser.post(`${issuerOf(h)}/device`, { xsrf, user_code: started.user_code.toLowerCase().replace('-', '') });
    const confirmPage = await confirm.text();
    assert.match(confirmPage, new RegExp(`id="user-code">${started.user_code}<`));
    assert.match(confirmPage, /Living Room TV/);
    const xsrf2 = /name="xsrf" value="([^"]+)"/.exec(confirmPage)?.[1] ?? '';
    const aborted = await browser.post(`${issuerOf(h)}/device`, { xsrf: xsrf2, user_code: started.user_code, abort: 'yes' });
    assert.match(await aborted.text(), /Signing in was cancelled/);
    const polled = await tokenPoll(h, clientId, started.device_code);
    assert.equal(polled.body['error'], 'access_denied');
    // The code is spent: typing it again says so.
    const again = await browser.post(`${issuerOf(h)}/device`, { xsrf: /name="xsrf" value="([^"]+)"/.exec(await (await browser.get(`${issuerOf(h)}/device`)).text())?.[1] ?? '', user_code: started.user_code });
    assert.match(await again.text(), /already used/);
  });

  describe('in headless Chromium', { skip: chromiumMissing() }, () => {
    let browser: Browser;
    before(async () => {
      browser = await launchChromium();
    });
    after(async () => {
      await browser.close();
    });

    test('sign-in on another device: code page, OP login, consent; the poll gets a proxy session for the device scope', async () => {
      const { config, clientId } = await deviceClient(h);
      const deviceId = newDeviceId();
      const started = await client.initiateDeviceAuthorization(config, { scope: deviceScope(deviceId) });
      const polling = client.pollDeviceAuthorizationGrant(config, started);
      const { heading } = await userSignsIn(browser, h, started.verification_uri_complete ?? '');
      assert.match(heading, /Living Room TV is signed in/);
      const tokens = await polling;
      assert.ok(tokens.refresh_token, 'MSC4341: a refresh token is issued');
      assert.equal(tokens.expires_in, Math.floor(h.config.sessions.refreshable_access_token_lifetime / 1000));

      const me = await whoami(h, tokens.access_token);
      assert.equal(me.status, 200, JSON.stringify(me.body));
      assert.equal(me.body.user_id, `@alice:${SERVER_NAME}`);
      assert.equal(me.body.device_id, deviceId);
      assert.ok(h.homeserver.devices('alice').has(deviceId), 'the device was created at the homeserver');

      // Introspection (Synapse's view) names the client and the device scope.
      const introspected = await fetch(`${h.homeserverFacingUrl}/oauth2/introspect`, {
        method: 'POST',
        headers: { authorization: `Bearer ${HOMESERVER_SECRET}`, 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ token: tokens.access_token }).toString(),
      });
      const answer = (await introspected.json()) as Record<string, unknown>;
      assert.equal(answer['active'], true);
      assert.equal(answer['client_id'], clientId);
      assert.equal(answer['device_id'], deviceId);

      // One session list: the same record kind as a code-flow or legacy session.
      const sessions = await Promise.all((await h.deps.sessions.idsOfUser('alice')).map((id) => h.deps.sessions.get(id)));
      assert.equal(sessions.find((session) => session?.deviceId === deviceId)?.oauthClientId, clientId);

      // The device code is single use.
      assert.equal((await tokenPoll(h, clientId, started.device_code)).body['error'], 'invalid_grant');

      // Refresh rotates (openid-client's refresh), then revocation ends the session at once.
      const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token ?? '');
      assert.notEqual(refreshed.access_token, tokens.access_token);
      assert.equal((await whoami(h, refreshed.access_token)).status, 200);
      await client.tokenRevocation(config, refreshed.access_token);
      assert.equal((await whoami(h, refreshed.access_token)).status, 401);
      assert.equal(h.homeserver.devices('alice').has(deviceId), false, 'revocation deleted the device');
    });

    test("signed in with the proxy's password form; /logout/all from a legacy client ends the device-grant session", async () => {
      const { config } = await deviceClient(h);
      const started = await client.initiateDeviceAuthorization(config, { scope: deviceScope(newDeviceId()) });
      const polling = client.pollDeviceAuthorizationGrant(config, started);
      await userSignsIn(browser, h, started.verification_uri_complete ?? '', { user: 'bob', via: 'password-form' });
      const tokens = await polling;
      const legacy = await h.passwordLogin('bob', h.op.users.bob.password);
      assert.equal(legacy.status, 200);
      assert.equal((await h.request('POST', '/_matrix/client/v3/logout/all', { token: legacy.body.access_token, body: {} })).status, 200);
      assert.equal((await whoami(h, tokens.access_token)).status, 401);
    });

    test('declining on the consent page answers the polling device access_denied, and no session exists', async () => {
      const { config } = await deviceClient(h);
      const deviceId = newDeviceId();
      const started = await client.initiateDeviceAuthorization(config, { scope: deviceScope(deviceId) });
      const polling = client.pollDeviceAuthorizationGrant(config, started).then(
        () => 'granted',
        (err: unknown) => (err as { error?: string }).error,
      );
      const { page } = await userSignsIn(browser, h, started.verification_uri_complete ?? '', { consent: 'deny' });
      assert.match(await page.locator('#problem').innerText(), /cancelled/);
      assert.equal(await polling, 'access_denied');
      assert.equal(h.homeserver.devices('alice').has(deviceId), false);
    });
  });
});

describe('device authorization grant: expiry and guessing', () => {
  let h: Harness;
  before(async () => {
    h = await startServe({ lifetime: '2s', userCodeBurst: 3 });
  });
  after(async () => {
    await h.stop();
  });

  test('an expired device code answers expired_token, and its user code page says expired', async () => {
    const { config, clientId } = await deviceClient(h);
    const started = await client.initiateDeviceAuthorization(config, { scope: deviceScope(newDeviceId()) });
    assert.equal(started.expires_in, 2);
    await new Promise((resolve) => setTimeout(resolve, 2500));
    const polled = await tokenPoll(h, clientId, started.device_code);
    assert.equal(polled.status, 400);
    assert.equal(polled.body['error'], 'expired_token');
    const browser = new ProxyBrowser(h.url);
    const xsrf = /name="xsrf" value="([^"]+)"/.exec(await (await browser.get(`${issuerOf(h)}/device`)).text())?.[1] ?? '';
    assert.match(await (await browser.post(`${issuerOf(h)}/device`, { xsrf, user_code: started.user_code })).text(), /This code has expired/);
  });

  test('typing codes is throttled per client address (RFC 8628 §5.1): 429 with Retry-After once the bucket is spent', async () => {
    const browser = new ProxyBrowser(h.url);
    let page = await (await browser.get(`${issuerOf(h)}/device`)).text();
    const statuses: number[] = [];
    let last: Response | undefined;
    for (let attempt = 0; attempt < 4; attempt++) {
      // Each re-rendered form carries a new CSRF token.
      const xsrf = /name="xsrf" value="([^"]+)"/.exec(page)?.[1] ?? '';
      last = await browser.post(`${issuerOf(h)}/device`, { xsrf, user_code: `BBBB-BBB${'BCDF'[attempt]}` });
      statuses.push(last.status);
      page = await last.text();
    }
    // The expiry test above spent one token of the burst of 3.
    assert.deepEqual(statuses, [200, 200, 429, 429]);
    assert.ok(Number(last?.headers.get('retry-after')) > 0);
    assert.match(page, /Too many/);
  });
});

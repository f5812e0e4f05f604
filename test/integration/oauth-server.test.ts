import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chromium } from 'playwright-core';
import { completeAuthorizationCodeGrant, createClient, generateOidcAuthorizationUrl, registerOidcClient } from 'matrix-js-sdk';
import { ProxyBrowser, locationOf } from '../support/proxy-browser.js';
// Also installs the Storage and window stand-ins matrix-js-sdk's OIDC helpers need under Node.
import { CLIENT_URI, clientPage, codeVerifierOf, REDIRECT_URI } from '../support/native-client.js';
import { HOMESERVER_SECRET, SERVER_NAME, startProxyHarness, type Harness } from '../support/proxy-harness.js';

/**
 * native_clients: serve, end to end over real HTTP with matrix-js-sdk's own OAuth helpers: discovery through the
 * homeserver (double)'s auth_metadata, which Synapse relays from the proxy; MSC2966 registration; the authorization
 * URL; sign-in at the in-process OP through the SSO bridge; the consent page; the code exchange; then the token at
 * the homeserver, refresh rotation, revocation and /logout/all.
 *
 * matrix-js-sdk keeps its authorization state in sessionStorage, which Node lacks: test/support/native-client.ts
 * installs a Map-backed Storage (the flow's browser hops are driven by ProxyBrowser, a cookie-keeping fetch).
 */

const signingKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();

let h: Harness;
before(async () => {
  h = await startProxyHarness({
    configure: (config) => {
      config['native_clients'] = 'serve';
      config['oauth_server'] = { signing_key: signingKey };
    },
  });
});
after(async () => {
  await h.stop();
});

const issuer = () => `${h.url}/_matrix-compat-proxy/oauth2`;

async function discover() {
  const anonymous = createClient({ baseUrl: h.url });
  const metadata = await anonymous.getAuthMetadata();
  anonymous.stopClient();
  return metadata;
}

async function register(metadata: Awaited<ReturnType<typeof discover>>): Promise<string> {
  return registerOidcClient(metadata, {
    clientName: 'Test App',
    clientUri: CLIENT_URI,
    applicationType: 'web',
    redirectUris: [REDIRECT_URI],
    contacts: ['admin@app.example.test'],
    tosUri: 'https://app.example.test/tos',
    policyUri: 'https://app.example.test/policy',
  });
}

/** The browser's part: /auth → interaction → SSO bridge → OP login → back → consent → redirect with the code. */
async function authorizeInBrowser(authorizationUrl: string, user: { username: string; password: string }, decision = 'allow', beforeSsoDone?: () => void) {
  const browser = new ProxyBrowser(h.url);
  const opBrowser = h.op.browser();
  const opRequests: URL[] = [];
  let response = await browser.get(authorizationUrl);
  let consentPage = '';
  for (let hop = 0; hop < 20; hop++) {
    if (response.status === 200) {
      const page = await response.text();
      // password_login is on in the harness: the sign-in page offers the OP (SSO bridge) and the password form.
      const sso = /<a class="button secondary sso" href="([^"]+)"/.exec(page)?.[1];
      if (sso !== undefined) {
        response = await browser.get(new URL(sso.replace(/&#(\d+);/g, (_, code: string) => String.fromCharCode(Number(code))), response.url));
        continue;
      }
      assert.match(page, /Allow Test App/, page);
      consentPage = page;
      response = await browser.post(response.url, { decision });
      continue;
    }
    assert.ok([302, 303].includes(response.status), `unexpected ${response.status}: ${await response.text()}`);
    const next = locationOf(response);
    if (next.href.startsWith(REDIRECT_URI)) {
      return { code: next.searchParams.get('code') ?? '', state: next.searchParams.get('state') ?? '', error: next.searchParams.get('error'), consentPage, opBrowser, opRequests };
    }
    if (next.origin === new URL(h.op.issuer).origin) {
      opRequests.push(next);
      response = await browser.get(await opBrowser.authorize(next, { login: user.username, password: user.password }));
      continue;
    }
    if (next.pathname.endsWith('/sso-done')) beforeSsoDone?.();
    response = await browser.get(next);
  }
  throw new Error('too many redirects');
}

async function signInNatively(user = h.op.users.alice, prompt?: string) {
  const metadata = await discover();
  const clientId = await register(metadata);
  const nonce = randomBytes(8).toString('hex');
  const url = await generateOidcAuthorizationUrl({ metadata, clientId, homeserverUrl: h.url, redirectUri: REDIRECT_URI, nonce, ...(prompt === undefined ? {} : { prompt }) });
  const { code, state, error, consentPage, opBrowser, opRequests } = await authorizeInBrowser(url, user);
  assert.equal(error, null);
  const completed = await completeAuthorizationCodeGrant(code, state);
  const deviceId = new URL(url).searchParams.get('scope')?.match(/device:(\S+)/)?.[1];
  return { metadata, clientId, url, completed, deviceId, consentPage, opBrowser, opRequests };
}

const whoami = (token: string) => h.request('GET', '/_matrix/client/v3/account/whoami', { token });

async function tokenRequest(form: Record<string, string>) {
  const response = await fetch(`${issuer()}/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(form).toString() });
  return { status: response.status, body: (await response.json()) as Record<string, any> };
}

/** bob authorizes; the code exchange is held at the homeserver's upsert_device while the OP logs that sign-in out. */
async function exchangeWhileOpLogsOut(url: string, clientId: string) {
  const { code, state, opBrowser } = await authorizeInBrowser(url, h.op.users.bob);
  const held = h.homeserver.holdProvisioning('upsert_device');
  const exchanging = tokenRequest({ grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, client_id: clientId, code_verifier: codeVerifierOf(state) });
  await held.reached;
  await opBrowser.logout({ clientId: h.op.clientId });
  assert.equal(h.op.backchannelDeliveries.at(-1)?.ok, true);
  held.release();
  return exchanging;
}

/** The exchange was refused because the OP logged the sign-in out, and bob has no session on that device. */
async function assertRefusedAsLoggedOut(exchange: Awaited<ReturnType<typeof tokenRequest>>, deviceId: string) {
  assert.equal(exchange.status, 400, JSON.stringify(exchange.body));
  assert.equal(exchange.body['error'], 'invalid_grant');
  assert.match(String(exchange.body['error_description']), /ended at the identity provider/);
  const sessions = await Promise.all((await h.deps.sessions.idsOfUser('bob')).map((id) => h.deps.sessions.get(id)));
  assert.equal(sessions.some((session) => session?.deviceId === deviceId), false);
}

describe('native_clients: serve', () => {
  test("the homeserver's auth_metadata describes this proxy's OAuth server", async () => {
    const metadata = await discover();
    assert.equal(metadata.issuer, issuer());
    assert.equal(metadata.registration_endpoint, `${issuer()}/reg`);
    assert.equal(metadata.revocation_endpoint, `${issuer()}/revoke`);
    assert.deepEqual(metadata.code_challenge_methods_supported, ['S256']);
    assert.ok((metadata.prompt_values_supported as string[] | undefined)?.includes('create'));
    assert.equal(metadata.account_management_uri, `${h.url}/_matrix-compat-proxy/account`);
    assert.ok(Array.isArray(metadata.account_management_actions_supported));
    // The proxy answers the discovery routes itself (the same document), so no homeserver mode depends on Synapse's relay.
    const seen = h.homeserver.requestsSeen.length;
    const issuerDoc = await h.request('GET', '/_matrix/client/unstable/org.matrix.msc2965/auth_issuer');
    assert.deepEqual(issuerDoc.body, { issuer: issuer() });
    assert.equal((await h.request('GET', '/_matrix/client/v1/auth_metadata')).body.issuer, issuer());
    assert.equal(h.homeserver.requestsSeen.length, seen);
    // Client discovery names the same issuer (MSC2965's well-known entry), not the homeserver's.
    assert.equal((await h.request('GET', '/.well-known/matrix/client')).body['org.matrix.msc2965.authentication'].issuer, issuer());
  });

  test('matrix-js-sdk: register, authorize, sign in at the OP, consent, exchange the code; the token works at the homeserver with its device', async () => {
    const { completed, deviceId, consentPage } = await signInNatively();
    assert.ok(deviceId);
    assert.match(consentPage, /app\.example\.test/);
    // The ID token's sub is the sign-in's opaque id (oidc-provider's accountId); Matrix clients learn the user from whoami.
    assert.match(completed.idTokenClaims.sub, /^[A-Za-z0-9_-]{32}$/);
    assert.equal(completed.oidcClientSettings.issuer, issuer());
    const me = await whoami(completed.tokenResponse.access_token);
    assert.equal(me.status, 200, JSON.stringify(me.body));
    assert.equal(me.body.user_id, `@alice:${SERVER_NAME}`);
    assert.equal(me.body.device_id, deviceId);
    assert.ok(h.homeserver.devices('alice').has(deviceId), 'the device exists at the homeserver');
  });

  test("introspection (Synapse's view) names the OAuth client and the device scope of a native token", async () => {
    const { clientId, completed, deviceId } = await signInNatively();
    const response = await fetch(`${h.homeserverFacingUrl}/oauth2/introspect`, {
      method: 'POST',
      headers: { authorization: `Bearer ${HOMESERVER_SECRET}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: completed.tokenResponse.access_token }).toString(),
    });
    const answer = (await response.json()) as Record<string, unknown>;
    assert.equal(answer['active'], true);
    assert.equal(answer['client_id'], clientId);
    assert.equal(answer['device_id'], deviceId);
    assert.ok(String(answer['scope']).split(' ').includes(`urn:matrix:client:device:${deviceId}`));
  });

  test('refresh rotates; the old refresh token is refused once the new pair is used; revocation ends the session at once', async () => {
    const { clientId, completed } = await signInNatively(h.op.users.bob);
    const first = completed.tokenResponse;
    assert.ok(first.refresh_token);
    const refreshed = await tokenRequest({ grant_type: 'refresh_token', refresh_token: first.refresh_token, client_id: clientId });
    assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
    assert.notEqual(refreshed.body['access_token'], first.access_token);
    assert.notEqual(refreshed.body['refresh_token'], first.refresh_token);
    assert.equal((await whoami(refreshed.body['access_token'])).status, 200);
    // Another client may not use it.
    const foreign = await tokenRequest({ grant_type: 'refresh_token', refresh_token: refreshed.body['refresh_token'], client_id: await register(await discover()) });
    assert.equal(foreign.status, 400);
    assert.equal(foreign.body['error'], 'invalid_grant');

    const revoked = await fetch(`${issuer()}/revoke`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: refreshed.body['access_token'], client_id: clientId }).toString(),
    });
    assert.equal(revoked.status, 200);
    const after = await whoami(refreshed.body['access_token']);
    assert.equal(after.status, 401);
    const again = await tokenRequest({ grant_type: 'refresh_token', refresh_token: refreshed.body['refresh_token'], client_id: clientId });
    assert.equal(again.status, 400);
  });

  test('/logout/all from a legacy client ends the native session too (one session list)', async () => {
    const { completed } = await signInNatively();
    const legacy = await h.passwordLogin('alice', h.op.users.alice.password);
    assert.equal(legacy.status, 200);
    const listed = await h.deps.sessions.idsOfUser('alice');
    assert.ok(listed.length >= 2);
    const out = await h.request('POST', '/_matrix/client/v3/logout/all', { token: legacy.body.access_token, body: {} });
    assert.equal(out.status, 200);
    assert.equal((await whoami(completed.tokenResponse.access_token)).status, 401);
  });

  test('a back-channel logout from the OP ends the native session and its device', async () => {
    const { completed, deviceId, opBrowser } = await signInNatively(h.op.users.bob);
    assert.equal((await whoami(completed.tokenResponse.access_token)).status, 200);
    await opBrowser.logout({ clientId: h.op.clientId });
    assert.equal(h.op.backchannelDeliveries.at(-1)?.ok, true);
    assert.equal((await whoami(completed.tokenResponse.access_token)).status, 401);
    assert.equal(h.homeserver.devices('bob').has(deviceId ?? ''), false);
  });

  test('a back-channel logout between the sign-in and the code exchange: the exchange is refused, no session is left', async () => {
    const metadata = await discover();
    const clientId = await register(metadata);
    const url = await generateOidcAuthorizationUrl({ metadata, clientId, homeserverUrl: h.url, redirectUri: REDIRECT_URI, nonce: 'n' });
    const { code, state, opBrowser } = await authorizeInBrowser(url, h.op.users.bob);
    await opBrowser.logout({ clientId: h.op.clientId });
    assert.equal(h.op.backchannelDeliveries.at(-1)?.ok, true);
    const deviceId = new URL(url).searchParams.get('scope')?.match(/device:(\S+)/)?.[1] ?? '';
    const exchange = await tokenRequest({ grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, client_id: clientId, code_verifier: codeVerifierOf(state) });
    await assertRefusedAsLoggedOut(exchange, deviceId);
    // Refused before the device was made.
    assert.equal(h.homeserver.devices('bob').has(deviceId), false);
  });

  test('a back-channel logout while the code exchange waits for the device: refused, the client-chosen device stays', async () => {
    const metadata = await discover();
    const clientId = await register(metadata);
    const url = await generateOidcAuthorizationUrl({ metadata, clientId, homeserverUrl: h.url, redirectUri: REDIRECT_URI, nonce: 'n' });
    const deviceId = new URL(url).searchParams.get('scope')?.match(/device:(\S+)/)?.[1] ?? '';
    const exchange = await exchangeWhileOpLogsOut(url, clientId);
    await assertRefusedAsLoggedOut(exchange, deviceId);
    // The device id is the client's (MSC2967): it may be one the client used before, with its keys, so it stays.
    assert.equal(h.homeserver.devices('bob').has(deviceId), true);
  });

  test('an account deactivated between the SSO sign-in and the end of the OAuth login step gets no sign-in (as m.login.token)', async () => {
    const metadata = await discover();
    const clientId = await register(metadata);
    const url = await generateOidcAuthorizationUrl({ metadata, clientId, homeserverUrl: h.url, redirectUri: REDIRECT_URI, nonce: 'n' });
    const bob = h.homeserver.users.get('bob');
    assert.ok(bob);
    try {
      await assert.rejects(
        authorizeInBrowser(url, h.op.users.bob, 'allow', () => {
          bob.deactivated = true;
        }),
        /unexpected 403/,
      );
    } finally {
      bob.deactivated = false;
    }
  });

  test('a back-channel logout while the exchange waits for a device whose id the proxy made up: refused, that device removed', async () => {
    const metadata = await discover();
    const clientId = await register(metadata);
    const url = new URL(await generateOidcAuthorizationUrl({ metadata, clientId, homeserverUrl: h.url, redirectUri: REDIRECT_URI, nonce: 'n' }));
    // No device scope: the proxy allocates the device id at the exchange (MSC2967 lets the client leave it out).
    url.searchParams.set('scope', (url.searchParams.get('scope') ?? '').split(' ').filter((scope) => !scope.includes(':device:')).join(' '));
    const before = new Set(h.homeserver.devices('bob').keys());
    const exchange = await exchangeWhileOpLogsOut(url.href, clientId);
    assert.equal(exchange.status, 400, JSON.stringify(exchange.body));
    assert.equal(exchange.body['error'], 'invalid_grant');
    // The device made for this exchange is gone again; no other device of bob's was touched.
    assert.deepEqual(new Set(h.homeserver.devices('bob').keys()), before);
  });

  // The code exchange makes the checks m.login.token makes: between consent and exchange (seconds for a browser, up to
  // the device code's lifetime for a device polling) the account may have been deactivated or its binding removed.
  for (const change of ['deactivated', 'binding removed'] as const) {
    test(`an account ${change} between consent and the code exchange: the exchange is refused, no session is left`, async () => {
      const metadata = await discover();
      const clientId = await register(metadata);
      const url = await generateOidcAuthorizationUrl({ metadata, clientId, homeserverUrl: h.url, redirectUri: REDIRECT_URI, nonce: 'n' });
      const { code, state } = await authorizeInBrowser(url, h.op.users.bob);
      const bob = h.homeserver.users.get('bob');
      assert.ok(bob);
      const binding = await h.deps.bindings.findByLocalpart('bob');
      assert.ok(binding);
      const before = new Set(await h.deps.sessions.idsOfUser('bob'));
      try {
        if (change === 'deactivated') bob.deactivated = true;
        else await h.deps.bindings.remove(binding.issuer, binding.sub);
        const exchange = await tokenRequest({ grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, client_id: clientId, code_verifier: codeVerifierOf(state) });
        assert.equal(exchange.status, 400, JSON.stringify(exchange.body));
        assert.equal(exchange.body['error'], 'invalid_grant');
        assert.match(String(exchange.body['error_description']), change === 'deactivated' ? /deactivated/ : /account changed/);
        assert.equal(exchange.body['access_token'], undefined);
        assert.deepEqual(new Set(await h.deps.sessions.idsOfUser('bob')), before);
        // Refused before any device was made.
        const deviceId = new URL(url).searchParams.get('scope')?.match(/device:(\S+)/)?.[1] ?? '';
        assert.notEqual(deviceId, '');
        assert.equal(h.homeserver.devices('bob').has(deviceId), false);
      } finally {
        bob.deactivated = false;
        if ((await h.deps.bindings.findByLocalpart('bob')) === undefined) {
          const { createdAt: _createdAt, ...input } = binding;
          assert.equal((await h.deps.bindings.claim(input)).ok, true);
        }
      }
    });
  }

  // The exchange runs after oidc-provider's own error handling: a failure there is answered in RFC 6749 §5.2 shape
  // by the proxy, never as the homeserver's own status, and oidc-provider's tokens of the exchange never stay.
  for (const status of [503, 403]) {
    test(`the homeserver failing (${status}) at the code exchange: 503 temporarily_unavailable as JSON, no token kept`, async () => {
      const metadata = await discover();
      const clientId = await register(metadata);
      const url = await generateOidcAuthorizationUrl({ metadata, clientId, homeserverUrl: h.url, redirectUri: REDIRECT_URI, nonce: 'n' });
      const { code, state } = await authorizeInBrowser(url, h.op.users.bob);
      assert.equal(await h.deps.store.hasKeyWithPrefix('oauth:AccessToken:'), false);
      // Enough failures for every retry of the adapter.
      h.homeserver.failProvisioning('query_user', status, 20);
      try {
        const response = await fetch(`${issuer()}/token`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, client_id: clientId, code_verifier: codeVerifierOf(state) }).toString(),
        });
        assert.equal(response.status, 503);
        assert.match(response.headers.get('content-type') ?? '', /application\/json/);
        assert.equal(response.headers.get('cache-control'), 'no-store');
        const body = (await response.json()) as Record<string, unknown>;
        assert.equal(body['error'], 'temporarily_unavailable');
        assert.equal(body['access_token'], undefined);
      } finally {
        h.homeserver.failProvisioning('query_user', 200, 0);
      }
      assert.equal(await h.deps.store.hasKeyWithPrefix('oauth:AccessToken:'), false);
      assert.equal(await h.deps.store.hasKeyWithPrefix('oauth:RefreshToken:'), false);
    });
  }

  test("native sessions are in the user's one session list (what the admin API and /logout/all read)", async () => {
    const { clientId, deviceId } = await signInNatively();
    const sessions = await Promise.all((await h.deps.sessions.idsOfUser('alice')).map((id) => h.deps.sessions.get(id)));
    const native = sessions.find((session) => session?.deviceId === deviceId);
    assert.equal(native?.oauthClientId, clientId);
    assert.equal(native?.origin.kind, 'sso');
  });

  test('prompt=create sends the browser to the OP with prompt=create (registration)', async () => {
    const metadata = await discover();
    const clientId = await register(metadata);
    const url = await generateOidcAuthorizationUrl({ metadata, clientId, homeserverUrl: h.url, redirectUri: REDIRECT_URI, nonce: 'n', prompt: 'create' });
    const browser = new ProxyBrowser(h.url);
    let next = new URL(url);
    for (let hop = 0; hop < 6 && next.origin !== new URL(h.op.issuer).origin; hop++) next = locationOf(await browser.get(next));
    assert.equal(next.origin, new URL(h.op.issuer).origin);
    assert.equal(next.searchParams.get('prompt'), 'create');
  });

  test('declining consent sends access_denied to the client, no session', async () => {
    const metadata = await discover();
    const clientId = await register(metadata);
    const url = await generateOidcAuthorizationUrl({ metadata, clientId, homeserverUrl: h.url, redirectUri: REDIRECT_URI, nonce: 'n' });
    const { error, code } = await authorizeInBrowser(url, h.op.users.alice, 'deny');
    assert.equal(error, 'access_denied');
    assert.equal(code, '');
  });

  test('a code is single use; a wrong PKCE verifier is refused', async () => {
    const metadata = await discover();
    const clientId = await register(metadata);
    const url = await generateOidcAuthorizationUrl({ metadata, clientId, homeserverUrl: h.url, redirectUri: REDIRECT_URI, nonce: 'n' });
    const { code } = await authorizeInBrowser(url, h.op.users.alice);
    const wrong = await tokenRequest({ grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, client_id: clientId, code_verifier: 'x'.repeat(43) });
    assert.equal(wrong.status, 400);
    assert.equal(wrong.body['error'], 'invalid_grant');
  });

  test('registration with a redirect URI off the client_uri host is refused (MSC2966)', async () => {
    const response = await fetch(`${issuer()}/reg`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ client_uri: CLIENT_URI, redirect_uris: ['https://evil.example/cb'], response_types: ['code'], grant_types: ['authorization_code', 'refresh_token'], token_endpoint_auth_method: 'none' }),
    });
    assert.equal(response.status, 400);
    assert.equal(((await response.json()) as { error: string }).error, 'invalid_redirect_uri');
  });

  test('an authorization request with two device scopes is refused', async () => {
    const metadata = await discover();
    const clientId = await register(metadata);
    const url = new URL(`${issuer()}/auth`);
    url.search = new URLSearchParams({
      client_id: clientId,
      response_type: 'code',
      redirect_uri: REDIRECT_URI,
      scope: 'openid urn:matrix:client:api:* urn:matrix:client:device:AAAAAAAAAA urn:matrix:client:device:BBBBBBBBBB',
      state: 'x',
      code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
      code_challenge_method: 'S256',
    }).toString();
    const response = await fetch(url, { redirect: 'manual' });
    assert.equal(response.status, 400);
    assert.match(await response.text(), /invalid_scope/);
  });
});

const CHROMIUM = '/usr/bin/chromium';
const chromiumSkip = existsSync(CHROMIUM) ? false : `${CHROMIUM} is not installed (apt-get install chromium)`;

describe('native_clients: serve in headless Chromium', { skip: chromiumSkip }, () => {
  test("the browser's part in Chromium: OP login form, consent page (CSP lets its form reach the client), code back to matrix-js-sdk", async () => {
    const metadata = await discover();
    const clientId = await register(metadata);
    const url = await generateOidcAuthorizationUrl({ metadata, clientId, homeserverUrl: h.url, redirectUri: REDIRECT_URI, nonce: 'chromium' });
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic', '--no-first-run'] });
    try {
      const { page, violations } = await clientPage(browser);
      await page.goto(url);
      await page.click('a.sso');
      await page.waitForURL((at) => at.origin === new URL(h.op.issuer).origin && at.pathname.startsWith('/interaction/'));
      await page.fill('input[name="login"]', 'alice');
      await page.fill('input[name="password"]', h.op.users.alice.password);
      await page.click('#submit');
      await page.waitForURL((at) => at.pathname.includes('/_matrix-compat-proxy/oauth2/interaction/'));
      assert.match(await page.locator('h1').innerText(), /Allow Test App/);
      assert.equal(await page.locator('.mxid').innerText(), `@alice:${SERVER_NAME}`);
      await page.click('#allow');
      await page.waitForURL((at) => at.href.startsWith(REDIRECT_URI));
      assert.deepEqual(violations, [], 'the consent form redirected to the client under the page CSP');
      const landing = new URL(page.url());
      const completed = await completeAuthorizationCodeGrant(landing.searchParams.get('code') ?? '', landing.searchParams.get('state') ?? '');
      const me = await whoami(completed.tokenResponse.access_token);
      assert.equal(me.status, 200);
      assert.equal(me.body.user_id, `@alice:${SERVER_NAME}`);
    } finally {
      await browser.close();
    }
  });
});

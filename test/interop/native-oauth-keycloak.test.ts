import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { completeAuthorizationCodeGrant, createClient, generateOidcAuthorizationUrl, registerOidcClient } from 'matrix-js-sdk';
import * as openidClient from 'openid-client';
import { chromiumMissing, launchChromium } from '../support/chromium-sso.js';
import { KEYCLOAK_REALM, startKeycloak, type RunningKeycloak } from '../support/keycloak.js';
import { INTEROP_SERVER_NAME, interopSkipReason, startInteropStack, type InteropStack } from '../support/interop-stack.js';
import { ProxyBrowser, locationOf } from '../support/proxy-browser.js';
import { REDIRECT_URI, signInPageOf } from '../support/native-client.js';

/**
 * native_clients: serve on real Synapse (delegated auth at the proxy) and real Keycloak — with NO dynamic client
 * registration and NO Matrix scopes at Keycloak: the proxy is the homeserver's OAuth server and Keycloak only signs
 * the user in (the proxy's own confidential client, through the SSO bridge). matrix-js-sdk's OAuth helpers drive
 * the client side; the browser hops are a cookie-keeping fetch (ProxyBrowser for the proxy, a jar for Keycloak).
 */

const skip = interopSkipReason();

// One Keycloak for both stacks of this file (serve, then hide).
let keycloak: Promise<RunningKeycloak> | undefined;
const sharedKeycloak = (): Promise<RunningKeycloak> => (keycloak ??= startKeycloak());
after(async () => {
  if (keycloak !== undefined) await (await keycloak).stop();
});

describe('native OAuth clients through the proxy on Synapse + Keycloak', { skip }, () => {
  let stack: InteropStack;
  before(async () => {
    const signingKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
    stack = await startInteropStack({
      keycloak: sharedKeycloak(),
      backchannelLogout: true,
      offlineAccess: false,
      configure: (config) => {
        config['native_clients'] = 'serve';
        config['oauth_server'] = { signing_key: signingKey, device_code_poll_interval: '1s' };
      },
    });
  });
  after(async () => {
    await stack?.stop();
  });

  const issuer = () => `${stack.url}/_matrix-compat-proxy/oauth2`;
  const whoami = (token: string) => stack.request('GET', '/_matrix/client/v3/account/whoami', { token });

  async function discoverAndRegister() {
    const anonymous = createClient({ baseUrl: stack.url });
    const metadata = await anonymous.getAuthMetadata();
    anonymous.stopClient();
    const clientId = await registerOidcClient(metadata, {
      clientName: 'Interop App',
      clientUri: 'https://app.example.test/',
      applicationType: 'web',
      redirectUris: [REDIRECT_URI],
      contacts: ['admin@app.example.test'],
      tosUri: 'https://app.example.test/tos',
      policyUri: 'https://app.example.test/policy',
    });
    return { metadata, clientId };
  }

  /**
   * `via`: the sign-in page's "Sign in with <OP>" (Keycloak's own login form) or the proxy's password form (the
   * password checked at Keycloak with the password grant). `loginHint`: MSC4198, appended as an MSC4198 client would.
   */
  async function signIn(user: { username: string; password: string }, options: { via?: 'sso' | 'password'; loginHint?: string } = {}) {
    const { metadata, clientId } = await discoverAndRegister();
    const generated = new URL(await generateOidcAuthorizationUrl({ metadata, clientId, homeserverUrl: stack.url, redirectUri: REDIRECT_URI, nonce: 'interop' }));
    if (options.loginHint !== undefined) generated.searchParams.set('login_hint', options.loginHint);
    const url = generated.href;
    const keycloakPages: string[] = [];
    const deviceId = /device:(\S+)/.exec(new URL(url).searchParams.get('scope') ?? '')?.[1];
    const browser = new ProxyBrowser(stack.url);
    const keycloakCookies = new Map<string, string>();
    const keycloakFetch = async (target: URL | string, init: RequestInit = {}) => {
      const response = await fetch(target, { ...init, redirect: 'manual', headers: { ...(init.headers as Record<string, string>), cookie: [...keycloakCookies].map(([k, v]) => `${k}=${v}`).join('; ') } });
      for (const line of response.headers.getSetCookie()) {
        const [pair = ''] = line.split(';');
        const equals = pair.indexOf('=');
        if (equals > 0) keycloakCookies.set(pair.slice(0, equals).trim(), pair.slice(equals + 1).trim());
      }
      return response;
    };
    let response = await browser.get(url);
    for (let hop = 0; hop < 20; hop++) {
      if (response.status === 200 && new URL(response.url).origin === new URL(stack.url).origin) {
        const page = await response.text();
        if (page.includes('id="password-form"')) {
          const signInPage = signInPageOf(page);
          response =
            options.via === 'password'
              ? await browser.post(signInPage.action, { csrf_token: signInPage.csrfToken, username: user.username, password: user.password })
              : await browser.get(new URL(signInPage.ssoLinks[0] ?? '', stack.url));
          continue;
        }
        assert.match(page, /Allow Interop App/, page.slice(0, 500));
        response = await browser.post(response.url, { decision: 'allow' });
        continue;
      }
      assert.ok([302, 303].includes(response.status), `unexpected ${response.status}: ${(await response.text()).slice(0, 500)}`);
      const next = locationOf(response);
      if (next.href.startsWith(REDIRECT_URI)) {
        const completed = await completeAuthorizationCodeGrant(next.searchParams.get('code') ?? '', next.searchParams.get('state') ?? '');
        return { clientId, deviceId, completed, keycloakPages };
      }
      if (next.origin === new URL(stack.keycloak.url).origin) {
        const form = await keycloakFetch(next);
        const page = await form.text();
        keycloakPages.push(page);
        const action = /<form[^>]*id="kc-form-login"[^>]*action="([^"]+)"/.exec(page)?.[1]?.replaceAll('&amp;', '&');
        assert.ok(action, `Keycloak shows its login form: ${page.slice(0, 300)}`);
        const signedIn = await keycloakFetch(action, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: new URLSearchParams({ username: user.username, password: user.password, credentialId: '' }).toString(),
        });
        assert.equal(signedIn.status, 302);
        response = await browser.get(locationOf(signedIn));
        continue;
      }
      response = await browser.get(next);
    }
    throw new Error('too many redirects');
  }

  const token = (form: Record<string, string>) =>
    fetch(`${issuer()}/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(form).toString() }).then(
      async (response) => ({ status: response.status, body: (await response.json()) as Record<string, any> }),
    );
  const revoke = (value: string, clientId: string) =>
    fetch(`${issuer()}/revoke`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ token: value, client_id: clientId }).toString() });

  test("Synapse's auth_metadata names the proxy's OAuth server", async () => {
    const anonymous = createClient({ baseUrl: stack.url });
    const metadata = await anonymous.getAuthMetadata();
    anonymous.stopClient();
    assert.equal(metadata.issuer, issuer());
    assert.equal(metadata.registration_endpoint, `${issuer()}/reg`);
  });

  test('sign-in at Keycloak; the token works at Synapse with its device; refresh rotates; revocation kills it at once', async () => {
    const { clientId, deviceId, completed } = await signIn(KEYCLOAK_REALM.users.alice);
    const me = await whoami(completed.tokenResponse.access_token);
    assert.equal(me.status, 200, JSON.stringify(me.body));
    assert.equal(me.body['user_id'], `@alice:${INTEROP_SERVER_NAME}`);
    assert.equal(me.body['device_id'], deviceId);

    const refreshed = await token({ grant_type: 'refresh_token', refresh_token: completed.tokenResponse.refresh_token ?? '', client_id: clientId });
    assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
    assert.notEqual(refreshed.body['refresh_token'], completed.tokenResponse.refresh_token);
    assert.equal((await whoami(refreshed.body['access_token'])).status, 200);

    // Synapse has the new token in its 2-minute introspection cache: revocation must beat it (device deleted first).
    assert.equal((await revoke(refreshed.body['access_token'], clientId)).status, 200);
    assert.equal((await whoami(refreshed.body['access_token'])).status, 401);
  });

  test("the proxy's password form (checked at Keycloak with the password grant) signs in; login_hint prefills it", async () => {
    const { deviceId, completed, keycloakPages } = await signIn(KEYCLOAK_REALM.users.bob, { via: 'password', loginHint: `mxid:@bob:${INTEROP_SERVER_NAME}` });
    assert.deepEqual(keycloakPages, [], "Keycloak's login page was never shown");
    const me = await whoami(completed.tokenResponse.access_token);
    assert.equal(me.status, 200, JSON.stringify(me.body));
    assert.equal(me.body['user_id'], `@bob:${INTEROP_SERVER_NAME}`);
    assert.equal(me.body['device_id'], deviceId);
  });

  test("login_hint reaches Keycloak: its login form is prefilled with the user's OP name", async () => {
    const { completed, keycloakPages } = await signIn(KEYCLOAK_REALM.users.alice, { via: 'sso', loginHint: `mxid:@alice:${INTEROP_SERVER_NAME}` });
    const input = /<input[^>]*id="username"[^>]*>/.exec(keycloakPages[0] ?? '')?.[0] ?? '';
    assert.match(input, /value="alice"/, (keycloakPages[0] ?? '').slice(0, 2000));
    assert.equal((await whoami(completed.tokenResponse.access_token)).status, 200);
  });

  test('a back-channel logout from Keycloak ends the native session', async () => {
    const { completed } = await signIn(KEYCLOAK_REALM.users.bob);
    assert.equal((await whoami(completed.tokenResponse.access_token)).status, 200);
    await stack.keycloak.logoutUser('bob');
    const deadline = Date.now() + 10_000;
    let status = 200;
    while (Date.now() < deadline && status === 200) {
      status = (await whoami(completed.tokenResponse.access_token)).status;
      if (status === 200) await new Promise((resolve) => setTimeout(resolve, 250));
    }
    assert.equal(status, 401);
  });

  test('/logout/all from a legacy client ends the native session', async () => {
    const { completed } = await signIn(KEYCLOAK_REALM.users.alice);
    const legacy = await stack.passwordLogin('alice', KEYCLOAK_REALM.users.alice.password);
    assert.equal(legacy.status, 200, JSON.stringify(legacy.body));
    assert.equal((await stack.request('POST', '/_matrix/client/v3/logout/all', { token: legacy.body['access_token'], body: {} })).status, 200);
    assert.equal((await whoami(completed.tokenResponse.access_token)).status, 401);
  });

  test('device authorization grant (RFC 8628): openid-client polls while Chromium enters the code and signs in at Keycloak', { skip: chromiumMissing() }, async () => {
    const registered = await fetch(`${issuer()}/reg`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        client_name: 'Interop TV',
        client_uri: 'https://tv.example.test/',
        application_type: 'native',
        grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
        token_endpoint_auth_method: 'none',
      }),
    });
    assert.equal(registered.status, 201);
    const clientId = String(((await registered.json()) as Record<string, unknown>)['client_id']);
    // Discovery through Synapse (its auth_metadata is the proxy's document).
    const metadata = (await stack.request('GET', '/_matrix/client/v1/auth_metadata')).body as openidClient.ServerMetadata;
    assert.equal(metadata['device_authorization_endpoint'], `${issuer()}/device/auth`);
    const config = new openidClient.Configuration(metadata, clientId, undefined, openidClient.None());
    openidClient.allowInsecureRequests(config);
    const deviceId = 'INTEROPTV01';
    const started = await openidClient.initiateDeviceAuthorization(config, { scope: `openid urn:matrix:client:api:* urn:matrix:client:device:${deviceId}` });
    const polling = openidClient.pollDeviceAuthorizationGrant(config, started);

    const browser = await launchChromium();
    try {
      const page = await browser.newPage();
      page.setDefaultTimeout(30_000);
      await page.goto(started.verification_uri_complete ?? '');
      await page.click('#continue');
      await page.click('#confirm');
      // The proxy's sign-in page (password_login) offers Keycloak: its own login form, as a TV owner would use it.
      await page.waitForSelector('#password-form, #kc-form-login');
      if ((await page.locator('#password-form').count()) > 0) await page.click('a.sso');
      await page.waitForSelector('#kc-form-login');
      await page.fill('#username', KEYCLOAK_REALM.users.alice.username);
      await page.fill('#password', KEYCLOAK_REALM.users.alice.password);
      await page.click('#kc-login');
      await page.waitForSelector('#allow');
      await page.click('#allow');
      await page.waitForSelector('#done');
    } finally {
      await browser.close();
    }
    const tokens = await polling;
    const me = await whoami(tokens.access_token);
    assert.equal(me.status, 200, JSON.stringify(me.body));
    assert.equal(me.body['user_id'], `@alice:${INTEROP_SERVER_NAME}`);
    assert.equal(me.body['device_id'], deviceId);
    const refreshed = await openidClient.refreshTokenGrant(config, tokens.refresh_token ?? '');
    assert.equal((await whoami(refreshed.access_token)).status, 200);
    await openidClient.tokenRevocation(config, refreshed.access_token);
    assert.equal((await whoami(refreshed.access_token)).status, 401);
  });

  test('a foreign redirect URI and a second device scope are refused', async () => {
    const registration = await fetch(`${issuer()}/reg`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ client_uri: 'https://app.example.test/', redirect_uris: ['https://evil.example/cb'], response_types: ['code'], grant_types: ['authorization_code', 'refresh_token'], token_endpoint_auth_method: 'none' }),
    });
    assert.equal(registration.status, 400);
    const { clientId } = await discoverAndRegister();
    const url = new URL(`${issuer()}/auth`);
    url.search = new URLSearchParams({
      client_id: clientId,
      response_type: 'code',
      redirect_uri: REDIRECT_URI,
      scope: 'openid urn:matrix:client:api:* urn:matrix:client:device:AAAAAAAAAA urn:matrix:client:device:BBBBBBBBBB',
      state: 's',
      code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
      code_challenge_method: 'S256',
    }).toString();
    assert.equal((await fetch(url, { redirect: 'manual' })).status, 400);
  });
});

describe('native_clients: hide on Synapse + Keycloak: the same client falls back to the legacy login', { skip }, () => {
  let stack: InteropStack;
  before(async () => {
    stack = await startInteropStack({ keycloak: sharedKeycloak() });
  });
  after(async () => {
    await stack?.stop();
  });

  test("matrix-js-sdk finds no OAuth server (the proxy's 404, never Synapse's metadata) and logs in with a password", async () => {
    const client = createClient({ baseUrl: stack.url });
    await assert.rejects(client.getAuthMetadata(), (err: { errcode?: string; httpStatus?: number }) => err.errcode === 'M_UNRECOGNIZED' && err.httpStatus === 404);
    const flows = await client.loginFlows();
    assert.ok(flows.flows.some((flow) => flow.type === 'm.login.password'));
    const login = await client.loginRequest({ type: 'm.login.password', identifier: { type: 'm.id.user', user: 'alice' }, password: KEYCLOAK_REALM.users.alice.password });
    const me = await stack.request('GET', '/_matrix/client/v3/account/whoami', { token: login.access_token });
    assert.equal(me.body['user_id'], `@alice:${INTEROP_SERVER_NAME}`);
    client.stopClient();
  });
});

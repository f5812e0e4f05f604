import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { stringify } from 'yaml';
import { buildDeps } from '../../src/build-deps.js';
import { parseConfig } from '../../src/config/load-config.js';
import { createLogger } from '../../src/observability/logger.js';
import { createMetrics } from '../../src/observability/metrics.js';
import { startProxy, type RunningProxy } from '../../src/server.js';
import { MemoryStore } from '../../src/store/memory-store.js';
import { FakeClock } from '../support/fake-clock.js';
import { reservePort } from '../support/free-port.js';
import { startHomeserverDouble } from '../support/homeserver-double.js';
import { HOMESERVER_SECRET, IDP_ID, SERVER_NAME, startProxyHarness, type Harness } from '../support/proxy-harness.js';
import { startTestOp, type TestOp, type TestOpUser } from '../support/test-op.js';
import { ProxyBrowser, locationOf } from '../support/proxy-browser.js';

/**
 * m.login.sso end to end over real HTTP: the proxy, the in-process oidc-provider (its login form driven by a
 * cookie-keeping fetch client), the homeserver double. The browser leg against the proxy is played by
 * `ProxyBrowser`; sso-browser.test.ts does the same in Chromium.
 */

const CLIENT_REDIRECT = 'https://client.example/sso-done?keep=1&loginToken=stale';



/** Step 1: the client sends the browser to /login/sso/redirect; the proxy answers 302 to the OP. */
async function startSso(h: { url: string }, browser: ProxyBrowser, query: Record<string, string> = { redirectUrl: CLIENT_REDIRECT }, path = '/_matrix/client/v3/login/sso/redirect'): Promise<URL> {
  const response = await browser.get(`${h.url}${path}?${new URLSearchParams(query).toString()}`);
  assert.equal(response.status, 302, await response.text());
  return locationOf(response);
}

/** Steps 2-3: the OP login form, then the callback; resolves with the proxy's answer to the callback. */
async function signIn(op: TestOp, browser: ProxyBrowser, authorizationUrl: URL, user: TestOpUser): Promise<Response> {
  const callbackUrl = await op.browser().authorize(authorizationUrl, { login: user.username, password: user.password });
  return browser.get(callbackUrl);
}

/** Step 4-5: the confirmation page and its "Continue" button; resolves with the client URL the browser lands on. */
async function confirm(browser: ProxyBrowser, confirmationUrl: URL): Promise<{ page: string; landing: URL }> {
  const shown = await browser.get(confirmationUrl);
  assert.equal(shown.status, 200);
  const page = await shown.text();
  const csrf = /name="csrf_token" value="([^"]+)"/.exec(page)?.[1];
  assert.ok(csrf, 'the confirmation page carries a CSRF token');
  const submitted = await browser.post(confirmationUrl, { csrf_token: csrf });
  assert.equal(submitted.status, 303, await submitted.text());
  return { page, landing: locationOf(submitted) };
}

async function fullLogin(h: Harness, user: TestOpUser, query?: Record<string, string>): Promise<{ loginToken: string; landing: URL; page: string }> {
  const browser = new ProxyBrowser(h.url);
  const callback = await signIn(h.op, browser, await startSso(h, browser, query), user);
  assert.equal(callback.status, 302, await callback.text());
  const { page, landing } = await confirm(browser, locationOf(callback));
  const loginToken = landing.searchParams.get('loginToken');
  assert.ok(loginToken);
  return { loginToken, landing, page };
}

function tokenLogin(h: Harness, token: string) {
  return h.request('POST', '/_matrix/client/v3/login', { body: { type: 'm.login.token', token } });
}

async function expectPage(response: Response, status: number, text: RegExp): Promise<string> {
  const body = await response.text();
  assert.equal(response.status, status, body);
  assert.match(response.headers.get('content-type') ?? '', /^text\/html/);
  assert.match(body, text);
  return body;
}

describe('SSO login through the proxy', () => {
  let h: Harness;
  const clock = new FakeClock(Date.now());

  before(async () => {
    h = await startProxyHarness({ clock });
  });
  after(() => h.stop());

  test('full flow: redirect → OP → callback → confirmation → loginToken → m.login.token → whoami', async () => {
    const browser = new ProxyBrowser(h.url);
    const authorizationUrl = await startSso(h, browser);
    assert.equal(authorizationUrl.origin, h.op.issuer);
    const params = authorizationUrl.searchParams;
    assert.equal(params.get('redirect_uri'), `${h.url}/_matrix-compat-proxy/sso/callback/${IDP_ID}`);
    assert.equal(params.get('code_challenge_method'), 'S256');
    assert.ok((params.get('state') ?? '').length >= 32);
    assert.ok((params.get('nonce') ?? '').length >= 32);
    assert.equal(params.get('prompt'), null);

    const callback = await signIn(h.op, browser, authorizationUrl, h.op.users.alice);
    assert.equal(callback.status, 302);
    const confirmationUrl = locationOf(callback);
    assert.match(confirmationUrl.href, new RegExp(`^${h.url}/_matrix-compat-proxy/sso/confirm/[0-9A-Za-z]{32}$`));

    const { page, landing } = await confirm(browser, confirmationUrl);
    assert.match(page, /Continue to client\.example\?/);
    assert.match(page, new RegExp(`@alice:${SERVER_NAME.replace('.', '\\.')}`));
    // Existing query kept (in order), the stale loginToken replaced, the new one last.
    assert.equal(landing.origin + landing.pathname, 'https://client.example/sso-done');
    assert.deepEqual([...landing.searchParams.keys()], ['keep', 'loginToken']);
    const loginToken = landing.searchParams.get('loginToken') ?? '';
    assert.notEqual(loginToken, 'stale');

    const login = await tokenLogin(h, loginToken);
    assert.equal(login.status, 200, JSON.stringify(login.body));
    assert.equal(login.body.user_id, `@alice:${SERVER_NAME}`);
    const whoami = await h.request('GET', '/_matrix/client/v3/account/whoami', { token: login.body.access_token });
    assert.equal(whoami.status, 200, JSON.stringify(whoami.body));
    assert.equal(whoami.body.user_id, `@alice:${SERVER_NAME}`);
    // First login provisioned the user with the mapped display name.
    assert.equal(h.homeserver.users.get('alice')?.displayName, h.op.users.alice.name);
  });

  test('pages carry the strict headers and no CORS; the cookie is HttpOnly and SameSite=Lax', async () => {
    const browser = new ProxyBrowser(h.url);
    const redirect = await browser.get(`${h.url}/_matrix/client/v3/login/sso/redirect?redirectUrl=${encodeURIComponent(CLIENT_REDIRECT)}`);
    const cookie = redirect.headers.getSetCookie().find((line) => line.startsWith('mcp-sso='));
    assert.ok(cookie);
    assert.match(cookie, /HttpOnly/);
    assert.match(cookie, /SameSite=Lax/);
    assert.match(cookie, /Path=\//);
    assert.doesNotMatch(cookie, /Secure/, 'plain-HTTP public_baseurl: no Secure flag, or the browser drops it');

    const callback = await signIn(h.op, browser, locationOf(redirect), h.op.users.bob);
    const shown = await browser.get(locationOf(callback));
    const csp = shown.headers.get('content-security-policy') ?? '';
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /style-src 'sha256-[A-Za-z0-9+/=]+'/);
    assert.match(csp, /form-action 'self' https:\/\/client\.example(;|$)/);
    assert.match(csp, /frame-ancestors 'none'/);
    assert.equal(shown.headers.get('cache-control'), 'no-store');
    assert.equal(shown.headers.get('x-frame-options'), 'DENY');
    assert.equal(shown.headers.get('referrer-policy'), 'no-referrer');
    assert.equal(shown.headers.get('access-control-allow-origin'), null);
    const page = await shown.text();
    assert.match(page, /<meta name="viewport"/);
    assert.doesNotMatch(page, /<script|src=|https?:\/\/(?!client\.example)/, 'no scripts, no external assets');
    // The full address is escaped (the & of the query).
    assert.match(page, /sso-done\?keep&#61;1&#38;loginToken&#61;stale/);
  });

  test('a login token works once', async () => {
    const { loginToken } = await fullLogin(h, h.op.users.alice);
    assert.equal((await tokenLogin(h, loginToken)).status, 200);
    const replay = await tokenLogin(h, loginToken);
    assert.equal(replay.status, 403);
    assert.equal(replay.body.errcode, 'M_FORBIDDEN');
  });

  test('a login token expires after login_token_lifetime (2 minutes)', async () => {
    const { loginToken } = await fullLogin(h, h.op.users.alice);
    clock.advance(h.config.sessions.login_token_lifetime + 1);
    const late = await tokenLogin(h, loginToken);
    assert.equal(late.status, 403);
    assert.equal(late.body.errcode, 'M_FORBIDDEN');
  });

  test('a replayed state (the same callback twice) is refused', async () => {
    const browser = new ProxyBrowser(h.url);
    const callbackUrl = await h.op.browser().authorize(await startSso(h, browser), { login: 'alice', password: h.op.users.alice.password });
    assert.equal((await browser.get(callbackUrl)).status, 302);
    await expectPage(await browser.get(callbackUrl), 400, /This sign-in link is not valid/);
  });

  test('a callback without the browser cookie, or with another browser’s, is refused', async () => {
    const browser = new ProxyBrowser(h.url);
    const callbackUrl = await h.op.browser().authorize(await startSso(h, browser), { login: 'alice', password: h.op.users.alice.password });
    await expectPage(await fetch(callbackUrl, { redirect: 'manual' }), 403, /browser could not be recognised/);
    // Seeing the callback URL burns nothing: the state is used up only after the cookie check (issue 12 #8).
    assert.equal((await browser.get(callbackUrl)).status, 302, 'the rightful browser still signs in');

    const victim = new ProxyBrowser(h.url);
    const otherCallback = await h.op.browser().authorize(await startSso(h, victim), { login: 'alice', password: h.op.users.alice.password });
    const attacker = new ProxyBrowser(h.url);
    await startSso(h, attacker); // the attacker has a cookie of their own
    await expectPage(await attacker.get(otherCallback), 403, /browser could not be recognised/);
    assert.equal((await victim.get(otherCallback)).status, 302, "the victim's sign-in survives the attacker's attempt");
  });

  test('an ID token with another nonce is refused', async () => {
    const browser = new ProxyBrowser(h.url);
    const authorizationUrl = await startSso(h, browser);
    // The OP signs whatever nonce the request carried: tamper with the request, as an attacker injecting a code would.
    authorizationUrl.searchParams.set('nonce', 'a-nonce-the-proxy-never-issued-0123456789');
    await expectPage(await signIn(h.op, browser, authorizationUrl, h.op.users.alice), 403, /could not be verified/);
  });

  test('a pending login older than sso_login_lifetime gets the "took too long" page', async () => {
    const browser = new ProxyBrowser(h.url);
    const authorizationUrl = await startSso(h, browser);
    clock.advance(h.config.sessions.sso_login_lifetime + 1000);
    await expectPage(await signIn(h.op, browser, authorizationUrl, h.op.users.alice), 400, /took too long/);
  });

  test('an error from the OP (the user cancelled) gets a page, and uses the state up', async () => {
    const browser = new ProxyBrowser(h.url);
    const authorizationUrl = await startSso(h, browser);
    const state = authorizationUrl.searchParams.get('state') ?? '';
    const callback = `${h.url}/_matrix-compat-proxy/sso/callback/${IDP_ID}?error=access_denied&state=${state}&iss=${encodeURIComponent(h.op.issuer)}`;
    await expectPage(await browser.get(callback), 403, /You were not signed in/);
    await expectPage(await browser.get(callback), 400, /not valid/);
  });

  test('the confirmation form needs its CSRF token and the same browser, and works once', async () => {
    const browser = new ProxyBrowser(h.url);
    const callback = await signIn(h.op, browser, await startSso(h, browser), h.op.users.alice);
    const confirmationUrl = locationOf(callback);
    const page = await (await browser.get(confirmationUrl)).text();
    const csrf = /name="csrf_token" value="([^"]+)"/.exec(page)?.[1] ?? '';

    await expectPage(await browser.post(confirmationUrl, {}), 403, /could not be checked/);
    await expectPage(await browser.post(confirmationUrl, { csrf_token: `${csrf.slice(0, -1)}x` }), 403, /could not be checked/);
    const stranger = new ProxyBrowser(h.url);
    await expectPage(await stranger.get(confirmationUrl), 403, /browser could not be recognised/);
    await expectPage(await stranger.post(confirmationUrl, { csrf_token: csrf }), 403, /browser could not be recognised/);

    // None of the refusals used the confirmation up.
    const accepted = await browser.post(confirmationUrl, { csrf_token: csrf });
    assert.equal(accepted.status, 303);
    await expectPage(await browser.post(confirmationUrl, { csrf_token: csrf }), 400, /no longer valid/);
    await expectPage(await browser.get(confirmationUrl), 400, /no longer valid/);
  });

  test('redirect endpoint variants: r0, trailing slash, explicit idpId, action=register', async () => {
    const browser = new ProxyBrowser(h.url);
    const query = { redirectUrl: CLIENT_REDIRECT };
    for (const path of ['/_matrix/client/r0/login/sso/redirect', '/_matrix/client/v3/login/sso/redirect/', `/_matrix/client/v3/login/sso/redirect/${IDP_ID}`]) {
      const url = await startSso(h, browser, query, path);
      assert.equal(url.origin, h.op.issuer, path);
    }
    const register = await startSso(h, browser, { redirectUrl: CLIENT_REDIRECT, action: 'register' });
    assert.equal(register.searchParams.get('prompt'), 'create');
    const unstable = await startSso(h, browser, { redirectUrl: CLIENT_REDIRECT, 'org.matrix.msc3824.action': 'register' });
    assert.equal(unstable.searchParams.get('prompt'), 'create');
    const login = await startSso(h, browser, { redirectUrl: CLIENT_REDIRECT, action: 'login' });
    assert.equal(login.searchParams.get('prompt'), null);
  });

  test('redirect endpoint refusals are readable pages', async () => {
    const get = (path: string) => fetch(`${h.url}${path}`, { redirect: 'manual' });
    const redirectUrl = encodeURIComponent(CLIENT_REDIRECT);
    const unknown = await expectPage(await get(`/_matrix/client/v3/login/sso/redirect/nope?redirectUrl=${redirectUrl}`), 404, /Unknown sign-in provider/);
    assert.match(unknown, /M_NOT_FOUND/);
    await expectPage(await get('/_matrix/client/v3/login/sso/redirect'), 400, /did not say where to return/);
    for (const bad of ['javascript:alert(1)', '//evil.example/', '/\\evil.example', 'https://client.example/%0d%0aSet-Cookie:x', 'https://u:p@client.example/', '%09https://client.example/']) {
      const response = await get(`/_matrix/client/v3/login/sso/redirect?redirectUrl=${bad.startsWith('%') ? bad : encodeURIComponent(bad)}`);
      const body = await expectPage(response, 400, /return address is not allowed/);
      assert.doesNotMatch(body, /alert\(1\)|evil\.example/, 'the refused address is not echoed');
      assert.equal(response.headers.getSetCookie().length, 0, 'no cookie, no pending login');
    }
    // A foreign but well-formed URL is allowed: the confirmation page names its host.
    assert.equal((await get(`/_matrix/client/v3/login/sso/redirect?redirectUrl=${encodeURIComponent('https://client.evil/')}`)).status, 302);
  });

  test('a callback on an unknown provider path is a 404 page', async () => {
    await expectPage(await fetch(`${h.url}/_matrix-compat-proxy/sso/callback/nope?state=x&code=y`), 404, /Unknown sign-in provider/);
  });
});

describe('SSO account mapping and policy', () => {
  test('attribute requirement not met → refused; met → allowed', async () => {
    const h = await startProxyHarness({
      configure: (config) => {
        config['oidc_providers'][0].scopes.push('groups');
        config['oidc_providers'][0].attribute_requirements = [{ attribute: 'groups', value: 'admins' }];
      },
    });
    try {
      const browser = new ProxyBrowser(h.url);
      await expectPage(await signIn(h.op, browser, await startSso(h, browser), h.op.users.bob), 403, /does not have the access/);
      assert.equal(h.homeserver.users.has('bob'), false, 'nobody was provisioned');
      const { loginToken } = await fullLogin(h, h.op.users.alice);
      assert.equal((await tokenLogin(h, loginToken)).status, 200);
    } finally {
      await h.stop();
    }
  });

  test('a template rendering an invalid localpart → refused with a page', async () => {
    const h = await startProxyHarness({
      configure: (config) => {
        config['oidc_providers'][0].user_mapping_provider.config.localpart_template = '{{ user.name }}';
      },
    });
    try {
      const browser = new ProxyBrowser(h.url);
      const body = await expectPage(await signIn(h.op, browser, await startSso(h, browser), h.op.users.alice), 403, /No Matrix user name could be chosen/);
      assert.doesNotMatch(body, /Alice Liddell/, 'claims are not echoed');
      assert.equal(h.homeserver.users.size, 0);
    } finally {
      await h.stop();
    }
  });

  test('an existing homeserver user of the same name → refused unless allow_existing_users', async () => {
    const existing = { localpart: 'alice', displayName: 'The real alice', avatarUrl: null, emails: [], locked: false, deactivated: false, suspended: false };
    const refusing = await startProxyHarness();
    try {
      refusing.homeserver.users.set('alice', { ...existing });
      const browser = new ProxyBrowser(refusing.url);
      await expectPage(await signIn(refusing.op, browser, await startSso(refusing, browser), refusing.op.users.alice), 403, /already taken/);
      assert.equal(refusing.homeserver.users.get('alice')?.displayName, 'The real alice');
    } finally {
      await refusing.stop();
    }
    const allowing = await startProxyHarness({
      configure: (config) => {
        config['oidc_providers'][0].allow_existing_users = true;
      },
    });
    try {
      allowing.homeserver.users.set('alice', { ...existing });
      const { loginToken } = await fullLogin(allowing, allowing.op.users.alice);
      const login = await tokenLogin(allowing, loginToken);
      assert.equal(login.body.user_id, `@alice:${SERVER_NAME}`);
    } finally {
      await allowing.stop();
    }
  });

  test('a deactivated account gets no login token', async () => {
    const h = await startProxyHarness();
    try {
      await fullLogin(h, h.op.users.bob);
      const bob = h.homeserver.users.get('bob');
      assert.ok(bob);
      bob.deactivated = true;
      const browser = new ProxyBrowser(h.url);
      await expectPage(await signIn(h.op, browser, await startSso(h, browser), h.op.users.bob), 403, /deactivated/);
    } finally {
      await h.stop();
    }
  });

  test('behind TLS: a __Host- Secure cookie, and redirect_uri from public_baseurl whatever the Host header says', async () => {
    const h = await startProxyHarness({
      configure: (config) => {
        config['public_baseurl'] = 'https://matrix.example.test/';
      },
    });
    try {
      const response = await fetch(`${h.url}/_matrix/client/v3/login/sso/redirect?redirectUrl=${encodeURIComponent(CLIENT_REDIRECT)}`, {
        redirect: 'manual',
        headers: { 'x-forwarded-host': 'evil.example', 'x-forwarded-proto': 'http' },
      });
      assert.equal(response.status, 302);
      const cookie = response.headers.getSetCookie()[0] ?? '';
      assert.match(cookie, /^__Host-mcp-sso=[0-9A-Za-z]{32}; Path=\/; Max-Age=1800; HttpOnly; SameSite=Lax; Secure$/);
      assert.equal(locationOf(response).searchParams.get('redirect_uri'), `https://matrix.example.test/_matrix-compat-proxy/sso/callback/${IDP_ID}`);
    } finally {
      await h.stop();
    }
  });

  test('sso.client_whitelist skips the confirmation page', async () => {
    const h = await startProxyHarness({
      configure: (config) => {
        config['sso'] = { client_whitelist: ['https://trusted.example/'] };
      },
    });
    try {
      const browser = new ProxyBrowser(h.url);
      const trusted = await signIn(h.op, browser, await startSso(h, browser, { redirectUrl: 'https://trusted.example/cb' }), h.op.users.alice);
      assert.equal(trusted.status, 302);
      const landing = locationOf(trusted);
      assert.equal(landing.origin + landing.pathname, 'https://trusted.example/cb');
      assert.equal((await tokenLogin(h, landing.searchParams.get('loginToken') ?? '')).status, 200);

      const lookalike = await signIn(h.op, browser, await startSso(h, browser, { redirectUrl: 'https://trusted.example.evil/cb' }), h.op.users.alice);
      assert.match(locationOf(lookalike).pathname, /^\/_matrix-compat-proxy\/sso\/confirm\//);
    } finally {
      await h.stop();
    }
  });
});

/** Two providers at two different OPs: the picker page, and the mix-up attack (RFC 9207 §1). */
describe('SSO with two providers', () => {
  let opA: TestOp;
  let opB: TestOp;
  let proxy: RunningProxy;
  let homeserver: Awaited<ReturnType<typeof startHomeserverDouble>>;
  let store: MemoryStore;
  let origin: string;

  before(async () => {
    // Held until the proxy listens: the OPs and the homeserver double below listen on port 0 meanwhile.
    const reserved = await reservePort();
    const port = reserved.port;
    origin = `http://127.0.0.1:${port}`;
    opA = await startTestOp({ proxyBaseUrl: origin, idpId: 'alpha', backchannelLogout: false });
    opB = await startTestOp({ proxyBaseUrl: origin, idpId: 'beta', backchannelLogout: false });
    homeserver = await startHomeserverDouble({ masEndpoint: `${origin}/`, secret: HOMESERVER_SECRET, serverName: SERVER_NAME });
    const provider = (idpId: string, name: string, op: TestOp) => ({
      idp_id: idpId,
      idp_name: name,
      issuer: op.issuer,
      client_id: op.clientId,
      client_secret: op.clientSecret,
      scopes: ['openid', 'profile', 'email'],
      user_mapping_provider: { config: { localpart_template: `{{ user.preferred_username }}_${idpId}` } },
    });
    const config = parseConfig(
      stringify({
        server_name: SERVER_NAME,
        public_baseurl: `${origin}/`,
        listen: { host: '127.0.0.1', port },
        homeserver: { url: homeserver.url, mode: 'synapse', secret: HOMESERVER_SECRET },
        oidc_providers: [provider('alpha', 'Alpha <Corp> & Co', opA), provider('beta', 'Beta', opB)],
        sessions: { encryption_key: 'an-encryption-key-for-tests-only-0123456789abcdef' },
        metrics: { enabled: false },
        log: { level: 'silent' },
      }),
      { env: {} },
    );
    store = new MemoryStore();
    const deps = await buildDeps(config, store, createLogger('silent'), createMetrics({ collectDefaults: false }));
    await reserved.release();
    proxy = await startProxy(deps);
  });
  after(async () => {
    await proxy.stop(1000);
    await store.close();
    await homeserver.stop();
    await opA.stop();
    await opB.stop();
  });

  test('no idpId → the picker page, whose links keep redirectUrl and action', async () => {
    const response = await fetch(`${origin}/_matrix/client/r0/login/sso/redirect?redirectUrl=${encodeURIComponent(CLIENT_REDIRECT)}&action=register`);
    const page = await expectPage(response, 200, /Sign in to example\.test/);
    assert.equal(response.headers.getSetCookie().length, 0, 'no pending login before a provider is chosen');
    assert.match(page, /Continue with Alpha &#60;Corp&#62; &#38; Co/);
    const links = [...page.matchAll(/href="([^"]+)"/g)].map((match) => (match[1] ?? '').replaceAll('&#61;', '=').replaceAll('&#38;', '&'));
    assert.equal(links.length, 2);
    const first = new URL(links[0] ?? '', origin);
    assert.equal(first.pathname, '/_matrix/client/r0/login/sso/redirect/alpha');
    assert.equal(first.searchParams.get('redirectUrl'), CLIENT_REDIRECT);
    assert.equal(first.searchParams.get('action'), 'register');
    const browser = new ProxyBrowser(origin);
    assert.equal((await startSso({ url: origin }, browser, Object.fromEntries(first.searchParams), first.pathname)).origin, opA.issuer);
  });

  test('each provider completes on its own callback path', async () => {
    for (const [idp, op] of [['alpha', opA], ['beta', opB]] as const) {
      const browser = new ProxyBrowser(origin);
      const authorizationUrl = await startSso({ url: origin }, browser, { redirectUrl: CLIENT_REDIRECT }, `/_matrix/client/v3/login/sso/redirect/${idp}`);
      assert.equal(authorizationUrl.searchParams.get('redirect_uri'), `${origin}/_matrix-compat-proxy/sso/callback/${idp}`);
      const callback = await signIn(op, browser, authorizationUrl, op.users.alice);
      assert.equal(callback.status, 302, await callback.text());
      const { landing } = await confirm(browser, locationOf(callback));
      const login = await fetch(`${origin}/_matrix/client/v3/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ type: 'm.login.token', token: landing.searchParams.get('loginToken') }),
      });
      const body = (await login.json()) as { user_id: string };
      assert.equal(body.user_id, `@alice_${idp}:${SERVER_NAME}`, JSON.stringify(body));
    }
  });

  test('mix-up: a response of OP beta delivered to alpha’s login is refused', async () => {
    const browser = new ProxyBrowser(origin);
    // The victim starts at alpha; the attacker's beta answers with a code of its own, for the victim's state.
    const alphaStart = await startSso({ url: origin }, browser, { redirectUrl: CLIENT_REDIRECT }, '/_matrix/client/v3/login/sso/redirect/alpha');
    const betaStart = new URL(alphaStart.href.replace(opA.issuer, opB.issuer));
    betaStart.searchParams.set('redirect_uri', `${origin}/_matrix-compat-proxy/sso/callback/alpha`);
    const betaAnswer = await opB.browser().authorize(betaStart, { login: 'alice', password: opB.users.alice.password });
    assert.equal(betaAnswer.pathname, '/_matrix-compat-proxy/sso/callback/alpha');
    assert.equal(betaAnswer.searchParams.get('iss'), opB.issuer);
    await expectPage(await browser.get(betaAnswer), 403, /could not be verified/);
  });

  test('mix-up: a state of alpha arriving on beta’s callback path is refused', async () => {
    const browser = new ProxyBrowser(origin);
    const alphaStart = await startSso({ url: origin }, browser, { redirectUrl: CLIENT_REDIRECT }, '/_matrix/client/v3/login/sso/redirect/alpha');
    const alphaAnswer = await opA.browser().authorize(alphaStart, { login: 'alice', password: opA.users.alice.password });
    const misdirected = new URL(alphaAnswer.href.replace('/sso/callback/alpha', '/sso/callback/beta'));
    await expectPage(await browser.get(misdirected), 403, /wrong provider/);
    // The state was used up by the refused attempt: the genuine callback cannot be replayed afterwards.
    await expectPage(await browser.get(alphaAnswer), 400, /not valid/);
  });
});

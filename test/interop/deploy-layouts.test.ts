import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { AutoDiscovery } from 'matrix-js-sdk';
import { parse as parseYaml } from 'yaml';
import { configSchema } from '../../src/config/schema.js';
import { ownedPathMatcher } from '../../src/http/owned-routes.js';
import { ownedRoutes } from '../../src/routes.js';
import { normaliseMatrixPath } from '../../src/http/path-normalisation.js';
import { startDeployStack, type DeployStack, type NginxLayout, type RunningNginx } from '../support/deploy-stack.js';
import { interopSkipReason, jsonRequest } from '../support/interop-stack.js';
import { ProxyBrowser, locationOf } from '../support/proxy-browser.js';

// docker-compose.yml's stack, run natively from the same files (deploy/compose, deploy/nginx): PostgreSQL, Synapse,
// Redis, Keycloak with the demo realm imported at start, the proxy started by the Dockerfile's ENTRYPOINT + CMD, and
// nginx in each of the two layouts in turn (one start of everything else serves both). Issue 18.

const WHOAMI = '/_matrix/client/v3/account/whoami';
// The demo realm's users (deploy/compose/keycloak/matrix-realm.json).
const ALICE = { username: 'alice', password: 'alice-demo-password' };
const BOB = { username: 'bob', password: 'bob-demo-password' };
const CLIENT_REDIRECT = 'https://client.example/after-sso';

/** Raw paths probed through nginx: every spelling of an owned route the proxy normalises, and neighbours it does not own. */
const PROBES: readonly string[] = [
  // client discovery: the proxy answers it (well_known_client.serve)
  '/.well-known/matrix/client',
  '/.well-known//matrix/client',
  // login, in the spellings src/proxy/path-normalisation.ts folds together
  '/_matrix/client/v3/login',
  '/_matrix/client/r0/login',
  '/_matrix/client/v3/login/',
  '/_matrix/client/v3/login//',
  '/_matrix/client/v3//login',
  '//_matrix/client/v3/login',
  '/_matrix/client/v3%2Flogin',
  '/_matrix%2Fclient%2Fv3%2Flogin',
  '/_matrix/client/v3/%2Flogin',
  '/_matrix/client/v3/%6Cogin',
  '/_matrix/client/v3/./login',
  '/_matrix/client/v3/%2E/login',
  '/_matrix/client/v3/x/../login',
  '/_matrix/client/v3/x/%2E%2E/login',
  '/_matrix/client/v3%252Flogin',
  '/_matrix/client/v3/%256Cogin',
  '/%255Fmatrix/client/v3/login',
  '/_matrix/client/v3\\login',
  '/_matrix/client/v3/%5Clogin',
  // logout, logout/all, refresh, SSO redirect, the proxy's own pages
  '/_matrix/client/v3/logout',
  '/_matrix/client/r0/logout/',
  '/_matrix/client/v3/logout/all',
  '/_matrix/client/v3/logout%2Fall',
  '/_matrix/client/v3/logout//all/',
  '/_matrix/client/v3/refresh',
  '/_matrix/client/r0/refresh/',
  '/_matrix/client/v1/refresh',
  '/_matrix/client/v1%2Frefresh',
  '/_matrix/client/v3/login/sso/redirect',
  '/_matrix/client/r0/login/sso/redirect/keycloak',
  '/_matrix/client/v3/login/sso%2Fredirect/keycloak',
  '/_matrix/client/v3/login//sso/redirect/',
  '/_matrix-compat-proxy',
  '/_matrix-compat-proxy/sso/callback/keycloak',
  '/%5Fmatrix-compat-proxy/sso/confirm/x',
  // auth discovery: the proxy's with native_clients: hide (the compose config leaves the default)
  '/_matrix/client/v1/auth_metadata',
  '/_matrix/client/v1/auth_metadata/',
  '/_matrix/client/unstable/org.matrix.msc2965/auth_metadata',
  '/_matrix/client/unstable/org.matrix.msc2965/auth_issuer',
  '/_matrix/client/unstable/org.matrix.msc2965%2Fauth_issuer',
  // not owned: Synapse's
  '/_matrix/client/versions',
  '/_matrix/client/v3/account/whoami',
  '/_matrix/client/v1/login',
  '/_matrix/client/v3/loginx',
  '/_matrix/client/v3/login/get_token',
  '/_matrix/client/v3/logout/allx',
  '/_matrix/client/v3/devices',
  '/_matrix/media/v3/config',
  '/health',
  '/ready',
];
/** The proxy's ops routes: in the auth-routes-only layout nginx leaves /health and /ready to Synapse (both answer them). */
const OPS = new Set(['/health', '/ready']);

/** The client listener's owned paths in this layout (Synapse calls the proxy on its own listener): the one table, src/routes.ts. */
const COMPOSE_NATIVE_CLIENTS = configSchema.shape.native_clients.parse(
  (parseYaml(readFileSync(new URL('../../deploy/compose/proxy/config.yaml', import.meta.url), 'utf8')) as Record<string, unknown>)['native_clients'],
);
const clientOwns = ownedPathMatcher(ownedRoutes({ separateHomeserverListener: true, adminApi: true, wellKnownClient: true, nativeClients: COMPOSE_NATIVE_CLIENTS }, { check: async () => ({ ok: true, checks: {} }) }), 'client');

/** Whether the proxy would answer this raw path itself (or refuse it as malformed). */
function proxyOwns(rawPath: string): boolean {
  const normalised = normaliseMatrixPath(rawPath);
  return normalised === undefined || (clientOwns(normalised) && !OPS.has(normalised));
}

/** A GET with the path exactly as given (fetch would normalise it first). */
function rawGet(baseUrl: string, path: string): Promise<number> {
  const url = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: url.hostname, port: url.port, path, method: 'GET' }, (res) => {
      res.resume();
      res.once('end', () => resolve(res.statusCode ?? 0));
    });
    req.once('error', reject);
    req.end();
  });
}

let stack: DeployStack;

function logsTail(): string {
  return `\n--- proxy log (tail) ---\n${stack.proxyLogs().slice(-5000)}\n--- synapse log (tail) ---\n${stack.synapseLogs().slice(-3000)}`;
}

/** The access-log line of the request carrying `marker` in its query, once nginx has written it. */
async function accessLine(nginx: RunningNginx, marker: string): Promise<string> {
  const deadline = performance.now() + 5_000;
  for (;;) {
    const line = nginx.accessLog().find((entry) => entry.includes(`${marker} `) || entry.includes(`${marker}&`));
    if (line !== undefined) return line;
    if (performance.now() > deadline) assert.fail(`no access-log line for ${marker}:\n${nginx.accessLog().slice(-20).join('\n')}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Where nginx sent the request: 'proxy', 'synapse', or 'nginx' (answered by nginx itself, e.g. a 400). */
function upstreamOf(line: string): 'proxy' | 'synapse' | 'nginx' {
  const upstream = / upstream=(\S+)/.exec(line)?.[1];
  if (upstream === `127.0.0.1:${stack.places.proxyPort}`) return 'proxy';
  if (upstream === `127.0.0.1:${stack.places.synapsePort}`) return 'synapse';
  if (upstream === '-') return 'nginx';
  throw new Error(`unknown upstream in: ${line}`);
}

/** Sends every probe through nginx and checks where it went; returns the probe markers that reached Synapse. */
async function probeRouting(nginx: RunningNginx, layout: NginxLayout): Promise<void> {
  const results: { path: string; marker: string; status: number; upstream: string; owned: boolean }[] = [];
  for (const [index, path] of PROBES.entries()) {
    const marker = `probe=${layout}-${index}`;
    const status = await rawGet(stack.publicUrl, `${path}?${marker}`);
    const upstream = upstreamOf(await accessLine(nginx, marker));
    results.push({ path, marker, status, upstream, owned: proxyOwns(path) });
  }
  // Synapse logs every request it serves ("Processed request: ... GET <uri>"): give the last ones a moment.
  await new Promise((resolve) => setTimeout(resolve, 500));
  const synapseLog = stack.synapseLogs();
  const reachedSynapse = (marker: string) => synapseLog.includes(`${marker} `) || synapseLog.includes(`${marker}"`);
  const table = results.map((r) => `${r.owned ? 'owned' : '     '} ${String(r.status).padEnd(4)} ${r.upstream.padEnd(8)} ${reachedSynapse(r.marker) ? 'at-synapse' : '          '} ${r.path}`).join('\n');
  console.log(`${layout}: where each probe went\n${table}`);

  for (const r of results) {
    if (r.owned) {
      assert.notEqual(r.upstream, 'synapse', `${layout}: nginx sent owned ${r.path} to Synapse\n${table}`);
      assert.equal(reachedSynapse(r.marker), false, `${layout}: owned ${r.path} reached Synapse\n${table}`);
    } else if (layout === 'auth-routes-only') {
      assert.equal(r.upstream, 'synapse', `${layout}: ${r.path} should go straight to Synapse\n${table}`);
    }
    if (layout === 'full-proxy') assert.ok(r.upstream === 'proxy' || r.upstream === 'nginx', `${layout}: ${r.path} went to ${r.upstream}`);
    // Only nginx's own refusals may skip both upstreams.
    if (r.upstream === 'nginx') assert.equal(r.status, 400, `${layout}: nginx answered ${r.path} itself with ${r.status}`);
  }
  // The log check can fail: Synapse's own routes do show up in its log (its /health resource logs nothing, and in the
  // full layout the proxy answers /health and /ready itself).
  const synapseRoutes = results.filter((r) => !r.owned && !OPS.has(r.path));
  assert.ok(synapseRoutes.every((r) => reachedSynapse(r.marker)), `${layout}: Synapse's routes are not all in its log\n${table}`);
}

async function passwordLogin(user: { username: string; password: string }, extra: Record<string, unknown> = {}) {
  const response = await jsonRequest(`${stack.publicUrl}/_matrix/client/v3/login`, 'POST', {
    body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: user.username }, password: user.password, ...extra },
  });
  assert.equal(response.status, 200, `login of ${user.username}: ${JSON.stringify(response.body)}${logsTail()}`);
  return response.body as { access_token: string; refresh_token?: string; device_id: string; user_id: string };
}

/** Legacy password login, /sync, refresh and logout through nginx; returns which upstream served /sync. */
async function legacyClientFlow(nginx: RunningNginx): Promise<string> {
  const flows = await jsonRequest(`${stack.publicUrl}/_matrix/client/v3/login`, 'GET');
  assert.deepEqual((flows.body.flows as { type: string }[]).map((flow) => flow.type), ['m.login.password', 'm.login.sso', 'm.login.token']);

  const login = await passwordLogin(ALICE, { refresh_token: true, initial_device_display_name: 'deploy test' });
  assert.equal(login.user_id, '@alice:localhost');
  const whoami = await jsonRequest(`${stack.publicUrl}${WHOAMI}`, 'GET', { token: login.access_token });
  assert.equal(whoami.status, 200, JSON.stringify(whoami.body));
  assert.equal(whoami.body.device_id, login.device_id);
  const sync = await jsonRequest(`${stack.publicUrl}/_matrix/client/v3/sync?timeout=0&marker=sync-${nginx.layout}`, 'GET', { token: login.access_token });
  assert.equal(sync.status, 200, JSON.stringify(sync.body));
  const syncUpstream = upstreamOf(await accessLine(nginx, `marker=sync-${nginx.layout}`));

  const refreshed = await jsonRequest(`${stack.publicUrl}/_matrix/client/v3/refresh`, 'POST', { body: { refresh_token: login.refresh_token } });
  assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
  assert.notEqual(refreshed.body.access_token, login.access_token);
  const afterRefresh = await jsonRequest(`${stack.publicUrl}${WHOAMI}`, 'GET', { token: refreshed.body.access_token });
  assert.equal(afterRefresh.status, 200);
  assert.equal(afterRefresh.body.device_id, login.device_id, 'a refresh keeps the device');

  const out = await jsonRequest(`${stack.publicUrl}/_matrix/client/v3/logout`, 'POST', { token: refreshed.body.access_token, body: {} });
  assert.equal(out.status, 200, JSON.stringify(out.body));
  const gone = await jsonRequest(`${stack.publicUrl}${WHOAMI}`, 'GET', { token: refreshed.body.access_token });
  assert.equal(gone.status, 401);
  assert.equal(gone.body.errcode, 'M_UNKNOWN_TOKEN');
  return syncUpstream;
}

/** m.login.sso through nginx: the proxy's redirect, Keycloak's login form, the callback and confirmation, m.login.token. */
async function ssoFlow(): Promise<void> {
  const browser = new ProxyBrowser(stack.publicUrl);
  const redirect = await browser.get(`${stack.publicUrl}/_matrix/client/v3/login/sso/redirect/keycloak?redirectUrl=${encodeURIComponent(CLIENT_REDIRECT)}`);
  assert.equal(redirect.status, 302, await redirect.text());
  const authorization = locationOf(redirect);
  assert.equal(authorization.origin, stack.keycloakUrl, 'the browser is sent to Keycloak’s public URL');

  // Keycloak's login form, with a cookie jar of its own.
  const keycloakCookies = new Map<string, string>();
  const keycloakFetch = async (url: URL | string, init: RequestInit = {}) => {
    const response = await fetch(url, { ...init, redirect: 'manual', headers: { ...(init.headers as Record<string, string>), cookie: [...keycloakCookies].map(([k, v]) => `${k}=${v}`).join('; ') } });
    for (const line of response.headers.getSetCookie()) {
      const [pair = ''] = line.split(';');
      const equals = pair.indexOf('=');
      if (equals > 0) keycloakCookies.set(pair.slice(0, equals).trim(), pair.slice(equals + 1).trim());
    }
    return response;
  };
  const form = await keycloakFetch(authorization);
  const page = await form.text();
  assert.equal(form.status, 200, page.slice(0, 500));
  const action = /<form[^>]*id="kc-form-login"[^>]*action="([^"]+)"/.exec(page)?.[1]?.replaceAll('&amp;', '&');
  assert.ok(action, 'Keycloak shows its login form');
  const signedIn = await keycloakFetch(action, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ username: BOB.username, password: BOB.password, credentialId: '' }).toString(),
  });
  assert.equal(signedIn.status, 302, (await signedIn.text()).slice(0, 500));
  const callbackUrl = locationOf(signedIn);
  assert.equal(callbackUrl.origin, stack.publicUrl, 'Keycloak returns the browser to the proxy through nginx');

  const callback = await browser.get(callbackUrl);
  assert.equal(callback.status, 302, await callback.text());
  const confirmationUrl = locationOf(callback);
  const shown = await browser.get(confirmationUrl);
  const confirmation = await shown.text();
  assert.equal(shown.status, 200, confirmation);
  const csrf = /name="csrf_token" value="([^"]+)"/.exec(confirmation)?.[1];
  assert.ok(csrf);
  const submitted = await browser.post(confirmationUrl, { csrf_token: csrf });
  assert.equal(submitted.status, 303, await submitted.text());
  const landing = locationOf(submitted);
  assert.equal(`${landing.origin}${landing.pathname}`, CLIENT_REDIRECT);
  const loginToken = landing.searchParams.get('loginToken');
  assert.ok(loginToken);

  const login = await jsonRequest(`${stack.publicUrl}/_matrix/client/v3/login`, 'POST', { body: { type: 'm.login.token', token: loginToken } });
  assert.equal(login.status, 200, `${JSON.stringify(login.body)}${logsTail()}`);
  assert.equal(login.body.user_id, '@bob:localhost');
  const whoami = await jsonRequest(`${stack.publicUrl}${WHOAMI}`, 'GET', { token: login.body.access_token });
  assert.equal(whoami.status, 200);
}

/** /.well-known/matrix/client through nginx names nginx, and matrix-js-sdk's AutoDiscovery accepts it. */
async function discoveryLeadsToNginx(): Promise<void> {
  const wellKnown = await jsonRequest(`${stack.publicUrl}/.well-known/matrix/client`, 'GET');
  assert.equal(wellKnown.status, 200, JSON.stringify(wellKnown.body));
  assert.equal(wellKnown.body['m.homeserver'].base_url, `${stack.publicUrl}/`);
  const discovered = await AutoDiscovery.fromDiscoveryConfig(wellKnown.body);
  assert.equal(discovered['m.homeserver'].state, AutoDiscovery.SUCCESS, JSON.stringify(discovered));
}

describe('docker-compose stack, run natively from the same files', { skip: interopSkipReason(), concurrency: 1, timeout: 900_000 }, () => {
  before(async () => {
    const started = performance.now();
    stack = await startDeployStack();
    console.log(`deploy stack up after ${Math.round(performance.now() - started)} ms: ${JSON.stringify(stack.startupMs)}`);
  });
  after(async () => {
    await stack?.stop();
  });

  test('the Dockerfile’s HEALTHCHECK command passes against the proxy, and fails when nothing answers', () => {
    const [command, ...args] = stack.healthcheck.command;
    assert.equal(command, 'node');
    const healthy = spawnSync(process.execPath, args, { env: { ...process.env, ...stack.healthcheck.env }, encoding: 'utf8', timeout: 10_000 });
    assert.equal(healthy.status, 0, healthy.stderr);
    const dead = spawnSync(process.execPath, args, { env: { ...process.env, HEALTHCHECK_URL: "http://127.0.0.1:1/health" }, encoding: 'utf8', timeout: 10_000 });
    assert.notEqual(dead.status, 0);
  });

  test('Prometheus metrics on the metrics listener', async () => {
    const response = await fetch(stack.metricsUrl);
    const text = await response.text();
    assert.equal(response.status, 200);
    assert.match(text, /^# TYPE mcp_http_requests_total counter$/m);
    assert.match(text, /^mcp_process_resident_memory_bytes /m);
  });

  for (const layout of ['full-proxy', 'auth-routes-only'] as const) {
    describe(`nginx layout ${layout}`, { concurrency: 1 }, () => {
      let nginx: RunningNginx;
      before(async () => {
        nginx = await stack.startNginx(layout);
      });
      after(async () => {
        await nginx?.stop();
      });

      test('discovery through nginx leads to nginx', discoveryLeadsToNginx);

      test('legacy password login, /sync, refresh and logout through nginx', async () => {
        const syncUpstream = await legacyClientFlow(nginx);
        // The layouts differ in who carries /sync: the proxy (full) or Synapse directly (auth routes only).
        assert.equal(syncUpstream, layout === 'full-proxy' ? 'proxy' : 'synapse');
      });

      test('SSO through nginx with Keycloak’s login form', ssoFlow);

      test('routing: no spelling of an owned route reaches Synapse', () => probeRouting(nginx, layout));
    });
  }
});

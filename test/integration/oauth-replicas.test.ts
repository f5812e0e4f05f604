import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { completeAuthorizationCodeGrant } from 'matrix-js-sdk';
import { freePort } from '../support/free-port.js';
import { authorizationUrl, discover, REDIRECT_URI, register, signInPageOf } from '../support/native-client.js';
import { startOpProcess, type OpProcess } from '../support/op-process.js';
import { SERVER_NAME, startProxyHarness, type Harness } from '../support/proxy-harness.js';

/**
 * native_clients: serve with two replicas (issue 17): the test's own proxy (replica A) and a second proxy PROCESS
 * (replica B, the CLI from source) on one real Redis, behind one public URL. The test plays the load balancer: each
 * browser hop and each client call goes to the replica the test names, with the public URL's cookies. Nothing is
 * shared between A and B but Redis and the configuration (the signing key, sessions.encryption_key).
 */

const CLI = ['--import', 'tsx', 'test/support/run-cli.ts'];
const signingKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();

let h: Harness;
let replicaB: OpProcess;
let urlB: string;
let configDir: string;

before(async () => {
  h = await startProxyHarness({
    store: 'redis',
    configure: (config) => {
      config['native_clients'] = 'serve';
      config['oauth_server'] = { signing_key: signingKey };
    },
  });
  const port = await freePort();
  urlB = `http://127.0.0.1:${port}`;
  const raw = h.rawConfig();
  raw['listen'] = { host: '127.0.0.1', port };
  raw['store'] = { redis_url: h.redisUrl, key_prefix: h.redisKeyPrefix };
  raw['log'] = { level: 'info' };
  configDir = await mkdtemp(join(tmpdir(), 'mcp-replicas-'));
  const path = join(configDir, 'config.yaml');
  await writeFile(path, stringify(raw));
  replicaB = startOpProcess('proxy replica B', process.execPath, [...CLI, '--config', path]);
  await replicaB.waitForUrl(`${urlB}/health`, 30_000);
});
after(async () => {
  await replicaB?.stop();
  await h?.stop();
  if (configDir !== undefined) await rm(configDir, { recursive: true, force: true });
});

type Replica = 'A' | 'B';
const listenerOf = (replica: Replica) => (replica === 'A' ? h.url : urlB);

/** The public URL's request, sent to one replica's listener (what a load balancer does). */
function toReplica(url: URL | string, replica: Replica): URL {
  const target = new URL(url, h.url);
  // The public URL is A's listener here; a URL of B's (a response's own URL) is the public one too.
  if (target.origin !== new URL(h.url).origin && target.origin !== new URL(urlB).origin) return target;
  return new URL(`${target.pathname}${target.search}`, listenerOf(replica));
}

/** A browser of the public origin: one cookie jar, each request to the replica named. */
class BalancedBrowser {
  private readonly cookies = new Map<string, string>();
  readonly hops: { replica: Replica; path: string; status: number }[] = [];

  async send(url: URL | string, replica: Replica, form?: Record<string, string>): Promise<Response> {
    const target = toReplica(url, replica);
    const headers: Record<string, string> = {};
    if (this.cookies.size > 0) headers['cookie'] = [...this.cookies].map(([name, value]) => `${name}=${value}`).join('; ');
    if (form !== undefined) headers['content-type'] = 'application/x-www-form-urlencoded';
    const response = await fetch(target, { method: form === undefined ? 'GET' : 'POST', headers, redirect: 'manual', ...(form === undefined ? {} : { body: new URLSearchParams(form).toString() }) });
    for (const line of response.headers.getSetCookie()) {
      const pair = line.split(';')[0] ?? '';
      const equals = pair.indexOf('=');
      if (equals > 0) this.cookies.set(pair.slice(0, equals).trim(), pair.slice(equals + 1).trim());
    }
    this.hops.push({ replica, path: target.pathname, status: response.status });
    return response;
  }
}

/** The Location of a redirect, resolved against the PUBLIC URL (replicas answer with public URLs or paths). */
function nextOf(response: Response): URL {
  const location = response.headers.get('location');
  assert.ok(location, `expected a redirect, got ${response.status}`);
  return new URL(location, h.url);
}

/** matrix-js-sdk's own HTTP calls (token exchange) sent to one replica, as the load balancer would. */
async function viaReplica<T>(replica: Replica, work: () => Promise<T>): Promise<T> {
  const original = globalThis.fetch;
  globalThis.fetch = ((input: Parameters<typeof fetch>[0], init?: RequestInit) => {
    const url = input instanceof Request ? input.url : String(input);
    if (input instanceof Request) return original(new Request(toReplica(url, replica), input), init);
    return original(toReplica(url, replica), init);
  }) as typeof fetch;
  try {
    return await work();
  } finally {
    globalThis.fetch = original;
  }
}

const whoamiAt = async (replica: Replica, token: string) => {
  const response = await fetch(`${listenerOf(replica)}/_matrix/client/v3/account/whoami`, { headers: { authorization: `Bearer ${token}` } });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
};

async function tokenAt(replica: Replica, form: Record<string, string>) {
  const response = await fetch(`${listenerOf(replica)}/_matrix-compat-proxy/oauth2/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(form).toString() });
  return { status: response.status, body: (await response.json()) as Record<string, string> };
}

describe('native_clients: serve on two replicas sharing one Redis', () => {
  test('authorization at A; sign-in page, OP callback, consent decision and token exchange at B (other hops alternate); refresh at A; revocation at B', async () => {
    const metadata = await discover(h.url);
    const clientId = await register(metadata);
    const url = await authorizationUrl(h.url, metadata, clientId);
    const deviceId = /device:(\S+)/.exec(url.searchParams.get('scope') ?? '')?.[1];
    const browser = new BalancedBrowser();

    // A: /auth → the interaction; B: the sign-in page; A: the SSO start → the OP.
    const atAuth = await browser.send(url, 'A');
    assert.equal(atAuth.status, 303, await atAuth.text());
    const signIn = await browser.send(nextOf(atAuth), 'B');
    assert.equal(signIn.status, 200);
    const form = signInPageOf(await signIn.text());
    const ssoStart = await browser.send(form.ssoLinks[0] ?? '', 'A');
    const opUrl = nextOf(ssoStart);
    assert.equal(opUrl.origin, new URL(h.op.issuer).origin);
    // The OP signs alice in and sends the browser back: the callback lands at B; every hop after it alternates.
    let response = await browser.send(await h.op.browser().authorize(opUrl, { login: 'alice', password: h.op.users.alice.password }), 'B');
    let replica: Replica = 'A';
    let consented = false;
    let landing: URL | undefined;
    for (let hop = 0; hop < 20 && landing === undefined; hop++) {
      if (response.status === 200) {
        const page = await response.text();
        assert.match(page, /Allow Test App/, page.slice(0, 500));
        // The consent page (shown by whichever replica the hop went to), answered at B.
        response = await browser.send(response.url, 'B', { decision: 'allow' });
        consented = true;
        continue;
      }
      assert.ok([302, 303].includes(response.status), `hop ${hop}: ${response.status} ${await response.text()}`);
      const next = nextOf(response);
      if (next.href.startsWith(REDIRECT_URI)) landing = next;
      else {
        response = await browser.send(next, replica);
        replica = replica === 'A' ? 'B' : 'A';
      }
    }
    assert.ok(landing, JSON.stringify(browser.hops));
    assert.ok(consented);
    const at = (path: RegExp) => browser.hops.filter((hop) => path.test(hop.path)).map((hop) => hop.replica);
    assert.deepEqual(at(/\/sso\/callback\//), ['B']);
    assert.deepEqual(at(/\/oauth2\/auth$/), ['A']);
    assert.ok(browser.hops.some((hop) => hop.replica === 'A') && browser.hops.some((hop) => hop.replica === 'B'));

    // The code exchange at B (matrix-js-sdk's own token request, sent to B by the "load balancer").
    const completed = await viaReplica('B', () => completeAuthorizationCodeGrant(landing.searchParams.get('code') ?? '', landing.searchParams.get('state') ?? ''));
    const first = completed.tokenResponse;
    for (const at of ['A', 'B'] as const) {
      const me = await whoamiAt(at, first.access_token);
      assert.equal(me.status, 200, JSON.stringify(me.body));
      assert.equal(me.body['user_id'], `@alice:${SERVER_NAME}`);
      assert.equal(me.body['device_id'], deviceId);
    }

    // Refresh at A rotates; the old refresh token is then refused at B.
    const refreshed = await tokenAt('A', { grant_type: 'refresh_token', refresh_token: first.refresh_token ?? '', client_id: clientId });
    assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
    assert.equal((await whoamiAt('B', refreshed.body['access_token'] ?? '')).status, 200);
    const reused = await tokenAt('B', { grant_type: 'refresh_token', refresh_token: first.refresh_token ?? '', client_id: clientId });
    assert.equal(reused.status, 400);

    // Revocation at B: dead at A at once (no replica keeps a session of its own), the device gone at the homeserver.
    const revoked = await fetch(`${urlB}/_matrix-compat-proxy/oauth2/revoke`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ token: refreshed.body['access_token'] ?? '', client_id: clientId }).toString() });
    assert.equal(revoked.status, 200);
    assert.equal((await whoamiAt('A', refreshed.body['access_token'] ?? '')).status, 401);
    assert.equal(h.homeserver.devices('alice').has(deviceId ?? ''), false);
    assert.equal((await tokenAt('A', { grant_type: 'refresh_token', refresh_token: refreshed.body['refresh_token'] ?? '', client_id: clientId })).status, 400);
  });

  test("the password form on the other replica: page at A, password checked at B (the OP's password grant), code exchanged at A", async () => {
    const metadata = await discover(h.url);
    const clientId = await register(metadata);
    const url = await authorizationUrl(h.url, metadata, clientId, { login_hint: `mxid:@bob:${SERVER_NAME}` });
    const browser = new BalancedBrowser();
    const page = await browser.send(nextOf(await browser.send(url, 'A')), 'A');
    const form = signInPageOf(await page.text());
    assert.equal(form.username, 'bob');
    let response = await browser.send(form.action, 'B', { csrf_token: form.csrfToken, username: 'bob', password: h.op.users.bob.password });
    let replica: Replica = 'A';
    let landing: URL | undefined;
    for (let hop = 0; hop < 10 && landing === undefined; hop++) {
      if (response.status === 200) {
        assert.match(await response.text(), /Allow Test App/);
        response = await browser.send(response.url, replica, { decision: 'allow' });
      } else {
        const next = nextOf(response);
        if (next.href.startsWith(REDIRECT_URI)) landing = next;
        else response = await browser.send(next, replica);
      }
      replica = replica === 'A' ? 'B' : 'A';
    }
    assert.ok(landing, JSON.stringify(browser.hops));
    const completed = await viaReplica('A', () => completeAuthorizationCodeGrant(landing.searchParams.get('code') ?? '', landing.searchParams.get('state') ?? ''));
    assert.equal((await whoamiAt('B', completed.tokenResponse.access_token)).body['user_id'], `@bob:${SERVER_NAME}`);
  });
});

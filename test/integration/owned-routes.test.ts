import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { createApp } from '../../src/app.js';
import { listenerShapeOf, ownedRoutes, type Route } from '../../src/routes.js';
import { ADMIN_TOKEN, HOMESERVER_SECRET, startProxyHarness, type Harness } from '../support/proxy-harness.js';

/**
 * The owned-route table (src/routes.ts) is the one list of what the proxy answers. These tests read the table
 * itself, so a route added to it is covered at once: every path is answered by the proxy and never reaches the
 * homeserver, and every POST route cuts a trickled body off with a 408 before closing.
 */

const BODY_DEADLINE_MS = 400;
const noReadiness = { check: async () => ({ ok: true, checks: {} }) };

/** A concrete path for a pattern: each `:param` becomes a value. */
function concrete(path: string): string {
  return path.replace(/:[A-Za-z]+/g, 'testop');
}

/** Spellings a client (or an attacker) may send for the same route; the proxy normalises all of them. */
function spellings(path: string): string[] {
  const variants = [path, `${path}/`, path.replace(/\/([^/]+)$/, '//$1'), path.replace(/\/([^/]+)$/, '/%2F$1')];
  const swapped = path.replace('/_matrix/client/v3/', '/_matrix/client/r0/');
  if (swapped !== path) variants.push(swapped);
  return [...new Set(variants)];
}

// The table differs by native_clients: hide adds the discovery 404s, serve the OAuth server's routes.
const OAUTH_SIGNING_KEY = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();

for (const nativeClients of ['hide', 'serve'] as const)
describe(`the owned-route table (native_clients: ${nativeClients})`, () => {
  let h: Harness;
  let session: { accessToken: string };
  let homeserverFacing: Server;
  let homeserverFacingUrl: string;

  before(async () => {
    h = await startProxyHarness({
      configure: (config) => {
        config['request_body_timeout'] = `${BODY_DEADLINE_MS}ms`;
        config['native_clients'] = nativeClients;
        if (nativeClients === 'serve') config['oauth_server'] = { signing_key: OAUTH_SIGNING_KEY };
      },
    });
    const login = await h.passwordLogin('alice', h.op.users.alice.password);
    assert.equal(login.status, 200, JSON.stringify(login.body));
    session = { accessToken: login.body.access_token };
    homeserverFacing = createServer(createApp(h.deps, { forward: (_req, res) => res.writeHead(502).end(), close: () => undefined }, noReadiness).homeserverFacing);
    await new Promise<void>((resolve) => homeserverFacing.listen(0, '127.0.0.1', resolve));
    homeserverFacingUrl = `http://127.0.0.1:${(homeserverFacing.address() as AddressInfo).port}`;
  });
  after(async () => {
    await new Promise<void>((resolve) => {
      homeserverFacing.close(() => resolve());
      homeserverFacing.closeAllConnections();
    });
    await h.stop();
  });

  test('every client-listener path of the table, in every spelling, is answered by the proxy and none reaches the homeserver', async () => {
    const routes = ownedRoutes(listenerShapeOf(h.deps), noReadiness).filter((route) => route.listener === 'client');
    assert.ok(routes.length >= 20, `the table has the client routes (${routes.length})`);
    h.homeserver.requestsSeen.length = 0;
    let checked = 0;
    for (const route of routes) {
      for (const path of spellings(concrete(route.path))) {
        const response = await fetch(`${h.url}${path}?probe=${checked}`, { method: route.method, redirect: 'manual', headers: { 'content-type': 'application/json' }, ...(route.method === 'GET' ? {} : { body: '{}' }) });
        await response.arrayBuffer();
        // Only the proxy's own request pipeline sets X-Request-Id; a passed-through answer would come from the double.
        assert.notEqual(response.headers.get('x-request-id'), null, `${route.method} ${path} was answered by the proxy (status ${response.status})`);
        checked++;
      }
    }
    // Only the probes carry `probe=`: the proxy's own calls (provisioning, readiness, discovery) do not count.
    const reached = h.homeserver.requestsSeen.filter((line) => line.includes('probe='));
    assert.deepEqual(reached, [], 'no owned path was passed through');
    assert.ok(checked > routes.length);
  });

  test('a path outside the table is passed through (the table is not a catch-all)', async () => {
    h.homeserver.requestsSeen.length = 0;
    const response = await fetch(`${h.url}/_matrix/client/v3/account/whoami`, { headers: { authorization: `Bearer ${session.accessToken}` } });
    await response.arrayBuffer();
    assert.ok(h.homeserver.requestsSeen.some((line) => line.startsWith('GET /_matrix/client/v3/account/whoami')));
  });

  test('every owned POST route, on both listeners, answers a trickled body with 408 before closing', async () => {
    const routes = ownedRoutes(listenerShapeOf(h.deps), noReadiness).filter((route) => route.method === 'POST' && route.listener !== 'ops');
    assert.ok(routes.some((route) => route.path.includes('backchannel-logout')), 'the back-channel logout receiver is among them');
    for (const route of routes) {
      const base = route.listener === 'client' ? h.url : homeserverFacingUrl;
      // A fresh login per route: the logout routes need a live session to reach their body.
      const token = route.metric === 'logout' ? (await h.passwordLogin('alice', h.op.users.alice.password)).body.access_token : session.accessToken;
      const { status, elapsedMs } = await trickle(base, route, authorizationFor(route, token));
      assert.ok(elapsedMs < BODY_DEADLINE_MS + 3000, `${route.method} ${route.path}: released after ${elapsedMs} ms`);
      assert.equal(status, 408, `${route.method} ${route.path} (${route.listener}) answered ${status} to a trickled body`);
    }
  });
});

function authorizationFor(route: Route, accessToken: string): string | undefined {
  if (route.path === '/oauth2/introspect') return `Bearer ${HOMESERVER_SECRET}`;
  if (route.metric === 'admin') return `Bearer ${ADMIN_TOKEN}`;
  if (route.metric === 'logout') return `Bearer ${accessToken}`;
  return undefined;
}

/** Declares 100 bytes, sends 13, then waits: returns the status the proxy answered (0: closed without one). */
async function trickle(base: string, route: Route, authorization: string | undefined): Promise<{ status: number; elapsedMs: number }> {
  const { hostname, port } = new URL(base);
  const started = Date.now();
  const socket = connect(Number(port), hostname);
  const contentType = route.style === 'matrix' ? 'application/json' : 'application/x-www-form-urlencoded';
  socket.write(
    `POST ${concrete(route.path)} HTTP/1.1\r\nHost: ${hostname}\r\nContent-Type: ${contentType}\r\nContent-Length: 100\r\n` +
      `${authorization === undefined ? '' : `Authorization: ${authorization}\r\n`}\r\n{"a":"bcdefg"`,
  );
  const received = await new Promise<string>((resolve) => {
    let text = '';
    const timer = setTimeout(() => socket.destroy(), BODY_DEADLINE_MS + 5000);
    socket.on('data', (chunk) => (text += chunk.toString()));
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(text);
    });
    socket.on('error', () => undefined);
  });
  const status = /^HTTP\/1\.1 (\d{3})/.exec(received)?.[1];
  return { status: status === undefined ? 0 : Number(status), elapsedMs: Date.now() - started };
}

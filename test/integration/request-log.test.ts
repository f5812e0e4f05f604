import { test } from 'node:test';
import assert from 'node:assert/strict';
import { freePort } from '../support/free-port.js';
import { HOMESERVER_SECRET, startProxyHarness } from '../support/proxy-harness.js';

/**
 * Every request the proxy answers itself logs through a child logger carrying its request id and face (app.ts
 * `withRequestContext`). The child is made only when a line is logged (http/request-state.ts): these check that
 * the lines still carry the right bindings, at info (a refusal) and at debug (`request.done` for every request).
 */

const LOGIN = '/_matrix/client/v3/login';

test('at debug, request.done names the request id and the face, on the client and the homeserver-facing listener', async () => {
  const homeserverPort = await freePort();
  const h = await startProxyHarness({
    captureLogs: true,
    configure: (config) => {
      config['log'] = { level: 'debug' };
      // Its own listener, as in production (homeserver.listen): its requests are the `homeserver` face.
      config['homeserver'].listen = { host: '127.0.0.1', port: homeserverPort };
    },
  });
  try {
    const flows = await fetch(`${h.url}${LOGIN}`, { headers: { 'X-Request-Id': 'req-flows-1' } });
    assert.equal(flows.status, 200);
    assert.equal(flows.headers.get('x-request-id'), 'req-flows-1');
    const refused = await fetch(`${h.homeserverFacingUrl}/oauth2/introspect`, {
      method: 'POST',
      headers: { 'X-Request-Id': 'req-introspect-1', authorization: 'Bearer not-the-secret', 'content-type': 'application/x-www-form-urlencoded' },
      body: 'token=x',
    });
    assert.equal(refused.status, 401);
    const answered = await fetch(`${h.homeserverFacingUrl}/oauth2/introspect`, {
      method: 'POST',
      headers: { authorization: `Bearer ${HOMESERVER_SECRET}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: 'token=mcpa_unknown',
    });
    assert.equal(answered.status, 200);
    const generatedId = answered.headers.get('x-request-id');
    assert.match(generatedId ?? '', /^[0-9a-f-]{36}$/);
    // What no route answers is the Matrix 404 that renderErrors renders (the check moved into it from a middleware
    // of its own, issue 19), inside the request context: the request id comes back and request.done is logged.
    const unrouted = await fetch(`${h.homeserverFacingUrl}/oauth2/nothing-here`, { method: 'POST', headers: { 'X-Request-Id': 'req-unrouted-1' } });
    assert.equal(unrouted.status, 404);
    assert.deepEqual(await unrouted.json(), { errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' });
    assert.equal(unrouted.headers.get('cache-control'), 'no-store');
    assert.equal(unrouted.headers.get('x-request-id'), 'req-unrouted-1');

    const done = (id: string) => h.logs().filter((line) => line['msg'] === 'request.done' && line['request_id'] === id);
    assert.deepEqual(
      done('req-flows-1').map((line) => [line['face'], line['method'], line['status']]),
      [['client', 'GET', 200]],
    );
    assert.deepEqual(
      done('req-introspect-1').map((line) => [line['face'], line['status']]),
      [['homeserver', 401]],
    );
    assert.deepEqual(
      done(generatedId as string).map((line) => [line['face'], line['status']]),
      [['homeserver', 200]],
    );
    assert.deepEqual(
      done('req-unrouted-1').map((line) => [line['face'], line['method'], line['status']]),
      [['homeserver', 'POST', 404]],
    );
  } finally {
    await h.stop();
  }
});

test('at info, a refusal is logged with its request id; a request that logs nothing leaves no line', async () => {
  const h = await startProxyHarness({ captureLogs: true, configure: (config) => (config['log'] = { level: 'info' }) });
  try {
    const before = h.logs().length;
    assert.equal((await fetch(`${h.url}${LOGIN}`, { headers: { 'X-Request-Id': 'req-quiet-1' } })).status, 200);
    const refused = await fetch(`${h.url}${LOGIN}`, {
      method: 'POST',
      headers: { 'X-Request-Id': 'req-refused-1', 'content-type': 'application/json' },
      body: JSON.stringify({ type: 'm.login.bogus' }),
    });
    assert.equal(refused.status, 400);
    const lines = h.logs().slice(before);
    assert.equal(lines.filter((line) => line['request_id'] === 'req-quiet-1').length, 0);
    const rejected = lines.filter((line) => line['msg'] === 'request.rejected');
    assert.equal(rejected.length, 1, JSON.stringify(lines));
    assert.equal(rejected[0]?.['request_id'], 'req-refused-1');
    assert.equal(rejected[0]?.['face'], 'client');
  } finally {
    await h.stop();
  }
});

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { AutoDiscovery } from 'matrix-js-sdk';
import { startProxyHarness, type Harness } from '../support/proxy-harness.js';

describe('client discovery (/.well-known/matrix/client)', () => {
  let h: Harness;
  before(async () => {
    h = await startProxyHarness({ configure: (config) => (config['well_known_client'] = { extra: { 'm.identity_server': { base_url: 'https://id.example.test' } } }) });
  });
  after(() => h.stop());

  test('the proxy answers it: base_url is the proxy, extra keys are added, CORS is open, nothing reaches the homeserver', async () => {
    h.homeserver.requestsSeen.length = 0;
    const response = await fetch(`${h.url}/.well-known/matrix/client`);
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('access-control-allow-origin'), '*');
    const body = (await response.json()) as Record<string, any>;
    assert.equal(body['m.homeserver'].base_url, h.config.public_baseurl);
    assert.equal(body['m.identity_server'].base_url, 'https://id.example.test');
    // native_clients: hide (the default): the homeserver's MSC2965 entry would send clients to native login at the OP.
    assert.equal(body['org.matrix.msc2965.authentication'], undefined);
    // The homeserver is asked for its own document (cached), never sent the client's request.
  });

  test("matrix-js-sdk's AutoDiscovery accepts the proxy's document, and a password login at the base URL it yields works", async () => {
    const wellKnown = (await (await fetch(`${h.url}/.well-known/matrix/client`)).json()) as Record<string, any>;
    // What AutoDiscovery.findClientConfig does after fetching the document (it only fetches over https).
    const config = await AutoDiscovery.fromDiscoveryConfig(wellKnown);
    assert.equal(config['m.homeserver'].state, AutoDiscovery.SUCCESS);
    const baseUrl = config['m.homeserver'].base_url as string;
    assert.equal(new URL(baseUrl).origin, new URL(h.url).origin);
    const login = await fetch(new URL('_matrix/client/v3/login', baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ type: 'm.login.password', identifier: { type: 'm.id.user', user: 'alice' }, password: h.op.users.alice.password }),
    });
    assert.equal(login.status, 200);
  });

  test("native_clients: relay keeps the homeserver's MSC2965 entry", async () => {
    const other = await startProxyHarness({ configure: (config) => (config['native_clients'] = 'relay') });
    try {
      const body = (await (await fetch(`${other.url}/.well-known/matrix/client`)).json()) as Record<string, any>;
      assert.equal(body['org.matrix.msc2965.authentication'].issuer, other.op.issuer);
      assert.equal(body['m.homeserver'].base_url, other.config.public_baseurl);
    } finally {
      await other.stop();
    }
  });

  test('serve: false passes it through to the homeserver', async () => {
    const other = await startProxyHarness({ configure: (config) => (config['well_known_client'] = { serve: false }) });
    try {
      other.homeserver.requestsSeen.length = 0;
      const response = await fetch(`${other.url}/.well-known/matrix/client`);
      await response.arrayBuffer();
      assert.ok(other.homeserver.requestsSeen.some((line) => line.startsWith('GET /.well-known/matrix/client')));
    } finally {
      await other.stop();
    }
  });
});

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createClient, MatrixError } from 'matrix-js-sdk';
import { AUTH_DISCOVERY_PATHS } from '../../src/oauth/hidden-auth-metadata.js';
import { SERVER_NAME, startProxyHarness, type Harness } from '../support/proxy-harness.js';

/**
 * `native_clients` decides what a native OAuth 2.0 client finds at the homeserver's auth_metadata (MSC2965):
 * `hide` (the default) answers the discovery routes with 404 M_UNRECOGNIZED so matrix-js-sdk's own discovery
 * reports "no OAuth" and the client logs in with the legacy API; `relay` lets Synapse (the double) answer with the
 * metadata it fetched from the proxy, i.e. the upstream OP's.
 */

describe('native_clients: hide (the default)', () => {
  let h: Harness;
  before(async () => {
    h = await startProxyHarness();
  });
  after(async () => {
    await h.stop();
  });

  test('the config default is hide', () => {
    assert.equal(h.config.native_clients, 'hide');
  });

  test('every discovery path is a 404 M_UNRECOGNIZED from the proxy, readable cross-origin, never reaching the homeserver', async () => {
    const seenBefore = h.homeserver.requestsSeen.length;
    for (const path of [...AUTH_DISCOVERY_PATHS, '/_matrix/client/v1/auth_metadata/', '/_matrix/client/v1//auth_metadata']) {
      const response = await h.request('GET', path, { headers: { origin: 'https://app.example' } });
      assert.equal(response.status, 404, path);
      assert.equal(response.body.errcode, 'M_UNRECOGNIZED', path);
      assert.equal(response.headers.get('access-control-allow-origin'), '*', path);
    }
    assert.deepEqual(h.homeserver.requestsSeen.slice(seenBefore), []);
  });

  test("matrix-js-sdk's getAuthMetadata() finds no OAuth server; the same client then logs in with a password", async () => {
    const client = createClient({ baseUrl: h.url });
    await assert.rejects(client.getAuthMetadata(), (err: unknown) => err instanceof MatrixError && err.errcode === 'M_UNRECOGNIZED' && err.httpStatus === 404);
    const flows = await client.loginFlows();
    assert.ok(flows.flows.some((flow) => flow.type === 'm.login.password'));
    const login = await client.loginRequest({ type: 'm.login.password', identifier: { type: 'm.id.user', user: 'alice' }, password: h.op.users.alice.password });
    assert.equal(login.user_id, `@alice:${SERVER_NAME}`);
    client.stopClient();
  });
});

describe('native_clients: relay', () => {
  let h: Harness;
  before(async () => {
    h = await startProxyHarness({ configure: (config) => (config['native_clients'] = 'relay') });
  });
  after(async () => {
    await h.stop();
  });

  test("the homeserver answers auth_metadata with the upstream OP's metadata (today's behaviour)", async () => {
    const client = createClient({ baseUrl: h.url });
    const metadata = await client.getAuthMetadata();
    assert.equal(metadata.issuer, h.op.issuer);
    const opMetadata = (await (await fetch(`${h.op.issuer.replace(/\/$/, '')}/.well-known/openid-configuration`)).json()) as { authorization_endpoint: string };
    assert.equal(metadata.authorization_endpoint, opMetadata.authorization_endpoint);
    assert.ok(h.homeserver.requestsSeen.some((line) => line.includes('/auth_metadata')), 'passed through to the homeserver');
    client.stopClient();
  });
});

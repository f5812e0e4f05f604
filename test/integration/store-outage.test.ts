import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HOMESERVER_SECRET, startProxyHarness } from '../support/proxy-harness.js';

test('Redis down → 503 with Retry-After on the client API and 503 to the homeserver, never 500 or a logout', async () => {
  const h = await startProxyHarness({ store: 'redis', privateRedis: true });
  try {
    const login = await h.passwordLogin('alice', h.op.users.alice.password);
    assert.equal(login.status, 200);
    await h.stopRedis();

    const logout = await h.request('POST', '/_matrix/client/v3/logout', { token: login.body.access_token });
    assert.equal(logout.status, 503, JSON.stringify(logout.body));
    assert.equal(logout.body.errcode, 'M_UNKNOWN');
    assert.equal(logout.headers.get('retry-after'), '5');

    const refresh = await h.request('POST', '/_matrix/client/v3/refresh', { body: { refresh_token: login.body.access_token.replace('mcpa_', 'mcpr_') } });
    assert.notEqual(refresh.status, 500);

    const introspection = await fetch(`${h.homeserverFacingUrl}/oauth2/introspect`, {
      method: 'POST',
      headers: { authorization: `Bearer ${HOMESERVER_SECRET}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: login.body.access_token }),
    });
    assert.equal(introspection.status, 503);
  } finally {
    await h.stop();
  }
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startProxyHarness } from '../support/proxy-harness.js';

test('SSO starts are throttled per IP before anything is stored (429 page with Retry-After)', async () => {
  const h = await startProxyHarness({
    configure: (config) => {
      config['rate_limits'] = { ...config['rate_limits'], sso_per_ip: { burst: 2, per_second: 0.01 } };
    },
  });
  try {
    const start = () => fetch(`${h.url}/_matrix/client/v3/login/sso/redirect?redirectUrl=${encodeURIComponent('https://client.example/done')}`, { redirect: 'manual' });
    assert.equal((await start()).status, 302);
    assert.equal((await start()).status, 302);
    const limited = await start();
    assert.equal(limited.status, 429);
    assert.match(limited.headers.get('content-type') ?? '', /text\/html/);
    assert.ok(Number(limited.headers.get('retry-after')) > 0);
    assert.match(await limited.text(), /Too many sign-in attempts/);
  } finally {
    await h.stop();
  }
});

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { IDP_ID, startProxyHarness, type Harness } from '../support/proxy-harness.js';
import { ProxyBrowser, locationOf } from '../support/proxy-browser.js';

/** Issue 12 #5: every SSO route answers a hung (SIGSTOPped) Redis with the 503 page, and no sign-in is lost to it. */

const REDIRECT_URL = 'https://client.example/sso-done';

describe('SSO pages with Redis frozen', () => {
  let h: Harness;
  before(async () => {
    h = await startProxyHarness({ store: 'redis', privateRedis: true });
  });
  after(async () => {
    h.thawRedis();
    await h.stop();
  });

  test('every SSO route answers 503 with the store page; the sign-in in flight survives the outage', async () => {
    const browser = new ProxyBrowser(h.url);
    const started = await browser.get(`${h.url}/_matrix/client/v3/login/sso/redirect?redirectUrl=${encodeURIComponent(REDIRECT_URL)}`);
    assert.equal(started.status, 302);
    const callbackUrl = await h.op.browser().authorize(locationOf(started), { login: 'alice', password: h.op.users.alice.password });

    h.freezeRedis();
    const id = 'A'.repeat(32);
    const routes: [string, () => Promise<Response>][] = [
      ['GET sso/redirect', () => new ProxyBrowser(h.url).get(`${h.url}/_matrix/client/v3/login/sso/redirect?redirectUrl=${encodeURIComponent(REDIRECT_URL)}`)],
      ['GET sso/redirect/{idp}', () => new ProxyBrowser(h.url).get(`${h.url}/_matrix/client/v3/login/sso/redirect/${IDP_ID}?redirectUrl=${encodeURIComponent(REDIRECT_URL)}`)],
      ['GET sso/callback', () => browser.get(callbackUrl)],
      ['GET sso/confirm', () => browser.get(`${h.url}/_matrix-compat-proxy/sso/confirm/${id}`)],
      ['POST sso/confirm', () => browser.post(`${h.url}/_matrix-compat-proxy/sso/confirm/${id}`, { csrf_token: 'x' })],
    ];
    const answers: Record<string, string> = {};
    for (const [name, call] of routes) {
      const response = await call();
      const body = await response.text();
      answers[name] = `${response.status} ${response.headers.get('content-type')?.split(';')[0]} ${/The server is busy/.test(body) ? 'store page' : 'other page'}`;
    }
    h.thawRedis();
    assert.deepEqual(answers, Object.fromEntries(routes.map(([name]) => [name, '503 text/html store page'])));

    // The callback that failed against the frozen store did not use the sign-in up once Redis ran it.
    await new Promise((resolve) => setTimeout(resolve, 200));
    const retried = await browser.get(callbackUrl);
    assert.equal(retried.status, 302, await retried.text());
    assert.match(locationOf(retried).pathname, /\/sso\/confirm\//);
  });
});

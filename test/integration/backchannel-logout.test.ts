import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { randomUUID } from 'node:crypto';
import { IDP_ID, SERVER_NAME, startProxyHarness, type Harness } from '../support/proxy-harness.js';
import type { TestOpBrowser, TestOpUser } from '../support/test-op.js';
import { parseToken } from '../../src/sessions/tokens.js';
import type { Session } from '../../src/sessions/session.js';
import { ProxyBrowser, locationOf } from '../support/proxy-browser.js';

/**
 * OpenID Connect Back-Channel Logout 1.0 through the proxy's HTTP receiver, with logout tokens sent by the real
 * in-process OP (oidc-provider) and, for the rules a real OP never breaks, signed by hand with the OP's keys.
 * "The session is over" is always checked where it matters: at the homeserver double, which asks the proxy's
 * introspection like Synapse does.
 */

const EVENT = 'http://schemas.openid.net/event/backchannel-logout';
const receiverPath = (idpId = IDP_ID) => `/_matrix-compat-proxy/backchannel-logout/${idpId}`;

async function postLogoutToken(h: Harness, token: string | undefined, options: { idpId?: string; contentType?: string; body?: string } = {}) {
  const body = options.body ?? (token === undefined ? '' : new URLSearchParams({ logout_token: token }).toString());
  const response = await fetch(`${h.url}${receiverPath(options.idpId)}`, {
    method: 'POST',
    headers: { 'content-type': options.contentType ?? 'application/x-www-form-urlencoded' },
    body,
  });
  const text = await response.text();
  return { status: response.status, cacheControl: response.headers.get('cache-control'), body: text === '' ? undefined : (JSON.parse(text) as Record<string, unknown>) };
}

interface LegacyLogin {
  readonly accessToken: string;
  readonly refreshToken?: string;
  readonly deviceId: string;
  readonly sessionId: string;
  readonly session: Session;
  readonly sid: string;
}

async function passwordLogin(h: Harness, user: TestOpUser, extra: Record<string, unknown> = {}): Promise<LegacyLogin> {
  const login = await h.passwordLogin(user.username, user.password, extra);
  assert.equal(login.status, 200, JSON.stringify(login.body));
  const sessionId = parseToken(login.body.access_token)?.sessionId ?? '';
  const session = await h.deps.sessions.get(sessionId);
  assert.ok(session !== undefined && session.origin.kind === 'password');
  assert.ok(session.origin.sid, 'the OP reported the session id of its login');
  return {
    accessToken: login.body.access_token,
    ...(login.body.refresh_token === undefined ? {} : { refreshToken: login.body.refresh_token }),
    deviceId: login.body.device_id,
    sessionId,
    session,
    sid: session.origin.sid,
  };
}

/** A client request as the homeserver sees it (straight to the double, which introspects at the proxy). */
async function whoami(h: Harness, accessToken: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(`${h.homeserver.url}/_matrix/client/v3/account/whoami`, { headers: { authorization: `Bearer ${accessToken}` } });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

async function assertStillLoggedIn(h: Harness, login: LegacyLogin, localpart = 'alice'): Promise<void> {
  assert.ok(await h.deps.sessions.get(login.sessionId), 'the session still exists');
  assert.equal((await whoami(h, login.accessToken)).status, 200);
  assert.ok(h.homeserver.devices(localpart).has(login.deviceId), 'the device still exists');
}

async function assertLoggedOut(h: Harness, login: LegacyLogin, localpart = 'alice'): Promise<void> {
  assert.equal(await h.deps.sessions.get(login.sessionId), undefined, 'the session is gone');
  assert.equal(h.homeserver.devices(localpart).has(login.deviceId), false, 'the device is gone at the homeserver');
  const rejected = await whoami(h, login.accessToken);
  assert.equal(rejected.status, 401);
  assert.equal(rejected.body['errcode'], 'M_UNKNOWN_TOKEN');
}



/** SSO up to the confirmation page; the OP browser is returned so the test can log out at the OP afterwards. */
async function ssoUntilConfirmation(h: Harness, user: TestOpUser): Promise<{ browser: ProxyBrowser; opBrowser: TestOpBrowser; confirmationUrl: URL }> {
  const browser = new ProxyBrowser(h.url);
  const redirect = await browser.get(`/_matrix/client/v3/login/sso/redirect/${IDP_ID}?redirectUrl=${encodeURIComponent('https://client.example/done')}`);
  assert.equal(redirect.status, 302);
  const opBrowser = h.op.browser();
  const callbackUrl = await opBrowser.authorize(locationOf(redirect), { login: user.username, password: user.password });
  const callback = await browser.get(callbackUrl);
  assert.equal(callback.status, 302, await callback.text());
  return { browser, opBrowser, confirmationUrl: locationOf(callback) };
}

/** Presses "Continue" on the confirmation page; the login token, if the proxy still hands one out. */
async function confirmSso(browser: ProxyBrowser, confirmationUrl: URL): Promise<string | undefined> {
  const shown = await browser.get(confirmationUrl);
  const page = await shown.text();
  const csrf = /name="csrf_token" value="([^"]+)"/.exec(page)?.[1];
  if (shown.status !== 200 || csrf === undefined) return undefined;
  const submitted = await browser.post(confirmationUrl, { csrf_token: csrf });
  if (submitted.status !== 303) return undefined;
  return locationOf(submitted).searchParams.get('loginToken') ?? undefined;
}

function tokenLogin(h: Harness, token: string) {
  return h.request('POST', '/_matrix/client/v3/login', { body: { type: 'm.login.token', token } });
}

describe('back-channel logout (hard mode, the default)', () => {
  let h: Harness;

  before(async () => {
    h = await startProxyHarness({
      configure: (config) => {
        config['oidc_providers'].push({ ...config['oidc_providers'][0], idp_id: 'no-bcl', idp_name: 'No BCL', backchannel_logout_enabled: false });
      },
    });
  });
  after(() => h.stop());

  describe('§2.6: every invalid logout token gets 400 and changes nothing', () => {
    let victim: LegacyLogin;
    before(async () => {
      victim = await passwordLogin(h, h.op.users.alice);
    });

    const invalid: [string, () => Promise<string>][] = [
      ['missing events', () => h.op.signJwt(withoutClaim(h.op.logoutTokenClaims({ sid: victim.sid }), 'events'))],
      ['events without the back-channel logout member', () => h.op.signJwt(h.op.logoutTokenClaims({ sid: victim.sid, events: { 'http://schemas.openid.net/event/other': {} } }))],
      ['events member not a JSON object', () => h.op.signJwt(h.op.logoutTokenClaims({ sid: victim.sid, events: { [EVENT]: 'yes' } }))],
      ['nonce present', () => h.op.signJwt(h.op.logoutTokenClaims({ sid: victim.sid, nonce: 'n-0S6_WzA2Mj' }))],
      ['wrong aud', () => h.op.signJwt(h.op.logoutTokenClaims({ sid: victim.sid, aud: 'some-other-client' }))],
      ['wrong iss', () => h.op.signJwt(h.op.logoutTokenClaims({ sid: victim.sid, iss: 'https://op.evil.example/' }))],
      ['iat far in the future', () => h.op.signJwt(h.op.logoutTokenClaims({ sid: victim.sid, iat: Math.floor(Date.now() / 1000) + 3600, exp: Math.floor(Date.now() / 1000) + 7200 }))],
      ['expired (exp in the past)', () => h.op.signJwt(h.op.logoutTokenClaims({ sid: victim.sid, iat: Math.floor(Date.now() / 1000) - 600, exp: Math.floor(Date.now() / 1000) - 300 }))],
      ['iat missing', () => h.op.signJwt(withoutClaim(h.op.logoutTokenClaims({ sid: victim.sid }), 'iat'))],
      ['neither sub nor sid', () => h.op.signJwt(withoutClaim(withoutClaim(h.op.logoutTokenClaims(), 'sub'), 'sid'))],
      ['jti missing', () => h.op.signJwt(withoutClaim(h.op.logoutTokenClaims({ sid: victim.sid }), 'jti'))],
      ['bad signature (same kid, other key)', () => h.op.signJwt(h.op.logoutTokenClaims({ sid: victim.sid }), { key: 'unpublished' })],
      ['HS256 with the client secret while the OP signs RS256 (algorithm confusion)', () => h.op.signJwt(h.op.logoutTokenClaims({ sid: victim.sid }), { key: 'client_secret' })],
      ['alg none', async () => unsignedJwt(h.op.logoutTokenClaims({ sid: victim.sid }))],
      ['not a JWT at all', async () => 'not-a-jwt'],
    ];
    for (const [rule, makeToken] of invalid) {
      test(rule, async () => {
        const answer = await postLogoutToken(h, await makeToken());
        assert.equal(answer.status, 400, JSON.stringify(answer.body));
        assert.equal(answer.body?.['error'], 'invalid_request');
        assert.equal(typeof answer.body?.['error_description'], 'string');
        assert.equal(answer.cacheControl, 'no-store');
        await assertStillLoggedIn(h, victim);
      });
    }

    test('an ID token posted as a logout token (a real one, from the real OP)', async () => {
      let idToken: string | undefined;
      h.op.interceptTokenResponses((body) => {
        idToken = body['id_token'] as string;
        return body;
      });
      try {
        await passwordLogin(h, h.op.users.bob);
      } finally {
        h.op.interceptTokenResponses(undefined);
      }
      assert.ok(idToken);
      const answer = await postLogoutToken(h, idToken);
      assert.equal(answer.status, 400);
      assert.equal(answer.body?.['error'], 'invalid_request');
      await assertStillLoggedIn(h, victim);
    });

    test('no logout_token, two of them, or a JSON body', async () => {
      const token = await h.op.signJwt(h.op.logoutTokenClaims({ sid: victim.sid }));
      for (const request of [
        { token: undefined },
        { token: undefined, body: `logout_token=${token}&logout_token=${token}` },
        { token: undefined, body: JSON.stringify({ logout_token: token }), contentType: 'application/json' },
      ]) {
        const answer = await postLogoutToken(h, request.token, request);
        assert.equal(answer.status, 400);
        assert.equal(answer.body?.['error'], 'invalid_request');
      }
      await assertStillLoggedIn(h, victim);
    });

    test('an unknown sid: 200, and no session is touched', async () => {
      const answer = await postLogoutToken(h, await h.op.signJwt(h.op.logoutTokenClaims({ sid: randomUUID() })));
      assert.equal(answer.status, 200);
      assert.equal(answer.cacheControl, 'no-store');
      assert.equal(answer.body, undefined);
      await assertStillLoggedIn(h, victim);
    });

    test('a replayed jti: the first delivery works, the same token again is refused', async () => {
      const target = await passwordLogin(h, h.op.users.alice);
      const token = await h.op.signJwt(h.op.logoutTokenClaims({ sid: target.sid }));
      assert.equal((await postLogoutToken(h, token)).status, 200);
      await assertLoggedOut(h, target);
      const replay = await postLogoutToken(h, token);
      assert.equal(replay.status, 400);
      assert.match(String(replay.body?.['error_description']), /already used/);
      await assertStillLoggedIn(h, victim);
    });
  });

  test('providers without backchannel_logout_enabled, and unknown providers: 404', async () => {
    const token = await h.op.signJwt(h.op.logoutTokenClaims());
    assert.equal((await postLogoutToken(h, token, { idpId: 'no-bcl' })).status, 404);
    assert.equal((await postLogoutToken(h, token, { idpId: 'nobody' })).status, 404);
  });

  test('an admin ends the OP session: the OP sends the logout token, the device is gone, the token fails at the homeserver', async (t) => {
    const login = await passwordLogin(h, h.op.users.alice);
    const other = await passwordLogin(h, h.op.users.alice);
    assert.equal((await whoami(h, login.accessToken)).status, 200, 'cached at the homeserver as active');

    const started = performance.now();
    assert.equal(await h.op.endSessions({ sid: login.sid }), 1);
    let firstRejection: number | undefined;
    for (let attempt = 0; attempt < 100 && firstRejection === undefined; attempt++) {
      if ((await whoami(h, login.accessToken)).status === 401) firstRejection = performance.now() - started;
    }
    assert.ok(firstRejection !== undefined);
    // The measurement the issue asks for (reported, not asserted tightly: it depends on the machine).
    t.diagnostic(`OP-side logout → first 401 at the homeserver double: ${firstRejection.toFixed(1)} ms`);

    const delivery = h.op.backchannelDeliveries.at(-1);
    assert.deepEqual({ ok: delivery?.ok, sid: delivery?.sid }, { ok: true, sid: login.sid });
    await assertLoggedOut(h, login);
    // Another OP session of the same user is not touched.
    await assertStillLoggedIn(h, other);
  });

  test('a homeserver that cannot remove the device: 400, and the OP’s retry of the same token works', async () => {
    const login = await passwordLogin(h, h.op.users.alice);
    const token = await h.op.signJwt(h.op.logoutTokenClaims({ sid: login.sid }));
    // Every attempt of the adapter (it retries transient failures) meets a homeserver that is down.
    h.homeserver.failProvisioning('delete_device', 503, 4);
    const failed = await postLogoutToken(h, token);
    assert.equal(failed.status, 400);
    assert.equal(failed.body?.['error'], 'temporarily_unavailable');
    assert.ok(await h.deps.sessions.get(login.sessionId), 'nothing half-done: the session is still there to be ended');
    const retried = await postLogoutToken(h, token);
    assert.equal(retried.status, 200, 'the jti of an unprocessed token is not remembered');
    await assertLoggedOut(h, login);
  });

  test('a logout token with only sub ends every session of that subject at this provider', async () => {
    const first = await passwordLogin(h, h.op.users.bob);
    const second = await passwordLogin(h, h.op.users.bob);
    const alice = await passwordLogin(h, h.op.users.alice);
    const answer = await postLogoutToken(h, await h.op.signJwt(withoutClaim(h.op.logoutTokenClaims({ sub: h.op.users.bob.sub }), 'sid')));
    assert.equal(answer.status, 200);
    await assertLoggedOut(h, first, 'bob');
    await assertLoggedOut(h, second, 'bob');
    await assertStillLoggedIn(h, alice);
  });

  test('sid of one subject with the sub of another: nothing ends', async () => {
    const alice = await passwordLogin(h, h.op.users.alice);
    const answer = await postLogoutToken(h, await h.op.signJwt(h.op.logoutTokenClaims({ sid: alice.sid, sub: h.op.users.bob.sub })));
    assert.equal(answer.status, 200);
    await assertStillLoggedIn(h, alice);
  });

  test('refresh and logout of a back-channel-logged-out session are refused', async () => {
    const login = await passwordLogin(h, h.op.users.alice, { refresh_token: true });
    await h.op.sendBackchannelLogout({ sub: h.op.users.alice.sub, sid: login.sid });
    const refresh = await h.request('POST', '/_matrix/client/v3/refresh', { body: { refresh_token: login.refreshToken } });
    assert.equal(refresh.status, 401);
    assert.equal(refresh.body.errcode, 'M_UNKNOWN_TOKEN');
    const logout = await h.request('POST', '/_matrix/client/v3/logout', { token: login.accessToken });
    assert.equal(logout.status, 401);
    assert.equal(logout.body.soft_logout, undefined, 'hard logout: no soft_logout flag');
  });

  test('a login token issued before the logout and not yet redeemed is void', async () => {
    const login = await passwordLogin(h, h.op.users.alice);
    const origin = login.session.origin as Exclude<Session['origin'], { kind: 'appservice' | 'imported' }>;
    const grantOf = (sid: string) => ({ localpart: 'alice', origin: { kind: 'sso' as const, idpId: IDP_ID, issuer: origin.issuer, sub: origin.sub, sid, lastValidatedAt: Date.now() } });
    const ttl = h.config.sessions.login_token_lifetime;
    const doomedSid = randomUUID();
    const issuedBefore = await h.deps.loginTokens.mint(grantOf(doomedSid), ttl);
    // A grant the OP made before the logout, turned into a token only after it (an SSO confirmation in flight).
    const grantInFlight = grantOf(doomedSid);
    const unrelated = await h.deps.loginTokens.mint(grantOf(randomUUID()), ttl);

    assert.equal((await postLogoutToken(h, await h.op.signJwt(h.op.logoutTokenClaims({ sid: doomedSid, sub: origin.sub })))).status, 200);
    const issuedAfter = await h.deps.loginTokens.mint(grantInFlight, ttl);

    for (const token of [issuedBefore, issuedAfter]) {
      const refused = await tokenLogin(h, token);
      assert.equal(refused.status, 403, JSON.stringify(refused.body));
      assert.equal(refused.body.errcode, 'M_FORBIDDEN');
    }
    const ok = await tokenLogin(h, unrelated);
    assert.equal(ok.status, 200, 'a token of another OP session still works');
    assert.equal(ok.body.user_id, `@alice:${SERVER_NAME}`);
  });

  test('RP-initiated logout at the OP while the SSO login waits on its confirmation page: no session comes of it', async () => {
    const { browser, opBrowser, confirmationUrl } = await ssoUntilConfirmation(h, h.op.users.bob);
    const deliveriesBefore = h.op.backchannelDeliveries.length;
    await opBrowser.logout({ clientId: h.op.clientId });
    assert.ok(h.op.backchannelDeliveries.length > deliveriesBefore, 'the OP sent a logout token');
    assert.equal(h.op.backchannelDeliveries.at(-1)?.ok, true);

    const loginToken = await confirmSso(browser, confirmationUrl);
    if (loginToken !== undefined) {
      const refused = await tokenLogin(h, loginToken);
      assert.equal(refused.status, 403, JSON.stringify(refused.body));
    }
  });

  test('RP-initiated logout at the OP ends the legacy session made by SSO', async (t) => {
    const { browser, opBrowser, confirmationUrl } = await ssoUntilConfirmation(h, h.op.users.bob);
    const loginToken = await confirmSso(browser, confirmationUrl);
    assert.ok(loginToken);
    const login = await tokenLogin(h, loginToken);
    assert.equal(login.status, 200, JSON.stringify(login.body));
    assert.equal((await whoami(h, login.body.access_token)).status, 200);

    const started = performance.now();
    await opBrowser.logout({ clientId: h.op.clientId });
    const rejected = await whoami(h, login.body.access_token);
    const elapsed = performance.now() - started;
    assert.equal(rejected.status, 401);
    t.diagnostic(`RP-initiated logout at the OP → first 401 at the homeserver double: ${elapsed.toFixed(1)} ms`);
    assert.equal(h.homeserver.devices('bob').has(login.body.device_id), false);
  });
});

describe('back-channel logout in soft mode', () => {
  let h: Harness;
  before(async () => {
    h = await startProxyHarness({ configure: (config) => (config['oidc_providers'][0]['backchannel_logout_mode'] = 'soft') });
  });
  after(() => h.stop());

  test('the tokens die with soft_logout: true, the device stays, a new login on it replaces the session', async () => {
    const login = await passwordLogin(h, h.op.users.alice, { refresh_token: true });
    assert.equal(await h.op.endSessions({ sid: login.sid }), 1);

    assert.ok(h.homeserver.devices('alice').has(login.deviceId), 'the device (and its E2EE keys) stays');
    const session = await h.deps.sessions.get(login.sessionId);
    assert.ok(session?.softLoggedOut);
    assert.equal(session.origin.kind !== 'appservice' && session.origin.kind !== 'imported' && session.origin.sealedOpRefreshToken, undefined, 'the OP refresh token is not kept');

    // Synapse caches an active answer for up to 2 minutes and only drops it when the device goes; in soft mode the
    // device stays, so the homeserver sees the logout when its cache entry ends (a restart here).
    h.homeserver.forgetIntrospections();
    const atHomeserver = await whoami(h, login.accessToken);
    assert.equal(atHomeserver.status, 401);
    assert.equal(atHomeserver.body['errcode'], 'M_UNKNOWN_TOKEN');

    // The proxy's own endpoint says so explicitly (Synapse's 401 for a token its auth service calls inactive never
    // carries soft_logout: true; POST /logout accepts a soft-logged-out token, as Synapse does).
    const refresh = await h.request('POST', '/_matrix/client/v3/refresh', { body: { refresh_token: login.refreshToken } });
    assert.equal(refresh.status, 401);
    assert.equal(refresh.body.errcode, 'M_UNKNOWN_TOKEN');
    assert.equal(refresh.body.soft_logout, true);

    const again = await h.passwordLogin('alice', h.op.users.alice.password, { device_id: login.deviceId });
    assert.equal(again.status, 200, JSON.stringify(again.body));
    assert.equal(again.body.device_id, login.deviceId);
    assert.equal(await h.deps.sessions.get(login.sessionId), undefined, 'the soft-logged-out session was replaced');
    assert.ok(h.homeserver.devices('alice').has(login.deviceId));
    assert.equal((await whoami(h, again.body.access_token)).status, 200);
  });
});

function withoutClaim(claims: Record<string, unknown>, name: string): Record<string, unknown> {
  const { [name]: _removed, ...rest } = claims;
  return rest;
}

function unsignedJwt(claims: Record<string, unknown>): string {
  const part = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
  return `${part({ alg: 'none', typ: 'logout+jwt' })}.${part(claims)}.`;
}

describe('the jti memory is bounded (issue 12 #8)', () => {
  let h: Harness;
  before(async () => {
    h = await startProxyHarness({ store: 'redis' });
  });
  after(() => h.stop());

  test('a validly signed token with a huge exp is processed and its jti kept at most a day; one issued days ago is refused', async () => {
    const now = Math.floor(Date.now() / 1000);
    const victim = await passwordLogin(h, h.op.users.alice);
    const huge = await postLogoutToken(h, await h.op.signJwt(h.op.logoutTokenClaims({ sid: victim.sid, iat: now, exp: now + 10 ** 11 })));
    assert.equal(huge.status, 200, JSON.stringify(huge.body));
    const redis = new Redis(h.redisUrl!);
    try {
      const keys = await redis.keys('*backchannel-jti:*');
      const ttls = await Promise.all(keys.map((key) => redis.pttl(key)));
      assert.ok(ttls.length > 0 && ttls.every((ttl) => ttl > 0 && ttl <= 24 * 3600_000), `jti TTLs: ${ttls.join(', ')}`);
    } finally {
      redis.disconnect();
    }
    const old = await postLogoutToken(h, await h.op.signJwt(h.op.logoutTokenClaims({ sid: victim.sid, iat: now - 2 * 24 * 3600, exp: now + 3600 })));
    assert.equal(old.status, 400);
    assert.equal(old.body?.['error'], 'invalid_request');
  });
});

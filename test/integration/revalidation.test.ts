import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { buildDeps } from '../../src/build-deps.js';
import { introspect } from '../../src/homeserver/introspection.js';
import { createLogger } from '../../src/observability/logger.js';
import { createMetrics } from '../../src/observability/metrics.js';
import type { Session } from '../../src/sessions/session.js';
import { parseToken } from '../../src/sessions/tokens.js';
import { FakeClock } from '../support/fake-clock.js';
import { HOMESERVER_SECRET, startProxyHarness, type Harness } from '../support/proxy-harness.js';

/**
 * Re-validation of a legacy session's upstream grant at the real OP (oidc-provider), driven through the homeserver
 * double (which introspects like Synapse) with a fake clock: nothing sleeps to reach an interval or a grace period.
 * The double caches active answers for 2 minutes like Synapse; every interval here is longer, so a test that moves
 * the clock also lets the double forget (`forgetIntrospections`), as the cache entry would have run out.
 */

const INTERVAL_MS = 5 * 60_000;
const GRACE_MS = 60 * 60_000;

interface Login {
  readonly accessToken: string;
  readonly refreshToken?: string;
  readonly deviceId: string;
  readonly sessionId: string;
}

/** Without `refreshable` the access token never expires on its own, so moving the clock cannot end it by itself. */
async function login(h: Harness, username: 'alice' | 'bob', refreshable = false): Promise<Login> {
  const answer = await h.passwordLogin(username, h.op.users[username].password, { refresh_token: refreshable });
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  return {
    accessToken: answer.body.access_token,
    ...(refreshable ? { refreshToken: answer.body.refresh_token } : {}),
    deviceId: answer.body.device_id,
    sessionId: parseToken(answer.body.access_token)?.sessionId ?? '',
  };
}

async function whoami(h: Harness, accessToken: string): Promise<{ status: number; errcode: unknown }> {
  h.homeserver.forgetIntrospections();
  const response = await fetch(`${h.homeserver.url}/_matrix/client/v3/account/whoami`, { headers: { authorization: `Bearer ${accessToken}` } });
  const body = (await response.json()) as Record<string, unknown>;
  return { status: response.status, errcode: body['errcode'] };
}

async function introspectOverHttp(h: Harness, accessToken: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(`${h.homeserverFacingUrl}/oauth2/introspect`, {
    method: 'POST',
    headers: { authorization: `Bearer ${HOMESERVER_SECRET}`, 'content-type': 'application/x-www-form-urlencoded', 'x-mas-supports-device-id': '1' },
    body: new URLSearchParams({ token: accessToken }).toString(),
  });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

function refreshGrants(h: Harness): number {
  return h.op.requestCount('/token', 'refresh_token');
}

async function originOf(h: Harness, sessionId: string): Promise<Exclude<Session['origin'], { kind: 'appservice' | 'imported' }>> {
  const session = await h.deps.sessions.get(sessionId);
  assert.ok(session !== undefined && session.origin.kind === 'password');
  return session.origin;
}

async function revalidationCount(h: Harness, outcome: string): Promise<number> {
  const metric = await h.deps.metrics.revalidations.get();
  return metric.values.find((value) => value.labels['outcome'] === outcome)?.value ?? 0;
}

describe('re-validation at the OP (memory store)', () => {
  const clock = new FakeClock(Date.now());
  let h: Harness;
  before(async () => {
    h = await startProxyHarness({ clock, op: { rotateRefreshTokens: true } });
  });
  after(() => h.stop());

  test('within the interval nothing is asked; after it one refresh grant, the rotated OP token is kept', async () => {
    const alice = await login(h, 'alice');
    const before = await originOf(h, alice.sessionId);
    const grantsBefore = refreshGrants(h);

    clock.advance(INTERVAL_MS - 1000);
    assert.equal((await whoami(h, alice.accessToken)).status, 200);
    assert.equal(refreshGrants(h), grantsBefore, 'not due yet: no OP call');

    clock.advance(2000);
    assert.equal((await whoami(h, alice.accessToken)).status, 200);
    assert.equal(refreshGrants(h), grantsBefore + 1);
    const after = await originOf(h, alice.sessionId);
    assert.equal(after.lastValidatedAt, clock.now());
    assert.notEqual(after.sealedOpRefreshToken, before.sealedOpRefreshToken, 'the rotated OP refresh token replaced the old one');

    // The stored token is the live one: the next check works too (the OP would refuse a reused rotated token).
    clock.advance(INTERVAL_MS);
    assert.equal((await whoami(h, alice.accessToken)).status, 200);
    assert.equal(refreshGrants(h), grantsBefore + 2);
  });

  test('a user disabled at the OP: the session ends at the next use after the interval', async () => {
    const bob = await login(h, 'bob');
    const endedBefore = await revalidationCount(h, 'ended');
    h.op.disableUser('bob');
    try {
      assert.equal((await whoami(h, bob.accessToken)).status, 200, 'until the interval is over the last check stands');
      clock.advance(INTERVAL_MS);
      const rejected = await whoami(h, bob.accessToken);
      assert.equal(rejected.status, 401);
      assert.equal(rejected.errcode, 'M_UNKNOWN_TOKEN');
      assert.equal(await h.deps.sessions.get(bob.sessionId), undefined);
      assert.equal(h.homeserver.devices('bob').has(bob.deviceId), false, 'device removed at the homeserver');
      assert.equal(await revalidationCount(h, 'ended'), endedBefore + 1);

      // No side path: no new session by password either.
      const again = await h.passwordLogin('bob', h.op.users.bob.password);
      assert.equal(again.status, 403);
    } finally {
      h.op.enableUser('bob');
    }
  });

  test('/refresh re-validates when due: a disabled user cannot keep the session alive by refreshing', async () => {
    const bob = await login(h, 'bob', true);
    h.op.disableUser('bob');
    try {
      clock.advance(INTERVAL_MS);
      const refreshed = await h.request('POST', '/_matrix/client/v3/refresh', { body: { refresh_token: bob.refreshToken } });
      assert.equal(refreshed.status, 401);
      assert.equal(refreshed.body.errcode, 'M_UNKNOWN_TOKEN');
      assert.equal(await h.deps.sessions.get(bob.sessionId), undefined);
    } finally {
      h.op.enableUser('bob');
    }
    // And an enabled user refreshes normally when due.
    const alice = await login(h, 'alice', true);
    clock.advance(INTERVAL_MS);
    const refreshed = await h.request('POST', '/_matrix/client/v3/refresh', { body: { refresh_token: alice.refreshToken } });
    assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
    assert.equal((await originOf(h, alice.sessionId)).lastValidatedAt, clock.now());
  });

  test('OP unreachable: the session keeps working for the grace period, then 503 (never a logout), and recovers', async () => {
    const alice = await login(h, 'alice');
    const refreshing = await login(h, 'alice', true);
    clock.advance(INTERVAL_MS);
    h.op.setDown(true);
    try {
      // While down the OP answers before parsing anything: count token endpoint requests, not grant types.
      const tokenRequestsBefore = h.op.requestCount('/token');
      assert.equal((await whoami(h, alice.accessToken)).status, 200, 'within the grace period');
      assert.equal(h.op.requestCount('/token'), tokenRequestsBefore + 1, 'the OP was asked');
      assert.equal((await whoami(h, alice.accessToken)).status, 200);
      assert.equal(h.op.requestCount('/token'), tokenRequestsBefore + 1, 'backing off: no second OP call right away');

      clock.advance(GRACE_MS - INTERVAL_MS - 1000);
      assert.equal((await whoami(h, alice.accessToken)).status, 200, 'still within the grace period');

      clock.advance(2000);
      const closed = await whoami(h, alice.accessToken);
      assert.equal(closed.status, 503, 'fails closed with 503, not 401');
      const direct = await introspectOverHttp(h, alice.accessToken);
      assert.equal(direct.status, 503);
      assert.notEqual(direct.body['active'], false);
      const refreshed = await h.request('POST', '/_matrix/client/v3/refresh', { body: { refresh_token: refreshing.refreshToken } });
      assert.equal(refreshed.status, 503);
      assert.ok(await h.deps.sessions.get(alice.sessionId), 'the session was not ended');
      assert.ok(await h.deps.sessions.get(refreshing.sessionId), 'the session was not ended');
      assert.ok(h.homeserver.devices('alice').has(alice.deviceId));
    } finally {
      h.op.setDown(false);
    }
    // The OP is back: after the back-off the next use re-validates and the session works again.
    clock.advance(60_000);
    assert.equal((await whoami(h, alice.accessToken)).status, 200);
    assert.equal((await originOf(h, alice.sessionId)).lastValidatedAt, clock.now());
  });

  test('a removed provider cannot vouch: grace, then 503', async () => {
    const alice = await login(h, 'alice');
    await h.deps.sessions.update(alice.sessionId, (session) =>
      session.origin.kind === 'appservice' ? session : { ...session, origin: { ...session.origin, idpId: 'removed-provider' } },
    );
    clock.advance(INTERVAL_MS);
    assert.equal((await introspectOverHttp(h, alice.accessToken)).body['active'], true);
    clock.advance(GRACE_MS);
    assert.equal((await introspectOverHttp(h, alice.accessToken)).status, 503);
  });
});

describe('re-validation under concurrency (Redis store, two replicas)', () => {
  const clock = new FakeClock(Date.now());
  let h: Harness;
  before(async () => {
    h = await startProxyHarness({ clock, store: 'redis', op: { rotateRefreshTokens: true } });
  });
  after(() => h.stop());

  test('50 introspections of one session racing a due re-validation: one OP refresh call, no session lost', async () => {
    // A second replica: its own dependencies (own OP client, own metrics) on the same Redis.
    const replica = await buildDeps(h.config, h.store, createLogger('silent'), createMetrics({ collectDefaults: false }), { clock });
    const alice = await login(h, 'alice');
    const sealedBefore = (await originOf(h, alice.sessionId)).sealedOpRefreshToken;
    clock.advance(INTERVAL_MS);
    const grantsBefore = refreshGrants(h);

    const answers = await Promise.all(
      Array.from({ length: 50 }, (_, index) =>
        index % 2 === 0
          ? introspectOverHttp(h, alice.accessToken).then((answer) => answer.body)
          : introspect(replica, alice.accessToken, { hint: undefined, deviceIdSupported: true }),
      ),
    );
    assert.equal(answers.filter((answer) => answer['active'] === true).length, 50, JSON.stringify(answers.find((answer) => answer['active'] !== true)));
    assert.equal(refreshGrants(h) - grantsBefore, 1, 'exactly one refresh grant at the OP');

    const origin = await originOf(h, alice.sessionId);
    assert.equal(origin.lastValidatedAt, clock.now());
    assert.notEqual(origin.sealedOpRefreshToken, sealedBefore);

    // No session lost: the stored (rotated) OP token is the live one, so the next re-validation succeeds too.
    clock.advance(INTERVAL_MS);
    assert.equal((await introspectOverHttp(h, alice.accessToken)).body['active'], true);
    assert.equal(refreshGrants(h) - grantsBefore, 2);
    assert.equal((await whoami(h, alice.accessToken)).status, 200);
  });
});

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startProxyHarness, type Harness } from '../support/proxy-harness.js';
import { FakeClock } from '../support/fake-clock.js';

// Synapse caches introspection answers for 2 minutes, so the OP's word must also be checked on the client's way in
// (the homeserver double models that cache: nothing here calls forgetIntrospections()).
let h: Harness;
const clock = new FakeClock(Date.now());
before(async () => {
  h = await startProxyHarness({
    clock,
    configure: (config) => {
      config['sessions'] = { ...config['sessions'], revalidate_interval: '5m', op_unreachable_grace: '1h' };
    },
  });
});
after(async () => {
  await h.stop();
});

const whoami = (token: string) => h.request('GET', '/_matrix/client/v3/account/whoami', { token });

test('requests before the interval cost the OP nothing; a user disabled at the OP is refused at the next due request', async () => {
  const login = await h.passwordLogin('alice', h.op.users.alice.password);
  assert.equal(login.status, 200);
  assert.equal((await whoami(login.body.access_token)).status, 200);

  const opCalls = h.op.requestCount('/token');
  for (let i = 0; i < 20; i++) assert.equal((await whoami(login.body.access_token)).status, 200);
  assert.equal(h.op.requestCount('/token'), opCalls, 'no OP call before the interval');

  h.op.disableUser('alice');
  try {
    clock.advance(5 * 60_000 + 1);
    const refused = await whoami(login.body.access_token);
    assert.equal(refused.status, 401);
    assert.equal(refused.body.errcode, 'M_UNKNOWN_TOKEN');
    assert.equal(h.homeserver.devices('alice').has(login.body.device_id), false, 'the device is gone at the homeserver');
    assert.equal(h.op.requestCount('/token', 'refresh_token') > 0, true);
  } finally {
    h.op.enableUser('alice');
  }
});

test('an active user is re-validated once and keeps working', async () => {
  const login = await h.passwordLogin('bob', h.op.users.bob.password);
  clock.advance(5 * 60_000 + 1);
  const before = h.op.requestCount('/token', 'refresh_token');
  const results = await Promise.all(Array.from({ length: 10 }, () => whoami(login.body.access_token)));
  assert.ok(results.every((r) => r.status === 200));
  assert.equal(h.op.requestCount('/token', 'refresh_token') - before, 1, 'single flight: one OP call');
});

test('OP down past the grace period → 503, not a logout', async () => {
  const login = await h.passwordLogin('bob', h.op.users.bob.password);
  h.op.setDown(true);
  try {
    clock.advance(5 * 60_000 + 1);
    assert.equal((await whoami(login.body.access_token)).status, 200, 'within grace');
    clock.advance(60 * 60_000 + 1);
    const failed = await whoami(login.body.access_token);
    assert.equal(failed.status, 503);
    assert.equal(failed.body.errcode, 'M_UNKNOWN');
  } finally {
    h.op.setDown(false);
  }
  clock.advance(60_000);
  assert.equal((await whoami(login.body.access_token)).status, 200, 'back once the OP is');
});

test('a token with a wrong checksum is passed on unread, whether its session is remembered or due', async () => {
  const login = await h.passwordLogin('alice', h.op.users.alice.password);
  const token: string = login.body.access_token;
  assert.equal((await whoami(token)).status, 200, 'the session is looked at once and its next check remembered');
  // The same session id and secret, one checksum character changed: not a token of ours.
  const mistyped = `${token.slice(0, -1)}${token.at(-1) === 'A' ? 'B' : 'A'}`;
  // Reads of a session by the gate, on the way in: before the homeserver has seen the request (its introspection
  // call, which reads too, comes after).
  const sessions = h.deps.sessions;
  const authenticate = sessions.authenticate.bind(sessions);
  const gateReads: string[] = [];
  let seenBefore = h.homeserver.requestsSeen.length;
  sessions.authenticate = async (presented) => {
    if (h.homeserver.requestsSeen.length === seenBefore) gateReads.push(presented);
    return authenticate(presented);
  };
  const whoamiRead = async (presented: string) => {
    seenBefore = h.homeserver.requestsSeen.length;
    return whoami(presented);
  };
  h.op.disableUser('alice');
  try {
    assert.equal((await whoamiRead(mistyped)).status, 401, 'the homeserver refuses it');
    assert.deepEqual(gateReads, [], 'remembered: nothing read');
    clock.advance(5 * 60_000 + 1);
    const opCalls = h.op.requestCount('/token', 'refresh_token');
    assert.equal((await whoamiRead(mistyped)).status, 401);
    assert.deepEqual(gateReads, [], 'due: the checksum fails before any read');
    assert.equal(h.op.requestCount('/token', 'refresh_token'), opCalls, 'and no OP call');
    assert.equal(h.homeserver.devices('alice').has(login.body.device_id), true, 'the session was not touched');
    // The real token is read and checked now, and refused (this also shows the spy sees the gate's reads).
    assert.equal((await whoamiRead(token)).status, 401);
    assert.deepEqual(gateReads, [token]);
    assert.equal(h.homeserver.devices('alice').has(login.body.device_id), false);
  } finally {
    sessions.authenticate = authenticate;
    h.op.enableUser('alice');
  }
});

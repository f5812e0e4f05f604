import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createStore } from '../../src/store/index.js';
import { MemoryStore } from '../../src/store/memory-store.js';
import type { Store } from '../../src/store/store.js';
import { SessionStore } from '../../src/sessions/session-store.js';
import { mintToken, parseToken, successorTokens } from '../../src/sessions/tokens.js';
import { captureLog } from '../support/captured-log.js';
import { FakeClock } from '../support/fake-clock.js';
import { startRedis, type RunningRedis } from '../support/redis-server.js';

const origin = { kind: 'password', idpId: 'op', issuer: 'http://op', sub: 'sub-1', sid: 'sid-1', lastValidatedAt: 0 } as const;
const key = randomBytes(32);

let redis: RunningRedis;
before(async () => {
  redis = await startRedis();
});
after(async () => {
  await redis.stop();
});

const backends: { name: string; make: (clock: FakeClock) => Promise<Store> }[] = [
  { name: 'memory', make: async (clock) => new MemoryStore({ clock }) },
  { name: 'redis', make: async () => createStore({ redis: { url: redis.url, keyPrefix: `test-${randomBytes(4).toString('hex')}:` } }) },
];

for (const backend of backends) {
  describe(`SessionStore on ${backend.name}`, () => {
    test('tokens are opaque, checksummed and only their hashes are stored', async () => {
      const clock = new FakeClock();
      const store = await backend.make(clock);
      const sessions = new SessionStore(store, clock, key, captureLog().logger);
      const issued = await sessions.create({ localpart: 'alice', deviceId: 'DEV', origin, refreshableLifetimeMs: 300_000 });
      assert.match(issued.accessToken, /^mcpa_[0-9A-Za-z]{16}_[0-9A-Za-z]{32}_[0-9A-Za-z]{6}$/);
      assert.ok(issued.refreshToken?.startsWith('mcpr_'));
      const raw = await store.get(`session:${issued.session.id}`);
      assert.ok(raw !== undefined);
      assert.ok(!raw.includes(issued.accessToken.split('_')[2]!), 'access token secret stored in clear');
      assert.ok(!raw.includes(issued.refreshToken!.split('_')[2]!), 'refresh token secret stored in clear');
      // One flipped character breaks the checksum: rejected before any store read.
      const tampered = issued.accessToken.slice(0, 30) + (issued.accessToken[30] === 'a' ? 'b' : 'a') + issued.accessToken.slice(31);
      assert.equal(parseToken(tampered), undefined);
      assert.deepEqual(await sessions.authenticate(tampered), { ok: false, reason: 'malformed' });
      const forged = mintToken('access', issued.session.id);
      assert.deepEqual(await sessions.authenticate(forged), { ok: false, reason: 'unknown' });
      await store.close();
    });

    test('refreshable access tokens expire; others do not', async () => {
      const clock = new FakeClock();
      const store = await backend.make(clock);
      const sessions = new SessionStore(store, clock, key, captureLog().logger);
      const refreshable = await sessions.create({ localpart: 'alice', deviceId: 'A', origin, refreshableLifetimeMs: 300_000 });
      const forever = await sessions.create({ localpart: 'alice', deviceId: 'B', origin });
      clock.advance(299_000);
      assert.equal((await sessions.authenticate(refreshable.accessToken)).ok, true);
      clock.advance(2_000);
      assert.deepEqual(await sessions.authenticate(refreshable.accessToken), { ok: false, reason: 'expired' });
      clock.advance(365 * 24 * 3600_000);
      assert.equal((await sessions.authenticate(forever.accessToken)).ok, true);
      await store.close();
    });

    test('20 concurrent refreshes of one token get the same pair with exactly one rotation', async () => {
      const clock = new FakeClock();
      const store = await backend.make(clock);
      const sessions = new SessionStore(store, clock, key, captureLog().logger);
      const issued = await sessions.create({ localpart: 'alice', deviceId: 'DEV', origin, refreshableLifetimeMs: 300_000 });
      let writes = 0;
      const countingStore = new Proxy(store, {
        get(target, prop, receiver) {
          const value = Reflect.get(target, prop, receiver) as unknown;
          if (prop === 'compareAndSet' && typeof value === 'function') {
            return async (...args: unknown[]) => {
              const wrote = (await (value as (...a: unknown[]) => Promise<boolean>).apply(target, args)) as boolean;
              if (wrote) writes += 1;
              return wrote;
            };
          }
          return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
        },
      });
      const racing = new SessionStore(countingStore, clock, key, captureLog().logger);
      const results = await Promise.all(Array.from({ length: 20 }, () => racing.refresh(issued.refreshToken!, 300_000)));
      assert.ok(results.every((r) => r.ok));
      const pairs = new Set(results.map((r) => (r.ok ? `${r.accessToken} ${r.refreshToken}` : '')));
      assert.equal(pairs.size, 1, 'every racer got the same new pair');
      assert.equal(writes, 1, 'exactly one store rotation');
      const [first] = results;
      assert.ok(first?.ok);
      assert.deepEqual(await sessions.authenticate(issued.accessToken), { ok: false, reason: 'unknown' }, 'old access token dies at rotation');
      assert.equal((await sessions.authenticate(first.accessToken)).ok, true);
      await store.close();
    });

    test('previous refresh token stays valid until the new pair is used, then reuse ends the family', async () => {
      const clock = new FakeClock();
      const store = await backend.make(clock);
      const sessions = new SessionStore(store, clock, key, captureLog().logger);
      const issued = await sessions.create({ localpart: 'alice', deviceId: 'DEV', origin, refreshableLifetimeMs: 300_000 });
      const first = await sessions.refresh(issued.refreshToken!, 300_000);
      assert.ok(first.ok);
      // Lost response: the client retries with the old refresh token and gets the very same pair.
      const retry = await sessions.refresh(issued.refreshToken!, 300_000);
      assert.ok(retry.ok);
      assert.equal(retry.accessToken, first.accessToken);
      assert.equal(retry.refreshToken, first.refreshToken);
      // The new access token is used: from now on the old refresh token is a reuse.
      const auth = await sessions.authenticate(first.accessToken);
      assert.ok(auth.ok);
      await sessions.touch(auth.session);
      assert.deepEqual(await sessions.refresh(issued.refreshToken!, 300_000), { ok: false, reason: 'reused', sessionId: issued.session.id });
      // The current generation still rotates (the caller ends the family on reuse; the store only reports it).
      const second = await sessions.refresh(first.refreshToken, 300_000);
      assert.ok(second.ok);
      assert.notEqual(second.refreshToken, first.refreshToken);
      assert.deepEqual(successorTokens(first.refreshToken, issued.session.id, key), { accessToken: second.accessToken, refreshToken: second.refreshToken });
      await store.close();
    });

    test('a stale use of an access token does not retire a refresh token whose successor was never delivered', async () => {
      const clock = new FakeClock();
      const store = await backend.make(clock);
      const sessions = new SessionStore(store, clock, key, captureLog().logger);
      const issued = await sessions.create({ localpart: 'alice', deviceId: 'DEV', origin, refreshableLifetimeMs: 300_000 });
      const second = await sessions.refresh(issued.refreshToken!, 300_000);
      assert.ok(second.ok);
      // Synapse introspects A2 (snapshot taken) while the client refreshes with R2 and loses the response.
      const snapshot = await sessions.authenticate(second.accessToken);
      assert.ok(snapshot.ok);
      const third = await sessions.refresh(second.refreshToken, 300_000);
      assert.ok(third.ok);
      await sessions.touch(snapshot.session);
      // The client retries with R2: still the same, undelivered pair — not a reuse.
      const retry = await sessions.refresh(second.refreshToken, 300_000);
      assert.ok(retry.ok, 'R2 must still be accepted');
      assert.equal(retry.accessToken, third.accessToken);
      await store.close();
    });

    test('indexes by user, device, sub and sid are kept and cleaned', async () => {
      const clock = new FakeClock();
      const store = await backend.make(clock);
      const sessions = new SessionStore(store, clock, key, captureLog().logger);
      const a = await sessions.create({ localpart: 'alice', deviceId: 'A', origin });
      const b = await sessions.create({ localpart: 'alice', deviceId: 'B', origin: { ...origin, sid: 'sid-2' } });
      assert.deepEqual((await sessions.idsOfUser('alice')).sort(), [a.session.id, b.session.id].sort());
      assert.deepEqual(await sessions.idsOfSid('op', 'sid-1'), [a.session.id]);
      assert.deepEqual((await sessions.idsOfSub('op', 'sub-1')).sort(), [a.session.id, b.session.id].sort());
      assert.equal(await sessions.idOfDevice('alice', 'B'), b.session.id);
      await sessions.remove(a.session.id);
      assert.deepEqual(await sessions.idsOfUser('alice'), [b.session.id]);
      assert.deepEqual(await sessions.idsOfSid('op', 'sid-1'), []);
      assert.equal(await sessions.idOfDevice('alice', 'A'), undefined);
      assert.equal((await sessions.authenticate(a.accessToken)).ok, false);
      await store.close();
    });
  });
}

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, describe, test, type TestContext } from 'node:test';
import { Redis } from 'ioredis';
import type { Clock } from '../../src/clock.js';
import { createStore } from '../../src/store/index.js';
import { MemoryStore } from '../../src/store/memory-store.js';
import { connectRedisStore, RedisStore, type RedisConnectionOptions } from '../../src/store/redis-store.js';
import type { Store } from '../../src/store/store.js';
import {
  startRedis,
  startRedisCluster,
  startRedisSentinel,
  type RunningRedis,
} from '../support/redis-server.js';

/*
 * One contract, every adapter: the same tests run against memory, a plain Redis and a one-node Redis Cluster (whose
 * cross-slot rules and client routing differ). Each Redis test gets a fresh random key prefix on a shared server.
 */

// The cluster node needs ~2 s before it accepts writes, so every server starts now, in parallel with other work.
const servers = {
  redis: startRedis(),
  cluster: startRedisCluster(),
};
for (const server of Object.values(servers)) server.catch(() => {});

after(async () => {
  await Promise.all(Object.values(servers).map(async (server) => (await server).stop()));
});

interface Harness {
  readonly store: Store;
  /** Another handle on the same data: a second connection for Redis, the same object for memory. */
  sibling(): Promise<Store>;
  /** A store on the same backend whose data is separate (another key prefix). */
  isolated(): Promise<Store>;
  /** Moves time: the fake clock for memory, a real wait for Redis (TTLs there run on the server's clock). */
  advance(ms: number): Promise<void>;
  /** The raw value Redis holds under an unprefixed key, to prove prefixing; undefined for memory. */
  raw?(fullKey: string): Promise<string | null>;
  /**
   * What the backend itself holds as the remaining TTL of `key` (src never asks, so it is not in the Store
   * contract): ms, `null` without expiry, undefined when absent or expired.
   */
  remainingTtl(key: string): Promise<number | null | undefined>;
  readonly prefix: string;
}

interface Backend {
  readonly name: string;
  open(t: TestContext): Promise<Harness>;
}

const memory: Backend = {
  name: 'memory',
  async open(t) {
    let now = 1_700_000_000_000;
    const clock: Clock = { now: () => now };
    const store = new MemoryStore({ clock });
    t.after(() => store.close());
    return {
      store,
      sibling: async () => store,
      isolated: async () => {
        const other = new MemoryStore({ clock });
        t.after(() => other.close());
        return other;
      },
      advance: async (ms) => {
        now += ms;
      },
      remainingTtl: async (key) => {
        // The adapter's own entry (TypeScript lets a test read a private field by name), as raw() reads Redis.
        const entry = store['entries'].get(key);
        if (entry === undefined || (entry.expiresAt !== undefined && entry.expiresAt <= now)) return undefined;
        return entry.expiresAt === undefined ? null : entry.expiresAt - now;
      },
      prefix: '',
    };
  },
};

type Topology = (running: RunningRedis) => Omit<RedisConnectionOptions, 'keyPrefix'>;
const viaUrl: Topology = (running) => ({ url: running.url });
const viaCluster: Topology = (running) => ({ clusterNodes: [{ host: running.host, port: running.port }] });

function redisBackend(name: string, server: Promise<RunningRedis>, topology: Topology): Backend {
  return {
    name,
    async open(t) {
      const running = await server;
      const connect = async (keyPrefix: string): Promise<Store> => {
        const store = await connectRedisStore({ ...topology(running), keyPrefix });
        t.after(() => store.close());
        return store;
      };
      const prefix = `test-${randomUUID()}:`;
      const rawClient = new Redis({ host: running.host, port: running.port });
      t.after(() => rawClient.disconnect());
      return {
        store: await connect(prefix),
        sibling: () => connect(prefix),
        isolated: () => connect(`test-${randomUUID()}:`),
        advance: (ms) => sleep(ms),
        raw: (fullKey) => rawClient.get(fullKey),
        remainingTtl: async (key) => {
          const remaining = await rawClient.pttl(prefix + key);
          if (remaining === -2) return undefined;
          return remaining === -1 ? null : remaining;
        },
        prefix,
      };
    },
  };
}

const backends: Backend[] = [
  memory,
  redisBackend('redis', servers.redis, viaUrl),
  redisBackend('redis-cluster', servers.cluster, viaCluster),
];

/** Long enough for Redis to see it as alive right after writing, short enough to keep the suite fast. */
const SHORT_TTL_MS = 150;
const PAST_SHORT_TTL_MS = 200;

for (const backend of backends) {
  describe(`Store contract: ${backend.name}`, () => {
    test('get, set, overwrite and delete', async (t) => {
      const { store } = await backend.open(t);
      assert.equal(await store.get('missing'), undefined);
      assert.equal(await store.set('a', 'one'), true);
      assert.equal(await store.get('a'), 'one');
      assert.equal(await store.set('a', 'two'), true);
      assert.equal(await store.get('a'), 'two');
      await store.set('b', '');
      assert.equal(await store.get('b'), '', 'an empty string is a value, not a miss');
      assert.equal(await store.delete('a', 'b', 'never-set'), 2);
      assert.equal(await store.get('a'), undefined);
      assert.equal(await store.delete(), 0);
      assert.equal(await store.delete('a'), 0);
    });

    test('onlyIfAbsent writes only when the key is free', async (t) => {
      const { store, remainingTtl } = await backend.open(t);
      assert.equal(await store.set('k', 'first', { onlyIfAbsent: true }), true);
      assert.equal(await store.set('k', 'second', { onlyIfAbsent: true }), false);
      assert.equal(await store.get('k'), 'first');
      await store.delete('k');
      assert.equal(await store.set('k', 'third', { onlyIfAbsent: true, ttlMs: 60_000 }), true);
      assert.equal(await store.get('k'), 'third');
      const ttl = await remainingTtl('k');
      assert.ok(typeof ttl === 'number' && ttl > 0 && ttl <= 60_000);
    });

    test('getMany returns values in order, misses as undefined', async (t) => {
      const { store } = await backend.open(t);
      assert.deepEqual(await store.getMany([]), []);
      await store.set('x', '1');
      await store.set('y', '2');
      await store.addToSet('a-set', 'm');
      assert.deepEqual(await store.getMany(['y', 'nope', 'x', 'y', 'a-set']), ['2', undefined, '1', '2', undefined]);
    });

    test('values expire after their TTL, whichever operation wrote them', async (t) => {
      const { store, advance, remainingTtl } = await backend.open(t);
      await store.set('lasting', 'v');
      await store.set('ttl-dropped', 'v', { ttlMs: 60_000 });
      await store.set('ttl-dropped', 'w');
      // Written together and checked at once, so a slow machine does not eat into the short TTL.
      await Promise.all([
        store.set('plain', 'v', { ttlMs: SHORT_TTL_MS }),
        store.set('many', 'v', { ttlMs: SHORT_TTL_MS }),
        store.compareAndSet('cas', undefined, 'v', { ttlMs: SHORT_TTL_MS }),
        store.addToSet('members', 'm', SHORT_TTL_MS),
      ]);
      const [plain, remaining] = await Promise.all([store.get('plain'), remainingTtl('plain')]);
      assert.equal(plain, 'v');
      assert.ok(typeof remaining === 'number' && remaining > 0 && remaining <= SHORT_TTL_MS, `ttl ${remaining}`);
      assert.equal(await remainingTtl('lasting'), null);
      assert.equal(await remainingTtl('ttl-dropped'), null, 'a plain set clears an earlier TTL');
      assert.equal(await remainingTtl('never-set'), undefined);

      await advance(PAST_SHORT_TTL_MS);

      assert.equal(await store.get('plain'), undefined);
      assert.equal(await remainingTtl('plain'), undefined);
      assert.deepEqual(await store.getMany(['many', 'lasting']), [undefined, 'v']);
      assert.equal(await store.consume('cas'), undefined);
      assert.deepEqual(await store.setMembers('members'), []);
      assert.equal(await store.set('plain', 'again', { onlyIfAbsent: true }), true);
      assert.equal(await store.get('ttl-dropped'), 'w');
    });

    test('invalid TTLs and buckets are refused the same way everywhere', async (t) => {
      const { store } = await backend.open(t);
      for (const ttlMs of [0, -5, Number.NaN, Number.POSITIVE_INFINITY]) {
        await assert.rejects(store.set('k', 'v', { ttlMs }), RangeError);
      }
      await assert.rejects(store.tryLock('lock', 0), RangeError);
      await assert.rejects(store.takeToken('b', { burst: 0, perSecond: 1 }, 0), RangeError);
      await assert.rejects(store.takeToken('b', { burst: 1, perSecond: 0 }, 0), RangeError);
      assert.equal(await store.get('k'), undefined);
      // Fractional TTLs round up rather than being refused or truncated to zero.
      assert.equal(await store.set('k', 'v', { ttlMs: 0.2 }), true);
    });

    test('consume hands a value out once', async (t) => {
      const { store } = await backend.open(t);
      await store.set('login-token', 'payload');
      assert.equal(await store.consume('login-token'), 'payload');
      assert.equal(await store.consume('login-token'), undefined);
      assert.equal(await store.get('login-token'), undefined);
      assert.equal(await store.consume('never-set'), undefined);
    });

    test('compareAndSet writes only over the expected value', async (t) => {
      const { store, remainingTtl } = await backend.open(t);
      assert.equal(await store.compareAndSet('c', undefined, 'v1'), true, 'absent as expected');
      assert.equal(await store.compareAndSet('c', undefined, 'other'), false, 'no longer absent');
      assert.equal(await store.compareAndSet('c', 'stale', 'other'), false);
      assert.equal(await store.get('c'), 'v1');
      assert.equal(await store.compareAndSet('c', 'v1', 'v2', { ttlMs: 60_000 }), true);
      assert.equal(await store.get('c'), 'v2');
      const ttl = await remainingTtl('c');
      assert.ok(typeof ttl === 'number' && ttl > 0 && ttl <= 60_000);
      assert.equal(await store.compareAndSet('c', 'v2', 'v3'), true);
      assert.equal(await remainingTtl('c'), null, 'like set, a write without TTL clears it');

      await store.set('empty', '');
      assert.equal(await store.compareAndSet('empty', undefined, 'x'), false, 'an empty value is not absence');
      assert.equal(await store.compareAndSet('empty', '', 'x'), true);
      assert.equal(await store.compareAndSet('fresh', '', 'x'), false, 'absence is not an empty value');
    });

    test('addWord: appends a word once, revives an empty string, clears an expiry, refuses non-words and other types', async (t) => {
      const { store, remainingTtl } = await backend.open(t);
      assert.equal(await store.addWord('words', 'a1'), true, 'an absent key becomes the word');
      assert.equal(await store.get('words'), 'a1');
      assert.equal(await store.addWord('words', 'b2'), true);
      assert.equal(await store.addWord('words', 'a1'), false, 'already there');
      assert.equal(await store.addWord('words', 'a'), true, 'a prefix of a word is another word');
      assert.equal(await store.get('words'), 'a1 b2 a');

      await store.set('emptied', '', { ttlMs: 60_000 });
      assert.equal(await store.addWord('emptied', 'c3'), true);
      assert.equal(await store.get('emptied'), 'c3');
      assert.equal(await remainingTtl('emptied'), null, 'a plain write: the expiry of the emptied index is gone');

      await assert.rejects(store.addWord('words', 'two words'), /not a word/);
      await assert.rejects(store.addWord('words', ''), /not a word/);
      assert.equal(await store.get('words'), 'a1 b2 a', 'nothing written by a refused call');
      await store.addToSet('a-set', 'm');
      await assert.rejects(store.addWord('a-set', 'x'), /WRONGTYPE/);
    });

    test('writeThenRead: the writes as their methods do them, then reads that see them; a wrong type changes nothing', async (t) => {
      const { store, remainingTtl } = await backend.open(t);
      await store.set('record', 'old', { ttlMs: 60_000 });
      await store.set('index', 'a1');
      await store.set('emptied', '', { ttlMs: 60_000 });
      await store.set('marker', 'm1');
      await store.addToSet('a-set', 'x');
      const values = await store.writeThenRead(
        [
          { op: 'set', key: 'record', value: 'new' },
          { op: 'addWord', key: 'index', word: 'b2' },
          { op: 'addWord', key: 'index', word: 'a1' },
          { op: 'addWord', key: 'emptied', word: 'c3' },
          { op: 'addWord', key: 'fresh-index', word: 'd4' },
          { op: 'addToSet', key: 'members', member: 'm' },
          { op: 'addToSet', key: 'a-set', member: 'y' },
        ],
        ['marker', 'record', 'index', 'absent', 'a-set', 'emptied'],
      );
      // The reads follow the writes; like getMany, a key of another type reads as absent.
      assert.deepEqual(values, ['m1', 'new', 'a1 b2', undefined, undefined, 'c3']);
      assert.equal(await remainingTtl('record'), null, 'a plain set: the earlier expiry is gone');
      assert.equal(await remainingTtl('emptied'), null);
      assert.equal(await store.get('fresh-index'), 'd4');
      assert.deepEqual(await store.setMembers('members'), ['m']);
      assert.deepEqual((await store.setMembers('a-set')).sort(), ['x', 'y']);
      assert.deepEqual(await store.writeThenRead([], ['marker']), ['m1'], 'reads alone');
      assert.deepEqual(await store.writeThenRead([{ op: 'set', key: 'solo', value: 'v' }], []), [], 'writes alone');
      assert.equal(await store.get('solo'), 'v');

      await assert.rejects(store.writeThenRead([{ op: 'addWord', key: 'index', word: 'two words' }], []), /not a word/);
      if (backend.name !== 'redis-cluster') {
        // Checked before the first write: the set of `untouched` must not happen either (Cluster writes separately).
        await assert.rejects(
          store.writeThenRead(
            [
              { op: 'set', key: 'untouched', value: 'v' },
              { op: 'addWord', key: 'a-set', word: 'z' },
            ],
            [],
          ),
          /WRONGTYPE/,
        );
        await assert.rejects(store.writeThenRead([{ op: 'addToSet', key: 'record', member: 'z' }], ['marker']), /WRONGTYPE/);
        assert.equal(await store.get('untouched'), undefined);
        assert.equal(await store.get('record'), 'new');
      }
      assert.equal(await store.get('index'), 'a1 b2');
    });

    test('removeWord: removes one word, leaves "" expiring after the last, ignores absent words and keys', async (t) => {
      const { store, remainingTtl } = await backend.open(t);
      await store.set('words', 'a1 b2 c3');
      assert.equal(await store.removeWord('words', 'b2', 60_000), true);
      assert.equal(await store.get('words'), 'a1 c3');
      assert.equal(await remainingTtl('words'), null, 'words left: no expiry');
      assert.equal(await store.removeWord('words', 'b2', 60_000), false, 'already gone');
      assert.equal(await store.removeWord('words', 'a', 60_000), false, 'a prefix of a word is another word');
      assert.equal(await store.removeWord('words', 'a1', 60_000), true);
      assert.equal(await store.removeWord('words', 'c3', 60_000), true);
      assert.equal(await store.get('words'), '', 'the last word leaves an empty string, not a deleted key');
      const ttl = await remainingTtl('words');
      assert.ok(typeof ttl === 'number' && ttl > 0 && ttl <= 60_000, `expiring: ${ttl}`);
      assert.equal(await store.addWord('words', 'd4'), true, 'an add revives it');
      assert.equal(await remainingTtl('words'), null);
      assert.equal(await store.removeWord('never-set', 'x', 60_000), false);
      assert.equal(await store.get('never-set'), undefined, 'an absent key stays absent');
    });

    test('removeWord and addWord racing from 4 clients: every word removed is gone, every word added is there', async (t) => {
      const harness = await backend.open(t);
      const stores = [harness.store, await harness.sibling(), await harness.sibling(), await harness.sibling()];
      await harness.store.set('index', Array.from({ length: 40 }, (_, i) => `old${i}`).join(' '));
      await Promise.all([
        ...Array.from({ length: 40 }, (_, i) => stores[i % 4]!.removeWord('index', `old${i}`, 60_000)),
        ...Array.from({ length: 40 }, (_, i) => stores[(i + 1) % 4]!.addWord('index', `new${i}`)),
      ]);
      const words = ((await harness.store.get('index')) ?? '').split(' ').filter((word) => word !== '');
      assert.deepEqual([...words].sort(), Array.from({ length: 40 }, (_, i) => `new${i}`).sort());
    });

    test('addWord from 4 clients, 100 words at once: every word lands exactly once', async (t) => {
      const harness = await backend.open(t);
      const stores = [harness.store, await harness.sibling(), await harness.sibling(), await harness.sibling()];
      await Promise.all(Array.from({ length: 100 }, (_, i) => stores[i % 4]!.addWord('index', `s${i % 50}`)));
      const words = ((await harness.store.get('index')) ?? '').split(' ');
      assert.equal(words.length, 50);
      assert.deepEqual([...words].sort(), Array.from({ length: 50 }, (_, i) => `s${i}`).sort());
    });

    test('sets: add, remove, list, refresh expiry', async (t) => {
      const { store, remainingTtl } = await backend.open(t);
      assert.deepEqual(await store.setMembers('s'), []);
      await store.addToSet('s', 'a');
      await store.addToSet('s', 'b');
      await store.addToSet('s', 'a');
      assert.deepEqual((await store.setMembers('s')).sort(), ['a', 'b']);
      assert.equal(await remainingTtl('s'), null);
      await store.addToSet('s', 'c', 60_000);
      const ttl = await remainingTtl('s');
      assert.ok(typeof ttl === 'number' && ttl > 0 && ttl <= 60_000, 'ttlMs applies to the whole set');
      await store.removeFromSet('s', 'a');
      await store.removeFromSet('s', 'not-a-member');
      await store.removeFromSet('no-such-set', 'a');
      assert.deepEqual((await store.setMembers('s')).sort(), ['b', 'c']);
      await store.removeFromSet('s', 'b');
      await store.removeFromSet('s', 'c');
      assert.deepEqual(await store.setMembers('s'), []);
      assert.equal(await remainingTtl('s'), undefined, 'an emptied set is gone');
      await store.addToSet('s', 'z');
      await assert.rejects(store.get('s'), /WRONGTYPE/, 'a set is not a string');
    });

    test('token bucket: burst, then refill at the given rate', async (t) => {
      const { store, remainingTtl } = await backend.open(t);
      const bucket = { burst: 3, perSecond: 2 };
      const t0 = 1_700_000_000_000;
      for (let i = 0; i < 3; i += 1) assert.deepEqual(await store.takeToken('ip:1', bucket, t0), { allowed: true });
      assert.deepEqual(await store.takeToken('ip:1', bucket, t0), { allowed: false, retryAfterMs: 500 });
      assert.deepEqual(await store.takeToken('ip:2', bucket, t0), { allowed: true }, 'buckets are per key');
      assert.deepEqual(await store.takeToken('ip:1', bucket, t0 + 400), { allowed: false, retryAfterMs: 100 });
      assert.deepEqual(await store.takeToken('ip:1', bucket, t0 + 500), { allowed: true });
      assert.deepEqual(await store.takeToken('ip:1', bucket, t0 + 500), { allowed: false, retryAfterMs: 500 });
      // An earlier nowMs (a replica whose clock lags) refills nothing.
      assert.deepEqual(await store.takeToken('ip:1', bucket, t0), { allowed: false, retryAfterMs: 500 });
      // A long pause refills to burst, not beyond.
      const later = t0 + 3_600_000;
      for (let i = 0; i < 3; i += 1) assert.deepEqual(await store.takeToken('ip:1', bucket, later), { allowed: true });
      assert.equal((await store.takeToken('ip:1', bucket, later)).allowed, false);

      // State is kept only until the bucket would be full again.
      const ttl = await remainingTtl('ip:1');
      assert.ok(typeof ttl === 'number' && ttl > 0 && ttl <= 1500, `ttl ${ttl}`);

      const slow = { burst: 1, perSecond: 0.5 };
      assert.deepEqual(await store.takeToken('slow', slow, t0), { allowed: true });
      assert.deepEqual(await store.takeToken('slow', slow, t0 + 500), { allowed: false, retryAfterMs: 1500 });
    });

    test('token buckets taken together: in order, none after the first that refuses', async (t) => {
      const { store } = await backend.open(t);
      const t0 = 1_700_000_000_000;
      const ip = { key: 'login:ip', bucket: { burst: 2, perSecond: 1 } };
      const account = { key: 'login:account', bucket: { burst: 3, perSecond: 2 } };
      assert.deepEqual(await store.takeTokens([ip, account], t0), { allowed: true });
      assert.deepEqual(await store.takeTokens([ip, account], t0), { allowed: true });
      // The IP bucket is empty: refused with its wait, and the account bucket keeps its last token.
      assert.deepEqual(await store.takeTokens([ip, account], t0), { allowed: false, retryAfterMs: 1000 });
      assert.deepEqual(await store.takeToken('login:account', account.bucket, t0), { allowed: true }, 'the refused take left the account bucket alone');
      assert.deepEqual(await store.takeToken('login:account', account.bucket, t0), { allowed: false, retryAfterMs: 500 });
      // The first bucket allows, the second refuses: the first's token is spent (as one take after the other would).
      const fresh = { key: 'login:ip2', bucket: { burst: 5, perSecond: 1 } };
      assert.deepEqual(await store.takeTokens([fresh, account], t0), { allowed: false, retryAfterMs: 500 });
      for (let i = 0; i < 4; i += 1) assert.deepEqual(await store.takeToken('login:ip2', fresh.bucket, t0), { allowed: true });
      assert.equal((await store.takeToken('login:ip2', fresh.bucket, t0)).allowed, false, 'one of five went to the refused pair');
      assert.deepEqual(await store.takeTokens([ip], t0 + 1000), { allowed: true }, 'one bucket alone');
      await assert.rejects(store.takeTokens([ip, { key: 'bad', bucket: { burst: 0, perSecond: 1 } }], t0), RangeError);
    });

    test('token bucket: concurrent takers share the burst', async (t) => {
      const harness = await backend.open(t);
      const stores = [harness.store, await harness.sibling(), await harness.sibling()];
      const results = await Promise.all(
        Array.from({ length: 30 }, (_, i) =>
          stores[i % stores.length]!.takeToken('shared', { burst: 10, perSecond: 1 }, 1000),
        ),
      );
      assert.equal(results.filter((result) => result.allowed).length, 10);
    });

    test('tryLock: exclusive, released by its holder, expires on its own', async (t) => {
      const { store, sibling, advance } = await backend.open(t);
      const other = await sibling();
      const release = await store.tryLock('lock', 60_000);
      assert.ok(release !== undefined);
      assert.equal(await other.tryLock('lock', 60_000), undefined);
      await release();
      await release();
      const second = await other.tryLock('lock', SHORT_TTL_MS);
      assert.ok(second !== undefined, 'free again after release');

      await advance(PAST_SHORT_TTL_MS);
      const third = await store.tryLock('lock', 60_000);
      assert.ok(third !== undefined, 'an abandoned lock expires');
      await second();
      assert.equal(await other.tryLock('lock', 60_000), undefined, 'a stale holder cannot release the new holder');
      await third();
    });

    test('tryLock: of concurrent contenders exactly one wins', async (t) => {
      const harness = await backend.open(t);
      const stores = [harness.store, await harness.sibling(), await harness.sibling(), await harness.sibling()];
      const results = await Promise.all(Array.from({ length: 40 }, (_, i) => stores[i % 4]!.tryLock('contended', 60_000)));
      assert.equal(results.filter((release) => release !== undefined).length, 1);
    });

    test('100 concurrent consumes of one key: exactly one gets the value', async (t) => {
      const harness = await backend.open(t);
      const stores = [harness.store, await harness.sibling(), await harness.sibling(), await harness.sibling()];
      await harness.store.set('single-use', 'secret');
      const results = await Promise.all(Array.from({ length: 100 }, (_, i) => stores[i % 4]!.consume('single-use')));
      assert.deepEqual(
        results.filter((value) => value !== undefined),
        ['secret'],
      );
    });

    test('100 concurrent compareAndSets with one expected value: exactly one writes', async (t) => {
      const harness = await backend.open(t);
      const stores = [harness.store, await harness.sibling(), await harness.sibling(), await harness.sibling()];
      await harness.store.set('session', 'v0');
      const results = await Promise.all(
        Array.from({ length: 100 }, (_, i) => stores[i % 4]!.compareAndSet('session', 'v0', `v1-by-${i}`)),
      );
      const winners = results.flatMap((wrote, i) => (wrote ? [i] : []));
      assert.equal(winners.length, 1);
      assert.equal(await harness.store.get('session'), `v1-by-${winners[0]}`);
    });

    test('stores with different prefixes do not see each other', async (t) => {
      const harness = await backend.open(t);
      const { store } = harness;
      const other = await harness.isolated();
      await store.set('shared-name', 'mine');
      await other.set('shared-name', 'theirs');
      await store.addToSet('set', 'mine');

      assert.equal(await store.get('shared-name'), 'mine');
      assert.equal(await other.get('shared-name'), 'theirs');
      assert.deepEqual(await other.setMembers('set'), []);
      assert.equal(await other.consume('shared-name'), 'theirs');
      assert.equal(await store.get('shared-name'), 'mine');
      if (harness.raw !== undefined) {
        assert.equal(await harness.raw(`${harness.prefix}shared-name`), 'mine', 'keys carry the prefix on the server');
        assert.equal(await harness.raw('shared-name'), null);
      }
    });

    test('hasKeyWithPrefix: any live key under the prefix, glob characters taken literally, other prefixes unseen', async (t) => {
      const harness = await backend.open(t);
      const { store } = harness;
      const other = await harness.isolated();
      assert.equal(await store.hasKeyWithPrefix('session:'), false);
      await other.set('session:abc', 'theirs');
      assert.equal(await store.hasKeyWithPrefix('session:'), false, 'another key prefix is another store');
      await store.set('sessions-not:x', 'v');
      await store.set('se*sion:y', 'v');
      assert.equal(await store.hasKeyWithPrefix('session:'), false, 'only keys that start with it');
      assert.equal(await store.hasKeyWithPrefix('se*'), true, '* is a character here, not a wildcard');
      assert.equal(await store.hasKeyWithPrefix('se?sion'), false);
      await store.addToSet('session:set', 'm');
      assert.equal(await store.hasKeyWithPrefix('session:'), true, 'a set counts');
      await store.removeFromSet('session:set', 'm');
      await store.set('session:short', 'v', { ttlMs: SHORT_TTL_MS });
      assert.equal(await store.hasKeyWithPrefix('session:'), true);
      await harness.advance(PAST_SHORT_TTL_MS);
      assert.equal(await store.hasKeyWithPrefix('session:'), false, 'an expired key does not count');
      // Many keys elsewhere: the scan goes on past batches without a match.
      await Promise.all(Array.from({ length: 2500 }, (_, i) => store.set(`bulk:${i}`, 'v')));
      assert.equal(await store.hasKeyWithPrefix('session:'), false);
      await store.set('session:late', 'v');
      assert.equal(await store.hasKeyWithPrefix('session:'), true);
    });

    test('a closed store refuses further calls', async (t) => {
      const { store } = await backend.open(t);
      await store.ping();
      await store.close();
      await assert.rejects(store.get('a'));
      await assert.rejects(store.ping());
    });
  });
}

describe('createStore', () => {
  test('without redis options it is the memory store, on the given clock', async () => {
    let now = 0;
    const store = await createStore({ clock: { now: () => now } });
    assert.equal(store.kind, 'memory');
    await store.set('k', 'v', { ttlMs: 10 });
    now = 10;
    assert.equal(await store.get('k'), undefined);
    await store.close();
  });

  test('with a url it connects to that Redis and database', async (t) => {
    const server = await servers.redis;
    const keyPrefix = `test-${randomUUID()}:`;
    const url = new URL(server.url);
    url.pathname = '/3';
    const store = await createStore({ redis: { url: url.toString(), keyPrefix } });
    t.after(() => store.close());
    assert.equal(store.kind, 'redis');
    await store.ping();
    await store.set('in-db-3', 'yes');
    const raw = new Redis({ host: server.host, port: server.port, db: 3 });
    t.after(() => raw.disconnect());
    assert.equal(await raw.get(`${keyPrefix}in-db-3`), 'yes');
  });

  test('through Sentinel it finds the master by name', async (t) => {
    const master = await startRedis({ ignoreEnv: true });
    t.after(() => master.stop());
    const sentinel = await startRedisSentinel(master, 'mymaster');
    t.after(() => sentinel.stop());
    const keyPrefix = `test-${randomUUID()}:`;
    const store = await createStore({
      redis: { sentinels: [{ host: sentinel.host, port: sentinel.port }], sentinelName: 'mymaster', keyPrefix },
    });
    t.after(() => store.close());
    await store.set('via-sentinel', 'yes');
    const raw = new Redis({ host: master.host, port: master.port });
    t.after(() => raw.disconnect());
    assert.equal(await raw.get(`${keyPrefix}via-sentinel`), 'yes');
  });

  test("the commands of one event-loop turn reach Redis in one read, and each gets its own answer", async (t) => {
    // A Redis of its own: total_reads_processed (INFO stats) counts every read of every client on the server.
    const server = await startRedis({ ignoreEnv: true });
    t.after(() => server.stop());
    const store = await connectRedisStore({ url: server.url, keyPrefix: `test-${randomUUID()}:` });
    t.after(() => store.close());
    for (let index = 0; index < 40; index++) await store.set(`k${index}`, `v${index}`);
    const raw = new Redis({ host: server.host, port: server.port });
    t.after(() => raw.disconnect());
    const reads = async () => Number(/total_reads_processed:(\d+)/.exec(await raw.info('stats'))?.[1]);
    const before = await reads();
    const answers = await Promise.all(Array.from({ length: 40 }, (_, index) => store.get(`k${index}`)));
    // The second INFO is one read more; 40 commands written one by one would be read in many.
    const delta = (await reads()) - before;
    assert.deepEqual(answers, Array.from({ length: 40 }, (_, index) => `v${index}`));
    assert.ok(delta <= 3, `${delta} reads for 40 commands of one turn`);
  });

  test('an unreachable Redis fails startup quickly, naming the target but not the password', async () => {
    const dead = await startRedis({ ignoreEnv: true });
    await dead.stop();
    const started = performance.now();
    await assert.rejects(
      createStore({ redis: { url: `redis://:hunter2@127.0.0.1:${dead.port}/0`, keyPrefix: 'x:', connectTimeoutMs: 300 } }),
      (error: Error) => {
        assert.match(error.message, new RegExp(`redis://127\\.0\\.0\\.1:${dead.port}/0`));
        assert.doesNotMatch(error.message, /hunter2/);
        return true;
      },
    );
    assert.ok(performance.now() - started < 3000);
  });

  test('bad options are refused before connecting', async () => {
    const prefixedClient = new Redis({ lazyConnect: true, keyPrefix: 'a:' });
    assert.throws(() => new RedisStore({ client: prefixedClient, keyPrefix: 'b:' }), /without keyPrefix/);
    const plainClient = new Redis({ lazyConnect: true });
    assert.throws(() => new RedisStore({ client: plainClient, keyPrefix: '{all}:' }), /must not contain/);
    await assert.rejects(createStore({ redis: { keyPrefix: 'x:' } }), /give url/);
    await assert.rejects(createStore({ redis: { url: 'http://127.0.0.1:6379', keyPrefix: 'x:' } }), /redis:\/\//);
    const noName = { sentinels: [{ host: '127.0.0.1', port: 1 }], keyPrefix: 'x:' };
    await assert.rejects(createStore({ redis: noName }), /sentinelName/);
    await assert.rejects(createStore({ redis: { url: 'redis://127.0.0.1:1/x', keyPrefix: 'x:' } }), /database number/);
  });
});

// Last in the file: the cluster case kills the shared cluster server.
describe('Redis outages', () => {
  const outages: { name: string; server: () => Promise<RunningRedis>; topology: Topology }[] = [
    { name: 'redis', server: () => startRedis({ ignoreEnv: true }), topology: viaUrl },
    { name: 'redis-cluster', server: () => servers.cluster, topology: viaCluster },
  ];
  for (const outage of outages) {
    test(`${outage.name}: ping and commands fail within 3 s once Redis dies, instead of hanging`, async (t) => {
      const server = await outage.server();
      t.after(() => server.stop());
      const store = await connectRedisStore({ ...outage.topology(server), keyPrefix: `test-${randomUUID()}:` });
      t.after(() => store.close());
      await store.ping();
      await store.set('k', 'v');

      await server.stop();
      // The second call meets a client that has already been failing to reconnect for a while.
      for (const call of [() => store.ping(), () => store.consume('k')]) {
        const started = performance.now();
        await assert.rejects(call());
        const elapsed = performance.now() - started;
        assert.ok(elapsed < 3000, `failed after ${Math.round(elapsed)} ms`);
      }
    });
  }
});

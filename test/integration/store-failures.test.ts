import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createStore, StoreUnavailableError } from '../../src/store/index.js';
import { startRedis } from '../support/redis-server.js';

// The Redis store as createStore returns it: every failure of a call is a StoreUnavailableError naming the call,
// argument errors stay RangeErrors, and each method's wrapper is made once (issue 19: no closure per store call).
test('the Redis store maps failures to StoreUnavailableError per call, keeps RangeError, and reuses its wrappers', async () => {
  const redis = await startRedis({ ignoreEnv: true });
  const store = await createStore({ redis: { url: redis.url, keyPrefix: 'store-failures:' } });
  let stopped = false;
  try {
    assert.equal(store.get, store.get, 'one wrapper per method');
    assert.equal(await store.set('k', 'v', { ttlMs: 60_000 }), true);
    assert.equal(await store.get('k'), 'v');
    // The wrapper calls the method on the store itself (its `this`), whichever way it was read.
    const { get } = store;
    assert.equal(await get('k'), 'v');
    await assert.rejects(store.set('k', 'v', { ttlMs: -1 }), (err: unknown) => err instanceof RangeError && !(err instanceof StoreUnavailableError));

    await redis.stop();
    stopped = true;
    for (let attempt = 0; attempt < 2; attempt++) {
      await assert.rejects(store.get('k'), (err: unknown) => err instanceof StoreUnavailableError && /^store get failed: /.test(err.message));
    }
    await assert.rejects(store.set('k', 'w'), (err: unknown) => err instanceof StoreUnavailableError && /^store set failed: /.test(err.message));
  } finally {
    await store.close();
    if (!stopped) await redis.stop();
  }
});

import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { providerStoreAdapter } from '../../src/oauth/provider-store-adapter.js';
import { createStore } from '../../src/store/index.js';
import { MemoryStore } from '../../src/store/memory-store.js';
import type { Store } from '../../src/store/store.js';
import { FakeClock } from '../support/fake-clock.js';
import { startRedis } from '../support/redis-server.js';

// oidc-provider's Adapter contract on the proxy's Store, on both backends: what the provider relies on for codes
// (single use, replay kept visible), grants (one revocation reaches every token) and sessions (lookup by uid).

const redis = startRedis();
redis.catch(() => {});
after(async () => {
  await (await redis).stop();
});

const warnings: unknown[] = [];
const logger = { warn: (fields: Record<string, unknown>) => void warnings.push(fields) };

for (const backend of ['memory', 'redis'] as const) {
  describe(`oidc-provider adapter on the ${backend} store`, () => {
    const clock = new FakeClock();
    let store: Store;
    const adapterFor = (model: string) => providerStoreAdapter({ store, clock, logger, grantIndexTtlMs: 3_600_000 })(model);

    test('setup', async () => {
      store = backend === 'memory' ? new MemoryStore({ clock }) : await createStore({ redis: { url: (await redis).url, keyPrefix: `adapter-${Math.random().toString(36).slice(2)}:` } });
    });

    test('upsert then find gives the payload back; an unknown id is undefined', async () => {
      const codes = adapterFor('AuthorizationCode');
      await codes.upsert('c1', { jti: 'c1', grantId: 'g1', kind: 'AuthorizationCode', scope: 'openid' }, 60);
      assert.deepEqual(await codes.find('c1'), { jti: 'c1', grantId: 'g1', kind: 'AuthorizationCode', scope: 'openid' });
      assert.equal(await codes.find('nope'), undefined);
    });

    test('consume marks the code consumed and keeps it (a replay must be recognisable); twice is harmless', async () => {
      const codes = adapterFor('AuthorizationCode');
      await codes.consume('c1');
      const consumed = await codes.find('c1');
      assert.equal(typeof consumed?.consumed, 'number');
      await codes.consume('c1');
      assert.equal((await codes.find('c1'))?.consumed, consumed?.consumed);
    });

    test('revokeByGrantId removes every model issued under the grant, and nothing else', async () => {
      const access = adapterFor('AccessToken');
      const refresh = adapterFor('RefreshToken');
      await access.upsert('a1', { jti: 'a1', grantId: 'g1', kind: 'AccessToken' }, 300);
      await refresh.upsert('r1', { jti: 'r1', grantId: 'g1', kind: 'RefreshToken' }, 3600);
      await access.upsert('a2', { jti: 'a2', grantId: 'g2', kind: 'AccessToken' }, 300);
      await refresh.revokeByGrantId('g1');
      assert.equal(await access.find('a1'), undefined);
      assert.equal(await refresh.find('r1'), undefined);
      assert.equal(await adapterFor('AuthorizationCode').find('c1'), undefined);
      assert.ok(await access.find('a2'));
    });

    test('sessions are found by uid until destroyed', async () => {
      const sessions = adapterFor('Session');
      await sessions.upsert('s1', { jti: 's1', uid: 'u1', kind: 'Session', accountId: 'alice' }, 3600);
      assert.equal((await sessions.findByUid('u1'))?.accountId, 'alice');
      await sessions.destroy('s1');
      assert.equal(await sessions.findByUid('u1'), undefined);
      assert.equal(await sessions.find('s1'), undefined);
    });

    test('a record that does not decode is a miss plus a warning, never a throw', async () => {
      await store.set('oauth:Client:broken', '{"v":1,"payload":"not an object"}');
      const before = warnings.length;
      assert.equal(await adapterFor('Client').find('broken'), undefined);
      assert.equal(warnings.length, before + 1);
    });

    test('teardown', async () => {
      await store.close();
    });
  });
}

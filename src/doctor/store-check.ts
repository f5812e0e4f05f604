import { randomBytes } from 'node:crypto';
import type { Config } from '../config/schema.js';
import { previewSessionFormat } from '../sessions/session-format.js';
import { createStore, type RedisConnectionOptions } from '../store/index.js';
import type { AddCheck } from './checks.js';

/** The store as the proxy will use it: reachable, and a key written under the configured prefix reads back. */
export async function checkStore(config: Config, add: AddCheck): Promise<void> {
  const redis = redisOptions(config);
  if (redis === undefined) {
    add('store', 'info', 'no Redis configured: sessions live in the proxy process (one replica only, lost on restart)');
    return;
  }
  let store;
  try {
    store = await createStore({ redis });
  } catch (err: unknown) {
    add('reachable', 'fail', err instanceof Error ? err.message : String(err), 'check store.redis_url (or sentinels / cluster_nodes) and that Redis runs');
    return;
  }
  try {
    const key = `doctor:probe:${randomBytes(8).toString('hex')}`;
    const value = randomBytes(8).toString('hex');
    await store.set(key, value, { ttlMs: 30_000 });
    const read = await store.get(key);
    await store.delete(key);
    if (read === value) add('writable', 'pass', `Redis answered; a key written under prefix "${config.store.key_prefix}" read back`);
    else add('writable', 'fail', 'a key written did not read back', 'check that the Redis user may write (ACL) and that no replica is read-only');
  } catch (err: unknown) {
    add('writable', 'fail', err instanceof Error ? err.message : String(err), 'check that the Redis user may write (ACL) and that no replica is read-only');
  }
  try {
    // Read only: the doctor never records the decision a start would.
    const decision = await previewSessionFormat(config.store.session_format, store, { warn: () => {} });
    const how = decision.reason === 'remembered' ? 'decided by an earlier start (auto)' : decision.reason === 'configured' ? 'configured' : `the next start decides it (auto: ${decision.reason === 'fresh_store' ? 'no session in the store yet' : 'the store holds sessions'})`;
    add('session format', 'info', `${decision.format}, ${how}`, decision.format === 'compatible' ? 'once every replica runs this release, set store.session_format: compact (docs/production.md, upgrades)' : undefined);
  } catch (err: unknown) {
    add('session format', 'warn', err instanceof Error ? err.message : String(err));
  } finally {
    await store.close().catch(() => undefined);
  }
}

function redisOptions(config: Config): RedisConnectionOptions | undefined {
  const store = config.store;
  if (store.redis_url !== undefined) return { url: store.redis_url, keyPrefix: store.key_prefix };
  if (store.sentinels !== undefined) return { sentinels: [...store.sentinels], sentinelName: store.sentinel_name ?? 'mymaster', keyPrefix: store.key_prefix };
  if (store.cluster_nodes !== undefined) return { clusterNodes: [...store.cluster_nodes], keyPrefix: store.key_prefix };
  return undefined;
}

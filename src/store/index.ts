import type { Clock } from '../clock.js';
import { MemoryStore } from './memory-store.js';
import { connectRedisStore, type RedisConnectionOptions } from './redis-store.js';
import type { Store } from './store.js';

export type { SetEntry, SetOptions, Store, TokenBucket, TokenBucketResult } from './store.js';
export type { RedisConnectionOptions } from './redis-store.js';

export interface CreateStoreOptions {
  /** Absent: in-process memory, which is only correct with a single replica. */
  readonly redis?: RedisConnectionOptions;
  /** Drives memory TTLs; Redis expires keys on its own clock. */
  readonly clock?: Clock;
}

/**
 * The one place that picks the backend. A Redis store is returned only once Redis answers, so a wrong address
 * fails startup with a message naming it (never its password) instead of failing the first request.
 */
export async function createStore(options: CreateStoreOptions): Promise<Store> {
  if (options.redis === undefined) return new MemoryStore(options.clock === undefined ? {} : { clock: options.clock });
  return connectRedisStore(options.redis);
}

import type { Clock } from '../clock.js';
import type { Config } from '../config/schema.js';
import { MemoryStore } from './memory-store.js';
import { connectRedisStore, type RedisConnectionOptions } from './redis-store.js';
import { StoreUnavailableError, type Store } from './store.js';

export type { SetOptions, Store, TokenBucket, TokenBucketResult } from './store.js';
export { StoreUnavailableError } from './store.js';
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
  return failuresAsUnavailable(await connectRedisStore(options.redis));
}

/**
 * Every failure of a Redis call (connection lost, command timeout) surfaces as StoreUnavailableError, so routes can
 * answer 503 instead of a 500. Argument errors (RangeError) are the caller's bug and stay as they are.
 */
function failuresAsUnavailable(store: Store): Store {
  // One wrapper per method, made on first use: a new closure per property read would be garbage on every store
  // call of every request (issue 19: an introspection's allocations are what its collections cost). Keyed by the
  // function too, so a method replaced on the store (none is) would not keep its old wrapper.
  const wrappers = new Map<PropertyKey, { readonly method: unknown; readonly wrapper: (...args: unknown[]) => Promise<unknown> }>();
  return new Proxy(store, {
    get(target, property, receiver) {
      const value = Reflect.get(target, property, receiver) as unknown;
      if (typeof value !== 'function' || property === 'close' || property === 'ping') return value;
      const known = wrappers.get(property);
      if (known !== undefined && known.method === value) return known.wrapper;
      const method = value as (...a: unknown[]) => Promise<unknown>;
      const wrapper = async (...args: unknown[]) => {
        try {
          return await method.apply(target, args);
        } catch (err: unknown) {
          if (err instanceof RangeError || err instanceof StoreUnavailableError) throw err;
          throw new StoreUnavailableError(String(property), err);
        }
      };
      wrappers.set(property, { method: value, wrapper });
      return wrapper;
    },
  });
}

/** The Redis connection the config's `store` section names; undefined for the in-process memory store. */
export function redisOptions(config: Pick<Config, 'store'>): RedisConnectionOptions | undefined {
  const store = config.store;
  if (store.redis_url !== undefined) return { url: store.redis_url, keyPrefix: store.key_prefix };
  if (store.sentinels !== undefined) return { sentinels: [...store.sentinels], sentinelName: store.sentinel_name ?? 'mymaster', keyPrefix: store.key_prefix };
  if (store.cluster_nodes !== undefined) return { clusterNodes: [...store.cluster_nodes], keyPrefix: store.key_prefix };
  return undefined;
}

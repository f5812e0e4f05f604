/**
 * The narrow storage contract every piece of shared state goes through. Two adapters implement it: memory
 * (single process) and Redis (many replicas). Keys are plain strings; the adapter adds its configured prefix.
 *
 * Conventions for every method:
 * - async; a miss is `undefined` (or `false`/`0`/`[]`), never an exception;
 * - TTLs are milliseconds given by the caller; `undefined` means "no expiry";
 * - expiry is exact from the caller's point of view: an expired value is never returned, even if not yet evicted.
 */
export interface Store {
  /** Value at `key`, or undefined when absent or expired. */
  get(key: string): Promise<string | undefined>;
  /** Values of several keys in one round trip, in order; absent ones are undefined. */
  getMany(keys: readonly string[]): Promise<(string | undefined)[]>;
  /** Writes `value`; with `onlyIfAbsent`, writes nothing and returns false if the key already exists. */
  set(key: string, value: string, options?: SetOptions): Promise<boolean>;
  /** Deletes keys; returns how many existed. */
  delete(...keys: string[]): Promise<number>;
  /**
   * Atomic read-and-delete: of any number of concurrent callers for one key, exactly one gets the value, the
   * others get undefined. For single-use values (login tokens, OAuth state, back-channel logout jti).
   */
  consume(key: string): Promise<string | undefined>;
  /**
   * Atomic compare-and-set: writes `next` only if the current value equals `expected` (undefined = must be absent).
   * Returns true when it wrote. The rotation primitive: of concurrent callers with the same `expected`, one wins.
   */
  compareAndSet(key: string, expected: string | undefined, next: string, options?: SetOptions): Promise<boolean>;

  /**
   * Adds `word` to the space-separated words of the string at `key` (an absent key becomes `word`) unless it is
   * there already, in one atomic step; returns whether it was added. A plain write: an expiry on the key is cleared.
   * The compact session indexes (issue 19) are such strings; one call instead of a read and a compare-and-set.
   */
  addWord(key: string, word: string): Promise<boolean>;
  /**
   * Removes `word` from the space-separated words of the string at `key`, in one atomic step; returns whether it was
   * there. The last word leaves "" that expires after `emptyTtlMs` (an `addWord` before then revives it), rather
   * than a delete, so a concurrent add is never lost. An absent key stays absent.
   */
  removeWord(key: string, word: string, emptyTtlMs: number): Promise<boolean>;

  /** Set members (indexes such as user → session ids). `ttlMs` refreshes the whole set's expiry when given. */
  addToSet(key: string, member: string, ttlMs?: number): Promise<void>;
  removeFromSet(key: string, member: string): Promise<void>;
  setMembers(key: string): Promise<string[]>;

  /**
   * Token bucket (shared by all replicas): takes one token from the bucket at `key` holding at most `burst`
   * tokens and refilled at `perSecond`. `nowMs` comes from the caller's clock so tests can move time.
   * Returns allowed, or the wait until one token is available.
   */
  takeToken(key: string, bucket: TokenBucket, nowMs: number): Promise<TokenBucketResult>;

  /**
   * `takeToken` on each bucket in order, stopping at the first that refuses (the later ones are left untouched):
   * the same as awaiting them one by one, in one round trip where the backend can (issue 19, login cost).
   */
  takeTokens(takes: readonly BucketTake[], nowMs: number): Promise<TokenBucketResult>;

  /**
   * The writes, in order, and then the values of `readKeys`, as ONE atomic step where the backend can (memory; one
   * Redis server or Sentinel's master: one script), so that no other client's command falls between them and every
   * read sees every write; else the writes, then the reads (Redis Cluster: the keys lie in different hash slots),
   * which still reads after every write. A key of the wrong type fails the call before anything is written, except
   * on Cluster. For a write that must be followed by a look at what a concurrent writer may have marked meanwhile
   * (a session, then the back-channel logout markers: issue 19, login cost — one round trip instead of two).
   */
  writeThenRead(writes: readonly StoreWrite[], readKeys: readonly string[]): Promise<(string | undefined)[]>;

  /**
   * Mutual exclusion across replicas: returns a release function when acquired, undefined when someone else
   * holds the lock. The lock expires after `ttlMs` even if never released (a crashed holder cannot block forever).
   */
  tryLock(key: string, ttlMs: number): Promise<(() => Promise<void>) | undefined>;

  /**
   * Whether any live key starts with `prefix` (after the adapter's own prefix). A scan of the key space: for start-up
   * decisions only (the session format's fresh-store check), never on a request path. Under Redis Cluster it asks
   * every master.
   */
  hasKeyWithPrefix(prefix: string): Promise<boolean>;

  /** Round trip to the backend (readiness probe); throws when unreachable. */
  ping(): Promise<void>;
  /** Closes connections; further calls fail. */
  close(): Promise<void>;
  /** Adapter name for logs and metrics: 'memory' or 'redis'. */
  readonly kind: 'memory' | 'redis';
}

/** One write of `writeThenRead`: `set` (a plain write, no expiry), `addToSet`, `addWord` as their methods do. */
export type StoreWrite =
  | { readonly op: 'set'; readonly key: string; readonly value: string }
  | { readonly op: 'addToSet'; readonly key: string; readonly member: string }
  | { readonly op: 'addWord'; readonly key: string; readonly word: string };

/** One StoreWrite as its own store call, where writes cannot be one step (Redis Cluster; the session import). */
export function applyStoreWrite(store: Store, write: StoreWrite): Promise<unknown> {
  switch (write.op) {
    case 'set':
      return store.set(write.key, write.value);
    case 'addToSet':
      return store.addToSet(write.key, write.member);
    case 'addWord':
      return store.addWord(write.key, write.word);
  }
}

export interface SetOptions {
  readonly ttlMs?: number;
  readonly onlyIfAbsent?: boolean;
}

export interface TokenBucket {
  readonly burst: number;
  readonly perSecond: number;
}

export interface BucketTake {
  readonly key: string;
  readonly bucket: TokenBucket;
}

export type TokenBucketResult = { readonly allowed: true } | { readonly allowed: false; readonly retryAfterMs: number };

/** The backend could not answer (connection lost, timeout): callers answer 503, never a 500 or a logout. */
export class StoreUnavailableError extends Error {
  constructor(operation: string, cause: unknown) {
    super(`store ${operation} failed: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
    this.name = 'StoreUnavailableError';
  }
}

/** The words of a string `addWord` and `removeWord` maintain (absent or "" has none). */
export function wordsOf(value: string | undefined): string[] {
  return value === undefined || value === '' ? [] : value.split(' ');
}

/** A word for `addWord`: not empty, no whitespace (it would split into several words). */
export function checkWord(word: string): string {
  if (word === '' || /\s/.test(word)) throw new Error(`not a word for addWord: ${JSON.stringify(word)}`);
  return word;
}

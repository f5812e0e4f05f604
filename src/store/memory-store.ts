import { randomBytes } from 'node:crypto';
import { systemClock, type Clock } from '../clock.js';
import { checkTtlMs } from './argument-checks.js';
import { checkWord, wordsOf, type BucketTake, type SetOptions, type Store, type StoreWrite, type TokenBucket, type TokenBucketResult } from './store.js';
import { checkTokenBucket, takeTokensInTurn, tokenBucketStep, type BucketState } from './token-bucket.js';

/** Bounds memory held by expired entries nobody reads again; reads evict lazily in between. */
const SWEEP_INTERVAL_MS = 60_000;

type Value =
  | { readonly type: 'string'; readonly data: string }
  | { readonly type: 'set'; readonly data: Set<string> }
  | { readonly type: 'bucket'; readonly data: BucketState };

interface Entry {
  value: Value;
  expiresAt: number | undefined;
}

/**
 * Single-process Store. Every method runs to completion without awaiting, which is what makes consume,
 * compareAndSet and tryLock atomic here. Type mismatches fail like Redis does (WRONGTYPE) so code that only ever
 * ran against memory does not break on Redis.
 */
export class MemoryStore implements Store {
  readonly kind = 'memory' as const;
  private readonly entries = new Map<string, Entry>();
  private readonly clock: Clock;
  private readonly sweeper: NodeJS.Timeout;
  private closed = false;

  constructor(options: { clock?: Clock } = {}) {
    this.clock = options.clock ?? systemClock;
    this.sweeper = setInterval(() => this.sweep(), SWEEP_INTERVAL_MS);
    this.sweeper.unref();
  }

  async get(key: string): Promise<string | undefined> {
    this.assertOpen();
    return this.readString(key);
  }

  async getMany(keys: readonly string[]): Promise<(string | undefined)[]> {
    this.assertOpen();
    // Like MGET: a key of another type reads as absent rather than failing the batch.
    return keys.map((key) => {
      const entry = this.live(key);
      return entry?.value.type === 'string' ? entry.value.data : undefined;
    });
  }

  async set(key: string, value: string, options: SetOptions = {}): Promise<boolean> {
    this.assertOpen();
    const ttlMs = checkTtlMs(options.ttlMs);
    if (options.onlyIfAbsent === true && this.live(key) !== undefined) return false;
    this.write(key, { type: 'string', data: value }, ttlMs);
    return true;
  }

  async delete(...keys: string[]): Promise<number> {
    this.assertOpen();
    let existed = 0;
    for (const key of new Set(keys)) {
      if (this.live(key) !== undefined) existed += 1;
      this.entries.delete(key);
    }
    return existed;
  }

  async consume(key: string): Promise<string | undefined> {
    this.assertOpen();
    const value = this.readString(key);
    if (value !== undefined) this.entries.delete(key);
    return value;
  }

  async compareAndSet(key: string, expected: string | undefined, next: string, options: SetOptions = {}): Promise<boolean> {
    this.assertOpen();
    const ttlMs = checkTtlMs(options.ttlMs);
    if (this.readString(key) !== expected) return false;
    this.write(key, { type: 'string', data: next }, ttlMs);
    return true;
  }

  async addWord(key: string, word: string): Promise<boolean> {
    this.assertOpen();
    checkWord(word);
    return this.appendWord(key, word);
  }

  async removeWord(key: string, word: string, emptyTtlMs: number): Promise<boolean> {
    this.assertOpen();
    checkWord(word);
    const ttlMs = checkTtlMs(emptyTtlMs);
    const words = wordsOf(this.readString(key));
    if (!words.includes(word)) return false;
    const rest = words.filter((candidate) => candidate !== word);
    this.write(key, { type: 'string', data: rest.join(' ') }, rest.length === 0 ? ttlMs : undefined);
    return true;
  }

  async addToSet(key: string, member: string, ttlMs?: number): Promise<void> {
    this.assertOpen();
    this.addMember(key, member, checkTtlMs(ttlMs));
  }

  async removeFromSet(key: string, member: string): Promise<void> {
    this.assertOpen();
    const entry = this.live(key);
    if (entry === undefined) return;
    const members = expectType(entry.value, 'set');
    members.delete(member);
    // Redis deletes a set when its last member goes; mirror that so a later addToSet starts without the old TTL.
    if (members.size === 0) this.entries.delete(key);
  }

  async setMembers(key: string): Promise<string[]> {
    this.assertOpen();
    const entry = this.live(key);
    return entry === undefined ? [] : [...expectType(entry.value, 'set')];
  }

  async takeToken(key: string, bucket: TokenBucket, nowMs: number): Promise<TokenBucketResult> {
    this.assertOpen();
    checkTokenBucket(bucket, nowMs);
    const entry = this.live(key);
    const previous = entry === undefined ? undefined : expectType(entry.value, 'bucket');
    const step = tokenBucketStep(previous, bucket, nowMs);
    this.write(key, { type: 'bucket', data: step.state }, step.refillMs);
    return step.retryAfterMs === 0 ? { allowed: true } : { allowed: false, retryAfterMs: step.retryAfterMs };
  }

  async takeTokens(takes: readonly BucketTake[], nowMs: number): Promise<TokenBucketResult> {
    for (const take of takes) checkTokenBucket(take.bucket, nowMs);
    return takeTokensInTurn(takes, (key, bucket, now) => this.takeToken(key, bucket, now), nowMs);
  }

  async writeThenRead(writes: readonly StoreWrite[], readKeys: readonly string[]): Promise<(string | undefined)[]> {
    this.assertOpen();
    // Every check before the first write, so a wrong type or word leaves everything as it was (all or nothing).
    for (const write of writes) {
      const entry = this.live(write.key);
      if (write.op === 'addToSet' && entry !== undefined) expectType(entry.value, 'set');
      if (write.op === 'addWord') {
        checkWord(write.word);
        if (entry !== undefined) expectType(entry.value, 'string');
      }
    }
    for (const write of writes) {
      if (write.op === 'set') this.write(write.key, { type: 'string', data: write.value }, undefined);
      else if (write.op === 'addToSet') this.addMember(write.key, write.member, undefined);
      else this.appendWord(write.key, write.word);
    }
    return this.getMany(readKeys);
  }

  async tryLock(key: string, ttlMs: number): Promise<(() => Promise<void>) | undefined> {
    this.assertOpen();
    const checkedTtl = checkTtlMs(ttlMs);
    if (this.live(key) !== undefined) return undefined;
    const owner = randomBytes(16).toString('hex');
    this.write(key, { type: 'string', data: owner }, checkedTtl);
    return async () => {
      // After expiry someone else may hold the lock under the same key; only our own token may be removed.
      const entry = this.live(key);
      if (entry?.value.type === 'string' && entry.value.data === owner) this.entries.delete(key);
    };
  }

  async hasKeyWithPrefix(prefix: string): Promise<boolean> {
    this.assertOpen();
    for (const key of this.entries.keys()) if (key.startsWith(prefix) && this.live(key) !== undefined) return true;
    return false;
  }

  async ping(): Promise<void> {
    this.assertOpen();
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.sweeper);
    this.entries.clear();
  }

  private assertOpen(): void {
    if (this.closed) throw new Error('MemoryStore is closed');
  }

  /** The entry at `key` unless expired; an expired one is evicted on the way. */
  private live(key: string): Entry | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    if (entry.expiresAt !== undefined && entry.expiresAt <= this.clock.now()) {
      this.entries.delete(key);
      return undefined;
    }
    return entry;
  }

  private readString(key: string): string | undefined {
    const entry = this.live(key);
    return entry === undefined ? undefined : expectType(entry.value, 'string');
  }

  /** Replaces whatever was at `key`; like Redis SET, no TTL means the old one is dropped too. */
  private write(key: string, value: Value, ttlMs: number | undefined): void {
    this.entries.set(key, { value, expiresAt: ttlMs === undefined ? undefined : this.clock.now() + ttlMs });
  }

  private appendWord(key: string, word: string): boolean {
    const words = wordsOf(this.readString(key));
    if (words.includes(word)) return false;
    this.write(key, { type: 'string', data: [...words, word].join(' ') }, undefined);
    return true;
  }

  private addMember(key: string, member: string, ttlMs: number | undefined): void {
    const entry = this.live(key);
    if (entry === undefined) {
      this.write(key, { type: 'set', data: new Set([member]) }, ttlMs);
      return;
    }
    expectType(entry.value, 'set').add(member);
    if (ttlMs !== undefined) entry.expiresAt = this.clock.now() + ttlMs;
  }

  private sweep(): void {
    const now = this.clock.now();
    for (const [key, entry] of this.entries) {
      if (entry.expiresAt !== undefined && entry.expiresAt <= now) this.entries.delete(key);
    }
  }
}

interface DataOfType {
  string: string;
  set: Set<string>;
  bucket: BucketState;
}

function expectType<T extends Value['type']>(value: Value, type: T): DataOfType[T] {
  if (value.type !== type) throw new Error('WRONGTYPE Operation against a key holding the wrong kind of value');
  return value.data as DataOfType[T];
}

import type { BucketTake, TokenBucket, TokenBucketResult } from './store.js';

export function checkTokenBucket(bucket: TokenBucket, nowMs: number): void {
  if (!Number.isFinite(bucket.burst) || bucket.burst < 1) throw new RangeError(`burst must be >= 1, got ${bucket.burst}`);
  if (!Number.isFinite(bucket.perSecond) || bucket.perSecond <= 0) {
    throw new RangeError(`perSecond must be > 0, got ${bucket.perSecond}`);
  }
  if (!Number.isFinite(nowMs)) throw new RangeError(`nowMs must be finite, got ${nowMs}`);
}

export interface BucketState {
  readonly tokens: number;
  readonly updatedAtMs: number;
}

export interface BucketStep {
  readonly state: BucketState;
  /** 0 when a token was taken. */
  readonly retryAfterMs: number;
  /** How long until the bucket is full again: past that, forgetting the state changes nothing. */
  readonly refillMs: number;
}

/**
 * One refill-then-take step. The Lua script in redis-store.ts performs the same arithmetic; keep the two in step.
 * A `nowMs` earlier than the stored timestamp (another replica's clock runs ahead) refills nothing rather than
 * moving time backwards.
 */
export function tokenBucketStep(previous: BucketState | undefined, bucket: TokenBucket, nowMs: number): BucketStep {
  let tokens = previous?.tokens ?? bucket.burst;
  let updatedAtMs = previous?.updatedAtMs ?? nowMs;
  if (nowMs > updatedAtMs) {
    tokens = Math.min(bucket.burst, tokens + ((nowMs - updatedAtMs) * bucket.perSecond) / 1000);
    updatedAtMs = nowMs;
  }
  let retryAfterMs = 0;
  if (tokens >= 1) tokens -= 1;
  else retryAfterMs = Math.ceil(((1 - tokens) * 1000) / bucket.perSecond);
  const refillMs = Math.max(1, Math.ceil(((bucket.burst - tokens) * 1000) / bucket.perSecond));
  return { state: { tokens, updatedAtMs }, retryAfterMs, refillMs };
}

/**
 * `takeTokens` as one `takeToken` after the other, stopping at the first bucket that refuses: the memory store's
 * way, and Redis Cluster's (its buckets lie in different hash slots, out of one script's reach).
 */
export async function takeTokensInTurn(
  takes: readonly BucketTake[],
  takeToken: (key: string, bucket: TokenBucket, nowMs: number) => Promise<TokenBucketResult>,
  nowMs: number,
): Promise<TokenBucketResult> {
  for (const take of takes) {
    const result = await takeToken(take.key, take.bucket, nowMs);
    if (!result.allowed) return result;
  }
  return { allowed: true };
}

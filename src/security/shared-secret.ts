import { createHash, timingSafeEqual } from 'node:crypto';
import type { Context } from 'koa';

/** The token of an `Authorization: Bearer <token>` header; undefined when absent or of another scheme. */
export function bearerTokenOf(ctx: Context): string | undefined {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(ctx.get('authorization'));
  return match?.[1];
}

/** A secret's digest, computed once at start-up for `matchesSecret`. */
export function secretDigest(secret: string): Buffer {
  return createHash('sha256').update(secret).digest();
}

/** Constant-time: both sides are hashed to equal length first, so neither content nor length leaks. */
export function matchesSecret(presented: string | undefined, expectedDigest: Buffer): boolean {
  return timingSafeEqual(secretDigest(presented ?? ''), expectedDigest) && presented !== undefined;
}

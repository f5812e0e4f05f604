import { createHash, timingSafeEqual } from 'node:crypto';
import type { Context } from 'koa';

/** The token of an `Authorization: Bearer <token>` header value; undefined when absent or of another scheme. */
export function bearerTokenOfHeader(header: string | undefined): string | undefined {
  return header === undefined ? undefined : /^Bearer\s+(\S+)\s*$/i.exec(header)?.[1];
}

export function bearerTokenOf(ctx: Context): string | undefined {
  return bearerTokenOfHeader(ctx.get('authorization'));
}

/** A secret's digest, computed once at start-up for `matchesSecret`. */
export function secretDigest(secret: string): Buffer {
  return createHash('sha256').update(secret).digest();
}

/** Constant-time: both sides are hashed to equal length first, so neither content nor length leaks. */
export function matchesSecret(presented: string | undefined, expectedDigest: Buffer): boolean {
  return timingSafeEqual(secretDigest(presented ?? ''), expectedDigest) && presented !== undefined;
}

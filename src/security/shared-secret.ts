import { hash, timingSafeEqual } from 'node:crypto';

/** A secret's digest, computed once at start-up for `matchesSecret`. */
export function secretDigest(secret: string): Buffer {
  return hash('sha256', secret, 'buffer');
}

/** Constant-time: both sides are hashed to equal length first, so neither content nor length leaks. */
export function matchesSecret(presented: string | undefined, expectedDigest: Buffer): boolean {
  return timingSafeEqual(secretDigest(presented ?? ''), expectedDigest) && presented !== undefined;
}

/** Whether the presented secret is any of them; every digest is compared, so timing does not tell which matched. */
export function matchesAnySecret(presented: string | undefined, expectedDigests: readonly Buffer[]): boolean {
  let matched = false;
  for (const digest of expectedDigests) matched = matchesSecret(presented, digest) || matched;
  return matched;
}

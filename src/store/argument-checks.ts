/**
 * Argument rules shared by every adapter, so a caller's mistake fails the same way on memory as on Redis instead of
 * passing in tests and failing in production (Redis rejects `PX 0`).
 */

/** Whole milliseconds, rounded up so a value never lives shorter than asked; undefined stays "no expiry". */
export function checkTtlMs(ttlMs: number | undefined): number | undefined {
  if (ttlMs === undefined) return undefined;
  if (!Number.isFinite(ttlMs) || ttlMs <= 0) throw new RangeError(`ttlMs must be a positive number, got ${ttlMs}`);
  return Math.ceil(ttlMs);
}

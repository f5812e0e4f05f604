/**
 * Durations and sizes as admins already write them in Synapse's homeserver.yaml: `"30s"`, `"5m"`, `"1h"`, `"2d"`,
 * `"1w"`, `"1y"`, `"500ms"`, or a bare integer meaning milliseconds (Synapse's `parse_duration`). Sizes: `"64KiB"`,
 * `"1M"`, or a bare integer meaning bytes (Synapse's `parse_size` uses binary K/M).
 */

const SECOND = 1000;
const DURATION_UNITS: Readonly<Record<string, number>> = {
  ms: 1,
  s: SECOND,
  m: 60 * SECOND,
  h: 60 * 60 * SECOND,
  d: 24 * 60 * 60 * SECOND,
  w: 7 * 24 * 60 * 60 * SECOND,
  y: 365 * 24 * 60 * 60 * SECOND,
};

const SIZE_UNITS: Readonly<Record<string, number>> = {
  '': 1,
  b: 1,
  k: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gib: 1024 ** 3,
};

export type Parsed = { readonly ok: true; readonly value: number } | { readonly ok: false; readonly message: string };

const DURATION_PATTERN = /^\s*(\d+)\s*(ms|s|m|h|d|w|y)?\s*$/;
const SIZE_PATTERN = /^\s*(\d+)\s*([a-z]*)\s*$/i;

/** Milliseconds from a Synapse-style duration. */
export function parseDuration(input: unknown): Parsed {
  if (typeof input === 'number') {
    return Number.isSafeInteger(input) && input >= 0
      ? { ok: true, value: input }
      : { ok: false, message: 'must be a whole number of milliseconds or a duration such as "30s", "5m", "1h"' };
  }
  if (typeof input !== 'string') return { ok: false, message: 'must be a duration such as "30s", "5m", "1h" or an integer in milliseconds' };
  const match = DURATION_PATTERN.exec(input);
  if (match === null) return { ok: false, message: `"${input}" is not a duration; use an integer with ms, s, m, h, d, w or y (e.g. "30s", "5m")` };
  const value = Number(match[1]) * (DURATION_UNITS[match[2] ?? 'ms'] ?? 1);
  if (!Number.isSafeInteger(value)) return { ok: false, message: `"${input}" is too large` };
  return { ok: true, value };
}

/** Bytes from a size. Decimal units (KB, MB) are refused: they are ambiguous, and Synapse reads K as 1024. */
export function parseByteSize(input: unknown): Parsed {
  if (typeof input === 'number') {
    return Number.isSafeInteger(input) && input >= 0 ? { ok: true, value: input } : { ok: false, message: 'must be a whole number of bytes or a size such as "64KiB", "1MiB"' };
  }
  if (typeof input !== 'string') return { ok: false, message: 'must be a size such as "64KiB", "1MiB" or an integer in bytes' };
  const match = SIZE_PATTERN.exec(input);
  const factor = match === null ? undefined : SIZE_UNITS[(match[2] ?? '').toLowerCase()];
  if (match === null || factor === undefined) return { ok: false, message: `"${input}" is not a size; use an integer with B, KiB (K), MiB (M) or GiB (G), e.g. "64KiB"` };
  const value = Number(match[1]) * factor;
  if (!Number.isSafeInteger(value)) return { ok: false, message: `"${input}" is too large` };
  return { ok: true, value };
}

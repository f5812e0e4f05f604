/**
 * Stored JSON records as a format (STYLE.md habit 15, issue 11). Each record type declares its name, the version it
 * writes, and one decoder per version it still reads; the module that owns the record keeps its key builder, type
 * and format side by side.
 *
 * Versions:
 * - version 0 is a record without `v`: what every release up to d73999c wrote. Readers must keep a decoder for it
 *   as long as such records can still be in a store, or a rolling upgrade logs people out;
 * - a new version is needed when a field changes meaning or type, or when a new field must not be dropped by an
 *   older replica that rewrites the record (it keeps unknown fields, see below, but cannot act on them);
 * - a record whose version has no decoder (written by a newer release, read during a rollback) is a miss;
 * - a format may write the new version only for the values that need it (`versionOf`): the others keep the previous
 *   version, so a rollback still reads them (the session record writes version 2 only for imported sessions).
 *
 * Decoders validate in place and keep fields they do not know, so an older replica's compare-and-set rewrite
 * carries a newer replica's optional additions through unchanged. They are hand-written type guards, not a schema
 * library: the session decoder runs on every introspection.
 */

/** What a record module needs to report a record it cannot read; pino's Logger fits. */
export interface RecordLogger {
  warn(fields: Record<string, unknown>, message: string): void;
}

/** A parsed JSON object, before it is known to be a record. */
export type Fields = Readonly<Record<string, unknown>>;

export interface RecordFormat<T> {
  /** For logs: which kind of record could not be read. */
  readonly name: string;
  /** The newest version `encode` writes. */
  readonly version: number;
  encode(value: T): string;
  /** The record held in `raw`; undefined when it is not JSON, not an object, of a version with no decoder, or of the wrong shape. */
  decode(raw: string): T | undefined;
  /** Why `decode(raw)` gave undefined. Parses again: for the warning only, off the hot path. */
  rejectionOf(raw: string): RecordRejection;
}

export type RecordRejection = 'not_json' | 'not_an_object' | 'unknown_version' | 'wrong_shape';

export interface RecordDefinition<T = never> {
  readonly name: string;
  readonly version: number;
  /** Version → whether an object of that version has the record's shape. Version 0 = written without `v`. */
  readonly decoders: Readonly<Record<number, (fields: Fields) => boolean>>;
  /** The version to write a given value as (default: `version`); for a value an older release can read as it is. */
  readonly versionOf?: (value: T) => number;
}

export function recordFormat<T extends object>(definition: RecordDefinition<T>): RecordFormat<T> {
  const { name, version, decoders } = definition;
  const versionOf = definition.versionOf ?? (() => version);
  if (!Object.hasOwn(decoders, version)) throw new Error(`record ${name}: no decoder for the version it writes (${version})`);
  const decoderOf = (v: unknown): ((fields: Fields) => boolean) | undefined => {
    const read = v === undefined ? 0 : v;
    return typeof read === 'number' && Object.hasOwn(decoders, read) ? decoders[read] : undefined;
  };
  return {
    name,
    version,
    encode: (value) => JSON.stringify({ v: versionOf(value), ...value }),
    decode(raw) {
      const fields = parseFields(raw);
      if (fields === undefined) return undefined;
      const decoder = decoderOf(fields.v);
      if (decoder === undefined || !decoder(fields)) return undefined;
      if (fields.v === undefined) return fields as T;
      // The version belongs to the envelope, not the value: callers get the same value whichever version was read.
      const { v: _version, ...value } = fields;
      return value as T;
    },
    rejectionOf(raw) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(raw);
      } catch {
        return 'not_json';
      }
      if (!isFields(parsed)) return 'not_an_object';
      return decoderOf(parsed.v) === undefined ? 'unknown_version' : 'wrong_shape';
    },
  };
}

/**
 * Reads a record: absent stays absent, and a record that does not decode is a miss plus one warning line, never a
 * throw and never a value of the wrong shape.
 */
export function readRecord<T>(format: RecordFormat<T>, raw: string | undefined, key: string, logger: RecordLogger): T | undefined {
  if (raw === undefined) return undefined;
  const value = format.decode(raw);
  if (value === undefined) {
    logger.warn({ event: 'store.record_unreadable', record: format.name, key, reason: format.rejectionOf(raw) }, 'store.record_unreadable');
  }
  return value;
}

function parseFields(raw: string): Fields | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    return undefined;
  }
  return isFields(parsed) ? parsed : undefined;
}

// Small guards the decoders are written with.

export function isFields(value: unknown): value is Fields {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function isString(value: unknown): value is string {
  return typeof value === 'string';
}

/** A finite number (timestamps in ms, counters); JSON cannot carry NaN, but a hand-edited record can carry a string. */
export function isNumber(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value);
}

export function isBoolean(value: unknown): value is boolean {
  return typeof value === 'boolean';
}

export function isStringArray(value: unknown): value is readonly string[] {
  return Array.isArray(value) && value.every(isString);
}

/** Absent, or present with the right type. `null` is not absent: no writer ever stores it. */
export function isOptional(value: unknown, guard: (value: unknown) => boolean): boolean {
  return value === undefined || guard(value);
}

import type { Clock } from '../clock.js';
import { isNumber, readRecord, recordFormat, type RecordLogger } from '../store/record-format.js';
import { StoreUnavailableError, type Store } from '../store/store.js';
import type { SessionWriteFormat } from './session-store.js';

/**
 * Which session format this replica writes (`store.session_format`, issue 19). The compact format (record version 4,
 * index layout 2) is unreadable to the previous release: during a rolling upgrade its replicas would answer
 * M_UNKNOWN_TOKEN for sessions the new ones create, and a rollback would log those clients out. So:
 * - `compact` and `compatible` are taken as configured;
 * - `auto` (the default) decides once per store: `compact` on a store that holds no session (a fresh install: no
 *   replica of an earlier release can be serving from it), `compatible` otherwise. The decision is remembered under
 *   `sessionFormatKeys.decision`, so a restart (by then the store holds sessions) keeps it, and replicas starting
 *   together agree (the first write wins). The in-memory store is always fresh: compact.
 */
export type SessionFormatSetting = 'auto' | SessionWriteFormat;

export const sessionFormatKeys = {
  /** The `auto` decision for this store (key prefix). Deleting it makes the next start decide again. */
  decision: 'session-format',
} as const;

export interface SessionFormatDecisionRecord {
  readonly format: SessionWriteFormat;
  /** When it was decided (ms), for an operator reading the store. */
  readonly decidedAt: number;
}

export const sessionFormatDecisionRecord = recordFormat<SessionFormatDecisionRecord>({
  name: 'session_format',
  version: 1,
  decoders: { 1: (f) => (f.format === 'compact' || f.format === 'compatible') && isNumber(f.decidedAt) },
});

/** How the format was chosen: for the start-up log line and the doctor. */
export type SessionFormatReason = 'configured' | 'memory_store' | 'fresh_store' | 'earlier_sessions' | 'scan_refused' | 'remembered';

export interface SessionFormatDecision {
  readonly format: SessionWriteFormat;
  readonly reason: SessionFormatReason;
}

/** Decides the format as described above; in `auto` on a store without a decision, records it. */
export async function decideSessionFormat(setting: SessionFormatSetting, store: Store, clock: Clock, logger: RecordLogger): Promise<SessionFormatDecision> {
  if (setting !== 'auto') return { format: setting, reason: 'configured' };
  if (store.kind === 'memory') return { format: 'compact', reason: 'memory_store' };
  const remembered = await readDecision(store, logger);
  if (remembered !== undefined) return { format: remembered, reason: 'remembered' };
  const proposed = await freshStoreFormat(store);
  const record = sessionFormatDecisionRecord.encode({ format: proposed.format, decidedAt: clock.now() });
  if (await store.set(sessionFormatKeys.decision, record, { onlyIfAbsent: true })) return proposed;
  // Another replica decided first: its decision stands (it may already be writing in that format).
  const theirs = await readDecision(store, logger);
  return theirs === undefined ? { format: 'compatible', reason: 'earlier_sessions' } : { format: theirs, reason: 'remembered' };
}

/** What `decideSessionFormat` would answer, without writing anything (the doctor). */
export async function previewSessionFormat(setting: SessionFormatSetting, store: Store, logger: RecordLogger): Promise<SessionFormatDecision> {
  if (setting !== 'auto') return { format: setting, reason: 'configured' };
  if (store.kind === 'memory') return { format: 'compact', reason: 'memory_store' };
  const remembered = await readDecision(store, logger);
  return remembered === undefined ? freshStoreFormat(store) : { format: remembered, reason: 'remembered' };
}

/** One line for the start-up log: what is written, why, and what to do next. */
export function describeSessionFormat(decision: SessionFormatDecision): string {
  if (decision.format === 'compact') {
    return decision.reason === 'configured'
      ? 'sessions are written in the compact format (store.session_format: compact); replicas of releases before it cannot read them'
      : `sessions are written in the compact format (${decision.reason === 'memory_store' ? 'in-memory store' : 'this store was empty when the format was decided'})`;
  }
  if (decision.reason === 'configured') return 'sessions are written in the compatible format (store.session_format: compatible), which the previous release reads';
  const why = decision.reason === 'scan_refused' ? 'the store refused the scan for earlier data' : 'this store already held data (sessions, bindings) when the format was decided';
  return `sessions are written in the compatible format, which the previous release reads (${why}); once every replica runs this release, set store.session_format: compact for about 40 % less Redis memory per session (sessions written after that are lost to a rollback before this release)`;
}

async function readDecision(store: Store, logger: RecordLogger): Promise<SessionWriteFormat | undefined> {
  const key = sessionFormatKeys.decision;
  return readRecord(sessionFormatDecisionRecord, await store.get(key), key, logger)?.format;
}

/**
 * Any key at all under the store's prefix — a session of any version, but also a binding, which outlives every
 * session — means replicas of an earlier release may be serving from this store (an idle deployment can have no
 * live session at upgrade time). Only a store with nothing in it is fresh. A scan the store refuses (a Redis ACL
 * without SCAN) cannot tell: the safe answer, compatible.
 */
async function freshStoreFormat(store: Store): Promise<SessionFormatDecision> {
  let found: boolean;
  try {
    found = await store.hasKeyWithPrefix('');
  } catch (err: unknown) {
    const cause = err instanceof StoreUnavailableError ? err.cause : err;
    if (cause instanceof Error && cause.message.startsWith('NOPERM')) return { format: 'compatible', reason: 'scan_refused' };
    throw err;
  }
  return found ? { format: 'compatible', reason: 'earlier_sessions' } : { format: 'compact', reason: 'fresh_store' };
}

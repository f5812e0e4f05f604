import type { Clock } from '../clock.js';
import { isBoolean, isFields, isNumber, isOptional, isString, isStringArray, readRecord, recordFormat, type Fields, type RecordFormat, type RecordLogger, type RecordRejection } from '../store/record-format.js';
import { applyStoreWrite, wordsOf, type Store, type StoreWrite } from '../store/store.js';
import { createHash, createHmac } from 'node:crypto';
import { COMPACT_SESSION_VERSION, decodeCompactSession, encodeCompactSession } from './compact-session-record.js';
import { opSubjectOf, type ImportedOrigin, type RefreshFamily, type Session, type SessionOrigin } from './session.js';
import { hashToken, looksLikeOurToken, mintToken, newSessionId, parseToken, randomBase62, sameHash, successorTokens } from './tokens.js';

const RETIRED_HASHES_KEPT = 8;

/**
 * How sessions are written (`store.session_format`, decided at start-up by session-format.ts). Both are always read.
 * - `compatible`: exactly what the previous release (aaa9c33) writes — JSON record versions 2 and 3, index layout 1 —
 *   so its replicas, during a rolling upgrade or after a rollback, keep every session;
 * - `compact`: record version 4 and index layout 2 (issue 19: at most 1 KB of Redis per session), which that release
 *   cannot read (its replicas would answer M_UNKNOWN_TOKEN, and clients log out).
 */
export type SessionWriteFormat = 'compact' | 'compatible';

/**
 * Store keys of the session model (one place, so a dump can be read and the layout changed safely).
 *
 * Index layout 1 (every release before issue 19, and the `compatible` format): sets `user-sessions:`, `sub-sessions:`,
 * `sid-sessions:` and a `device-session:` string naming the device's session.
 * Index layout 2 (the `compact` format): strings of space-separated session ids under short keys (`su:`, `sb:`,
 * `sd:`), the subject and the OP session id digested (a bounded key whatever the OP sends), and no device index (a
 * device's session is found among its user's few sessions). In Redis 7 a one-member set costs about 260 B and such a
 * string about 100 B, and most of these indexes have one member.
 * Both layouts are read, merged, and cleaned on removal, whichever format is written: a store may hold both during
 * the switch, and after a switch back.
 */
export const sessionKeys = {
  session: (id: string) => `session:${id}`,
  byUser: (localpart: string) => `user-sessions:${localpart}`,
  byDevice: (localpart: string, deviceId: string) => `device-session:${localpart}:${deviceId}`,
  bySid: (idpId: string, sid: string) => `sid-sessions:${idpId}:${sid}`,
  bySub: (idpId: string, sub: string) => `sub-sessions:${idpId}:${sub}`,
  userList: (localpart: string) => `su:${localpart}`,
  subList: (idpId: string, sub: string) => `sb:${idpId}:${digest(sub)}`,
  sidList: (idpId: string, sid: string) => `sd:${idpId}:${digest(sid)}`,
  /**
   * A homeserver-issued token imported by `migrate synapse` (issue 14) → its session id: the one store read that
   * recognises a foreign token. Never removed (about 100 bytes per imported token): Synapse keeps its token rows
   * after the switch, so a later import run must still see that a logged-out or expired token was imported once.
   */
  importedAccess: (hash: string) => `imported-access:${hash}`,
  importedRefresh: (hash: string) => `imported-refresh:${hash}`,
} as const;

/** 96 bits of SHA-256: an index key, never a secret; a collision would only add a candidate the callers re-check. */
function digest(value: string): string {
  return createHash('sha256').update(value).digest('base64url').slice(0, 16);
}

/** How long a layout-2 index emptied by its last removal stays (as "") before Redis drops it; an add revives it. */
const EMPTY_INDEX_TTL_MS = 3_600_000;

/**
 * The JSON session record (versions 0–3) under `sessionKeys.session`: what the `compatible` format writes, byte for
 * byte what release aaa9c33 writes. Version 1 added only the `v` field: releases up to d73999c wrote
 * the same fields without it (version 0), and such sessions stay valid (a rolling upgrade must not log anyone out);
 * the first update after the upgrade rewrites them as version 1 (now 2, below). Version 3 adds the `imported` origin
 * (issue 14) and is written only for imported sessions: every other session stays version 2, so a rollback to a
 * release before imports keeps them, and reads an imported session as a miss (with a warning), never as another kind.
 */
export const sessionRecord = recordFormat<Session>({
  name: 'session',
  version: 3,
  decoders: { 0: isSessionFieldsV1, 1: isSessionFieldsV1, 2: isSessionFieldsV2, 3: isSessionFieldsV3 },
  versionOf: (session) => (session.origin.kind === 'imported' ? 3 : 2),
});

/**
 * Every session record this release reads, under the key of session `id`: the JSON versions 0–3 (`sessionRecord`)
 * and the compact version 4 (compact-session-record.ts, which keeps the id in the key only). Writes the compact form.
 */
export function sessionRecordAt(id: string): RecordFormat<Session> {
  return {
    name: 'session',
    version: COMPACT_SESSION_VERSION,
    encode: encodeCompactSession,
    decode: (raw) => decodeSessionAt(raw, id),
    rejectionOf(raw): RecordRejection {
      return parseFields(raw)?.v === COMPACT_SESSION_VERSION ? 'wrong_shape' : sessionRecord.rejectionOf(raw);
    },
  };
}

/** The compact encoder writes the version first: one prefix test sends the JSON versions on without a second parse. */
const COMPACT_PREFIX = `{"v":${COMPACT_SESSION_VERSION},`;

/** Where an access token's session is: its id and the token's hash, or why there is none. */
type LocatedToken = { sessionId: string; hash: string; reason?: undefined } | { reason: 'malformed' | 'foreign' };

/** What `sessionRecordAt(id).decode` answers, without building the format (every read of a session). */
function decodeSessionAt(raw: string, id: string): Session | undefined {
  if (!raw.startsWith(COMPACT_PREFIX)) return sessionRecord.decode(raw);
  const fields = parseFields(raw);
  return fields?.v === COMPACT_SESSION_VERSION ? decodeCompactSession(fields, id) : sessionRecord.decode(raw);
}

function parseFields(raw: string): Fields | undefined {
  try {
    const parsed: unknown = JSON.parse(raw);
    return isFields(parsed) ? parsed : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Version 2 added `homeserverToken` (the sealed homeserver token of appservice and JWT logins). A new version, not an
 * optional field of version 1: a replica of the previous release would read such a session as a delegated-mode one
 * and serve it without the swap; with the version bump it reads it as a miss instead.
 */
function isSessionFieldsV2(f: Fields): boolean {
  return isSessionFieldsV1(f) && isOptional(f.homeserverToken, isString);
}

/** Version 3 (issue 14) adds the `imported` origin; written only for imported sessions. */
function isSessionFieldsV3(f: Fields): boolean {
  return isSessionFieldsWith(f, (origin) => isSessionOriginV1(origin) || isImportedOrigin(origin)) && isOptional(f.homeserverToken, isString);
}

function isSessionFieldsV1(f: Fields): boolean {
  return isSessionFieldsWith(f, isSessionOriginV1);
}


function isSessionFieldsWith(f: Fields, isSessionOrigin: (value: unknown) => boolean): boolean {
  return (
    isString(f.id) &&
    isString(f.localpart) &&
    isString(f.deviceId) &&
    isOptional(f.deviceDisplayName, isString) &&
    isOptional(f.oauthClientId, isString) &&
    isSessionOrigin(f.origin) &&
    isNumber(f.createdAt) &&
    isNumber(f.lastSeenAt) &&
    isOptional(f.ip, isString) &&
    isOptional(f.userAgent, isString) &&
    isString(f.accessTokenHash) &&
    isOptional(f.accessExpiresAt, isNumber) &&
    isOptional(f.refresh, isRefreshFamily) &&
    isOptional(f.softLoggedOut, isSoftLogout)
  );
}

/** An origin at an OP (password, SSO or login-token login); login grants carry one too. */
export function isOpOrigin(value: unknown): value is Extract<SessionOrigin, { kind: 'password' | 'sso' | 'token' }> {
  return (
    isFields(value) &&
    (value.kind === 'password' || value.kind === 'sso' || value.kind === 'token') &&
    isString(value.idpId) &&
    isString(value.issuer) &&
    isString(value.sub) &&
    isOptional(value.sid, isString) &&
    isOptional(value.sealedOpRefreshToken, isString) &&
    isOptional(value.appPasswordId, isString) &&
    isNumber(value.lastValidatedAt)
  );
}

function isSessionOriginV1(value: unknown): value is SessionOrigin {
  return isOpOrigin(value) || (isFields(value) && value.kind === 'appservice' && isString(value.appserviceId));
}

function isImportedOrigin(value: unknown): value is ImportedOrigin {
  return (
    isFields(value) &&
    value.kind === 'imported' &&
    isNumber(value.importedAt) &&
    isNumber(value.endsAt) &&
    isOptional(value.idpId, isString) &&
    isOptional(value.issuer, isString) &&
    isOptional(value.sub, isString)
  );
}

function isRefreshFamily(value: unknown): value is RefreshFamily {
  return (
    isFields(value) &&
    Number.isSafeInteger(value.generation) &&
    isString(value.currentHash) &&
    isOptional(value.previousHash, isString) &&
    isBoolean(value.successorUnused) &&
    isStringArray(value.retiredHashes)
  );
}

function isSoftLogout(value: unknown): boolean {
  return isFields(value) && isNumber(value.at) && value.reason === 'backchannel_logout';
}

export interface NewSession {
  readonly localpart: string;
  readonly deviceId: string;
  readonly deviceDisplayName?: string;
  readonly origin: Session['origin'];
  readonly oauthClientId?: string;
  readonly ip?: string;
  readonly userAgent?: string;
  /** Given: access token expires after this many ms and a refresh token is issued. */
  readonly refreshableLifetimeMs?: number;
  /** The homeserver's token for the device, already sealed (token-issuing backends only). */
  readonly sealedHomeserverToken?: string;
}

export interface IssuedTokens {
  readonly session: Session;
  readonly accessToken: string;
  readonly refreshToken?: string;
}

/** `foreign`: not a token of ours, and no imported token either (a native OIDC client's, or garbage). */
export type AuthenticateResult =
  | { readonly ok: true; readonly session: Session }
  | { readonly ok: false; readonly reason: 'malformed' | 'foreign' | 'unknown' | 'expired' };

export type RefreshResult =
  | { readonly ok: true; readonly session: Session; readonly accessToken: string; readonly refreshToken: string; readonly expiresInMs: number }
  | { readonly ok: false; readonly reason: 'malformed' | 'unknown' }
  | { readonly ok: false; readonly reason: 'reused'; readonly sessionId: string };

/** A session the homeserver issued, as `migrate synapse` read it (issue 14). Tokens in clear: hashed here. */
export interface ImportedSessionInput {
  readonly localpart: string;
  readonly deviceId: string;
  readonly deviceDisplayName?: string;
  readonly accessToken: string;
  /** Synapse's `valid_until_ms` (refreshable tokens): the access token expires then and the client refreshes. */
  readonly accessExpiresAt?: number;
  readonly refreshToken?: string;
  readonly origin: ImportedOrigin;
  readonly lastSeenAt?: number;
  readonly ip?: string;
  readonly userAgent?: string;
}

export type ImportOutcome = 'imported' | 'already_imported';

/** What `touch` answers when nothing is due (a settled promise, shared: nothing is allocated per call). */
const ALREADY_TOUCHED: Promise<void> = Promise.resolve();
const NOTHING_SEEN: { ip?: string; userAgent?: string } = Object.freeze({});

/**
 * Sessions on top of the Store. Holds only token hashes. Every write of a session goes through compare-and-set on
 * its JSON, so concurrent rotations and touches from several replicas cannot lose each other's updates.
 */
export class SessionStore {
  /** In-process listeners told the id of every session this replica removed or rewrote (caches drop it). */
  readonly #changeListeners = new Set<(sessionId: string) => void>();

  /** Calls `listener` with the id of each session this process removes or rewrites from now on. */
  onChange(listener: (sessionId: string) => void): void {
    this.#changeListeners.add(listener);
  }

  #changed(sessionId: string): void {
    for (const listener of this.#changeListeners) listener(sessionId);
  }

  /** The current key first, then the keys of earlier `sessions.encryption_key`s (secret-box.ts). */
  private readonly tokenDerivationKeys: readonly [Buffer, ...Buffer[]];

  /** How sessions and their indexes are written (both formats are always read). */
  readonly writeFormat: SessionWriteFormat;

  /** `options.writeFormat` defaults to `compatible`, the one every replica of the previous release reads. */
  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    tokenDerivationKeys: Buffer | readonly Buffer[],
    private readonly logger: RecordLogger,
    options: { readonly writeFormat?: SessionWriteFormat } = {},
  ) {
    const keys = Buffer.isBuffer(tokenDerivationKeys) ? [tokenDerivationKeys] : [...tokenDerivationKeys];
    if (keys.length === 0) throw new Error('SessionStore needs a token-derivation key');
    this.tokenDerivationKeys = keys as [Buffer, ...Buffer[]];
    this.writeFormat = options.writeFormat ?? 'compatible';
  }

  private get tokenDerivationKey(): Buffer {
    return this.tokenDerivationKeys[0];
  }

  private encode(session: Session): string {
    return this.writeFormat === 'compact' ? encodeCompactSession(session) : sessionRecord.encode(session);
  }

  async create(input: NewSession): Promise<IssuedTokens> {
    return (await this.createThenRead(input, [])).issued;
  }

  /**
   * `create`, and then the values of `readKeys` read in the same store step as the session's writes
   * (`Store.writeThenRead`): a look at what a concurrent writer may have marked, costing no round trip of its own.
   * A failed step is cleaned up as far as it can be (on Redis Cluster the writes are separate), then rethrown.
   */
  async createThenRead(input: NewSession, readKeys: readonly string[]): Promise<{ readonly issued: IssuedTokens; readonly values: (string | undefined)[] }> {
    const id = newSessionId();
    const now = this.clock.now();
    const accessToken = mintToken('access', id);
    const refreshToken = input.refreshableLifetimeMs === undefined ? undefined : mintToken('refresh', id);
    const session: Session = {
      id,
      localpart: input.localpart,
      deviceId: input.deviceId,
      ...(input.deviceDisplayName === undefined ? {} : { deviceDisplayName: input.deviceDisplayName }),
      origin: input.origin,
      ...(input.oauthClientId === undefined ? {} : { oauthClientId: input.oauthClientId }),
      createdAt: now,
      lastSeenAt: now,
      ...(input.ip === undefined ? {} : { ip: input.ip }),
      ...(input.userAgent === undefined ? {} : { userAgent: input.userAgent }),
      accessTokenHash: hashToken(accessToken),
      ...(input.refreshableLifetimeMs === undefined ? {} : { accessExpiresAt: now + input.refreshableLifetimeMs }),
      ...(refreshToken === undefined
        ? {}
        : { refresh: { generation: 1, currentHash: hashToken(refreshToken), successorUnused: false, retiredHashes: [] } }),
      ...(input.sealedHomeserverToken === undefined ? {} : { homeserverToken: input.sealedHomeserverToken }),
    };
    // The record and its indexes in one store step (one script on Redis), the reads after them.
    const writes: StoreWrite[] = [{ op: 'set', key: sessionKeys.session(id), value: this.encode(session) }];
    if (this.writeFormat === 'compatible') writes.push({ op: 'set', key: sessionKeys.byDevice(session.localpart, session.deviceId), value: id });
    writes.push(...this.indexWrites(session));
    let values: (string | undefined)[];
    try {
      values = await this.store.writeThenRead(writes, readKeys);
    } catch (err: unknown) {
      // Nothing may be written (one script) or some of it (Cluster): whatever was, goes; the caller sees the failure.
      await this.remove(id).catch(() => undefined);
      throw err;
    }
    return { issued: { session, accessToken, ...(refreshToken === undefined ? {} : { refreshToken }) }, values };
  }

  /** The user and subject index entries of a new session, in the written layout (the device index apart). */
  private indexWrites(session: Session): StoreWrite[] {
    const subject = opSubjectOf(session);
    const compact = this.writeFormat === 'compact';
    const keys = [
      compact ? sessionKeys.userList(session.localpart) : sessionKeys.byUser(session.localpart),
      ...(subject === undefined ? [] : [compact ? sessionKeys.subList(subject.idpId, subject.sub) : sessionKeys.bySub(subject.idpId, subject.sub)]),
      ...(subject?.sid === undefined ? [] : [compact ? sessionKeys.sidList(subject.idpId, subject.sid) : sessionKeys.bySid(subject.idpId, subject.sid)]),
    ];
    return keys.map((key): StoreWrite => (compact ? { op: 'addWord', key, word: session.id } : { op: 'addToSet', key, member: session.id }));
  }

  /**
   * Imports a homeserver-issued session (issue 14), idempotently: the session id is derived from the access token,
   * and a token whose import marker exists is never written again — whether its session is still live or was ended
   * since (a second run must not bring a logged-out token back). Writes in an order that a crash can interrupt: the
   * session (only if absent), its indexes, then the markers that make it findable and mark it done.
   */
  async importSession(input: ImportedSessionInput): Promise<ImportOutcome> {
    const accessHash = hashToken(input.accessToken);
    const markerKey = sessionKeys.importedAccess(accessHash);
    if ((await this.store.get(markerKey)) !== undefined) return 'already_imported';
    const id = this.importedSessionId(input.accessToken);
    const session: Session = {
      id,
      localpart: input.localpart,
      deviceId: input.deviceId,
      ...(input.deviceDisplayName === undefined ? {} : { deviceDisplayName: input.deviceDisplayName }),
      origin: input.origin,
      createdAt: input.origin.importedAt,
      lastSeenAt: input.lastSeenAt ?? input.origin.importedAt,
      ...(input.ip === undefined ? {} : { ip: input.ip }),
      ...(input.userAgent === undefined ? {} : { userAgent: input.userAgent }),
      accessTokenHash: accessHash,
      ...(input.accessExpiresAt === undefined ? {} : { accessExpiresAt: input.accessExpiresAt }),
      ...(input.refreshToken === undefined
        ? {}
        : {
            refresh: { generation: 1, currentHash: hashToken(input.refreshToken), successorUnused: false, retiredHashes: [] },
          }),
    };
    await this.store.set(sessionKeys.session(id), this.encode(session), { onlyIfAbsent: true });
    await Promise.all([
      // Layout 2 has no device index: `idOfDevice` prefers a login's session over an imported one, as this
      // only-if-absent write does.
      ...(this.writeFormat === 'compatible' ? [this.store.set(sessionKeys.byDevice(session.localpart, session.deviceId), id, { onlyIfAbsent: true })] : []),
      ...this.indexWrites(session).map((write) => applyStoreWrite(this.store, write)),
      ...(input.refreshToken === undefined ? [] : [this.store.set(sessionKeys.importedRefresh(hashToken(input.refreshToken)), id)]),
    ]);
    await this.store.set(markerKey, id);
    return 'imported';
  }

  /** Whether this homeserver token was imported already (the dry run's "already imported" count). */
  async wasImported(accessToken: string): Promise<boolean> {
    return (await this.store.get(sessionKeys.importedAccess(hashToken(accessToken)))) !== undefined;
  }

  /** Same token, same id, on every run and every replica: what makes a re-run of the import find its own writes. */
  private importedSessionId(accessToken: string): string {
    const digest = createHmac('sha256', this.tokenDerivationKey).update(`imported-session\0${accessToken}`).digest();
    let offset = 0;
    return randomBase62(16, (n) => {
      // 32 bytes give far more than the 16 base62 characters need; rehash in the (never seen) case they do not.
      const chunk = offset + n <= digest.length ? digest.subarray(offset, offset + n) : createHmac('sha256', digest).update(String(offset)).digest().subarray(0, n);
      offset += n;
      return chunk;
    });
  }

  /** The session, or undefined when absent or unreadable (then with a warning: see `sessionRecord`). */
  async get(id: string): Promise<Session | undefined> {
    const key = sessionKeys.session(id);
    const raw = await this.store.get(key);
    if (raw === undefined) return undefined;
    // The format (and its warning about an unreadable record) is built only for a record that does not decode.
    return decodeSessionAt(raw, id) ?? readRecord(sessionRecordAt(id), raw, key, this.logger);
  }

  /**
   * Resolves an access token to its live session: one store read for a token of ours (the session id is inside the
   * token); for any other token, one read of the import marker first (a miss: `foreign`), then the session.
   */
  async authenticate(accessToken: string): Promise<AuthenticateResult> {
    // An own token is located without a store read: no await (and no async frame) for it (issue 19).
    const located = this.locateOwnToken(accessToken) ?? (await this.locateImportedToken(accessToken));
    if (located.reason !== undefined) return { ok: false, reason: located.reason };
    const session = await this.get(located.sessionId);
    if (session === undefined || !sameHash(session.accessTokenHash, located.hash)) return { ok: false, reason: 'unknown' };
    if (isExpired(session, this.clock.now())) return { ok: false, reason: 'expired' };
    return { ok: true, session };
  }

  /** The session a well-formed access token belongs to, ignoring expiry (logout with an expired token). */
  async sessionOfToken(accessToken: string): Promise<Session | undefined> {
    const located = await this.locateAccessToken(accessToken);
    if (located.reason !== undefined) return undefined;
    const session = await this.get(located.sessionId);
    return session !== undefined && sameHash(session.accessTokenHash, located.hash) ? session : undefined;
  }

  private async locateAccessToken(token: string): Promise<LocatedToken> {
    return this.locateOwnToken(token) ?? this.locateImportedToken(token);
  }

  /** A token of ours (or one shaped like ours: malformed), located without the store; undefined for any other. */
  private locateOwnToken(token: string): LocatedToken | undefined {
    const parsed = parseToken(token);
    if (parsed !== undefined) return parsed.kind === 'access' ? { sessionId: parsed.sessionId, hash: parsed.hash } : { reason: 'malformed' };
    if (looksLikeOurToken(token)) return { reason: 'malformed' };
    return undefined;
  }

  /** Any other token: a homeserver-issued one imported by `migrate synapse`, found by its import marker. */
  private async locateImportedToken(token: string): Promise<LocatedToken> {
    const hash = hashToken(token);
    const sessionId = await this.store.get(sessionKeys.importedAccess(hash));
    return sessionId === undefined ? { reason: 'foreign' } : { sessionId, hash };
  }

  /** The session id a refresh token names: inside ours, through the import marker for a homeserver-issued one. */
  async sessionIdOfRefreshToken(refreshToken: string): Promise<{ sessionId: string; hash: string } | undefined> {
    const parsed = parseToken(refreshToken);
    if (parsed !== undefined) return parsed.kind === 'refresh' ? { sessionId: parsed.sessionId, hash: parsed.hash } : undefined;
    if (looksLikeOurToken(refreshToken)) return undefined;
    const hash = hashToken(refreshToken);
    const sessionId = await this.store.get(sessionKeys.importedRefresh(hash));
    return sessionId === undefined ? undefined : { sessionId, hash };
  }

  /**
   * Marks the first use of a freshly rotated pair (the spec's moment the previous refresh token dies) and updates
   * last-seen at most once a minute, so the hot path writes rarely.
   */
  touch(session: Session, seen: { ip?: string; userAgent?: string } = NOTHING_SEEN): Promise<void> {
    const now = this.clock.now();
    const needsRetire = session.refresh?.successorUnused === true;
    // Nearly every call (each introspection): one shared settled promise rather than an async call's own.
    if (!needsRetire && now - session.lastSeenAt < 60_000) return ALREADY_TOUCHED;
    return this.touchNow(session, seen, now);
  }

  private async touchNow(session: Session, seen: { ip?: string; userAgent?: string }, now: number): Promise<void> {
    await this.update(session.id, (current) => ({
      ...current,
      lastSeenAt: now,
      ...(seen.ip === undefined ? {} : { ip: seen.ip }),
      ...(seen.userAgent === undefined ? {} : { userAgent: seen.userAgent }),
      // Only the use of the CURRENT access token retires the previous refresh token: a stale snapshot (this token
      // was rotated away meanwhile, and the new pair may never have reached the client) must not.
      ...(current.refresh?.successorUnused && sameHash(current.accessTokenHash, session.accessTokenHash) ? { refresh: retirePrevious(current.refresh) } : {}),
    }));
  }

  /**
   * Rotates a refresh token. Idempotent: the same refresh token presented again (concurrently, or retried after a
   * lost response) yields the same pair until the new pair is used; exactly one store write happens per rotation.
   */
  async refresh(refreshToken: string, lifetimeMs: number): Promise<RefreshResult> {
    const parsed = await this.sessionIdOfRefreshToken(refreshToken);
    if (parsed === undefined) return { ok: false, reason: 'malformed' };
    const successors = successorTokens(refreshToken, parsed.sessionId, this.tokenDerivationKey);

    for (let attempt = 0; attempt < 20; attempt++) {
      const key = sessionKeys.session(parsed.sessionId);
      const raw = await this.store.get(key);
      const session = readRecord(sessionRecordAt(parsed.sessionId), raw, key, this.logger);
      if (raw === undefined || session === undefined) return { ok: false, reason: 'unknown' };
      const family = session.refresh;
      if (family === undefined) return { ok: false, reason: 'unknown' };
      const now = this.clock.now();
      // An imported session cannot be refreshed past its imported lifetime (it has no OP grant to extend it).
      const endsAt = session.origin.kind === 'imported' ? session.origin.endsAt : Number.POSITIVE_INFINITY;
      if (endsAt <= now) return { ok: false, reason: 'unknown' };
      const accessLifetimeMs = Math.min(lifetimeMs, endsAt - now);

      if (family.previousHash !== undefined && sameHash(family.previousHash, parsed.hash)) {
        if (family.successorUnused) {
          const expiresInMs = Math.max(0, (session.accessExpiresAt ?? now) - now);
          return { ok: true, session, ...this.#successorsOfRotation(refreshToken, parsed.sessionId, family.currentHash, successors), expiresInMs };
        }
        return { ok: false, reason: 'reused', sessionId: session.id };
      }
      if (family.retiredHashes.some((hash) => sameHash(hash, parsed.hash))) return { ok: false, reason: 'reused', sessionId: session.id };
      if (!sameHash(family.currentHash, parsed.hash)) return { ok: false, reason: 'unknown' };

      const rotated: Session = {
        ...session,
        lastSeenAt: now,
        accessTokenHash: hashToken(successors.accessToken),
        accessExpiresAt: now + accessLifetimeMs,
        refresh: {
          generation: family.generation + 1,
          currentHash: hashToken(successors.refreshToken),
          previousHash: family.currentHash,
          successorUnused: true,
          retiredHashes: [...(family.previousHash === undefined ? [] : [family.previousHash]), ...family.retiredHashes].slice(0, RETIRED_HASHES_KEPT),
        },
      };
      // Compared against the string read, not a re-encoding: an older version's record is rewritten in the written format here.
      if (await this.store.compareAndSet(key, raw, this.encode(rotated))) {
        this.#changed(parsed.sessionId);
        return { ok: true, session: rotated, ...successors, expiresInMs: accessLifetimeMs };
      }
      // Lost the race: another request rotated (or touched) the session; read it again.
    }
    throw new Error(`refresh of session ${parsed.sessionId} kept losing compare-and-set`);
  }

  /**
   * The pair a rotation answered: derived with the current key, or — when `sessions.encryption_key` changed between
   * a refresh and its retry — with the earlier key that derived it, so the retry still gets the tokens the session
   * holds.
   */
  #successorsOfRotation(refreshToken: string, sessionId: string, currentHash: string, withCurrentKey: { accessToken: string; refreshToken: string }) {
    if (sameHash(currentHash, hashToken(withCurrentKey.refreshToken))) return withCurrentKey;
    for (const key of this.tokenDerivationKeys.slice(1)) {
      const candidate = successorTokens(refreshToken, sessionId, key);
      if (sameHash(currentHash, hashToken(candidate.refreshToken))) return candidate;
    }
    return withCurrentKey;
  }

  /**
   * Removes the session and its index entries. Returns the session that was removed, if any. An unreadable record is
   * removed too (callers get here after reading it, so only a concurrent rewrite can make it unreadable), but its
   * index entries cannot be found and stay until their own cleanup.
   */
  async remove(id: string): Promise<Session | undefined> {
    const key = sessionKeys.session(id);
    const session = readRecord(sessionRecordAt(id), await this.store.consume(key), key, this.logger);
    this.#changed(id);
    if (session === undefined) return undefined;
    // Both layouts, whatever the written format: the session may have been created under either.
    const deviceKey = sessionKeys.byDevice(session.localpart, session.deviceId);
    const cleanups: Promise<unknown>[] = [
      // Only drop the device index if it still points at this session (a newer login may own the device now).
      this.store.get(deviceKey).then((owner) => (owner === id ? this.store.delete(deviceKey) : 0)),
      this.store.removeFromSet(sessionKeys.byUser(session.localpart), id),
      this.removeFromIndex(sessionKeys.userList(session.localpart), id),
    ];
    const subject = opSubjectOf(session);
    if (subject !== undefined) {
      cleanups.push(this.store.removeFromSet(sessionKeys.bySub(subject.idpId, subject.sub), id), this.removeFromIndex(sessionKeys.subList(subject.idpId, subject.sub), id));
      if (subject.sid !== undefined) {
        cleanups.push(this.store.removeFromSet(sessionKeys.bySid(subject.idpId, subject.sid), id), this.removeFromIndex(sessionKeys.sidList(subject.idpId, subject.sid), id));
      }
    }
    await Promise.all(cleanups);
    return session;
  }

  /** Ids of the user's sessions, both index layouts merged (callers read each session, and may find it gone). */
  async idsOfUser(localpart: string): Promise<string[]> {
    return this.idsInBoth(sessionKeys.byUser(localpart), sessionKeys.userList(localpart));
  }

  async idsOfSub(idpId: string, sub: string): Promise<string[]> {
    return this.idsInBoth(sessionKeys.bySub(idpId, sub), sessionKeys.subList(idpId, sub));
  }

  async idsOfSid(idpId: string, sid: string): Promise<string[]> {
    return this.idsInBoth(sessionKeys.bySid(idpId, sid), sessionKeys.sidList(idpId, sid));
  }

  /**
   * The live session on a device. While the user has no layout-2 session, layout 1's device index answers, as it
   * did before (one read). Otherwise the device's session is found among the user's sessions of both layouts: a
   * login's session before an imported one (an import never takes a device over, see `importSession`), then the
   * newest.
   */
  async idOfDevice(localpart: string, deviceId: string): Promise<string | undefined> {
    // One round trip for the three reads (pipelined), then one for the sessions when layout 2 is involved.
    const [pointer, list, members] = await Promise.all([
      this.store.get(sessionKeys.byDevice(localpart, deviceId)),
      this.store.get(sessionKeys.userList(localpart)),
      this.store.setMembers(sessionKeys.byUser(localpart)),
    ]);
    if (wordsOf(list).length === 0) return pointer;
    const ids = [...new Set([...(pointer === undefined ? [] : [pointer]), ...wordsOf(list), ...members])];
    const keys = ids.map((id) => sessionKeys.session(id));
    const raws = await this.store.getMany(keys);
    let best: Session | undefined;
    raws.forEach((raw, index) => {
      const id = ids[index] ?? '';
      const session = readRecord(sessionRecordAt(id), raw, sessionKeys.session(id), this.logger);
      if (session?.deviceId !== deviceId || session.localpart !== localpart) return;
      if (best === undefined || ranksAbove(session, best)) best = session;
    });
    return best?.id;
  }

  /** Both layouts' index of one kind, merged. */
  private async idsInBoth(setKey: string, listKey: string): Promise<string[]> {
    const [members, list] = await Promise.all([this.store.setMembers(setKey), this.store.get(listKey)]);
    return [...new Set([...members, ...wordsOf(list)])];
  }

  /**
   * Removes an id from a layout-2 index: one atomic store call (`removeWord`). The last one leaves "" expiring in an
   * hour rather than a delete, so an add racing with it still wins (it replaces "" and clears the expiry).
   */
  private async removeFromIndex(key: string, id: string): Promise<void> {
    await this.store.removeWord(key, id, EMPTY_INDEX_TTL_MS);
  }


  /**
   * Read-modify-write with compare-and-set; undefined when the session is gone or unreadable (an unreadable record is
   * left as it is: it may be a newer release's, read during a rollback).
   */
  async update(id: string, change: (current: Session) => Session): Promise<Session | undefined> {
    const key = sessionKeys.session(id);
    for (let attempt = 0; attempt < 20; attempt++) {
      const raw = await this.store.get(key);
      const current = readRecord(sessionRecordAt(id), raw, key, this.logger);
      if (raw === undefined || current === undefined) return undefined;
      const next = change(current);
      // Compared against the exact string read (never a re-encoding of it), so any concurrent write makes this fail.
      if (await this.store.compareAndSet(key, raw, this.encode(next))) {
        this.#changed(id);
        return next;
      }
    }
    throw new Error(`update of session ${id} kept losing compare-and-set`);
  }
}

/** Which of two sessions on one device owns it: a login's over an imported one, then the newer. */
function ranksAbove(a: Session, b: Session): boolean {
  const aImported = a.origin.kind === 'imported';
  if (aImported !== (b.origin.kind === 'imported')) return !aImported;
  return a.createdAt > b.createdAt;
}

function retirePrevious(family: NonNullable<Session['refresh']>): NonNullable<Session['refresh']> {
  const { previousHash, ...rest } = family;
  return {
    ...rest,
    successorUnused: false,
    retiredHashes: [...(previousHash === undefined ? [] : [previousHash]), ...family.retiredHashes].slice(0, RETIRED_HASHES_KEPT),
  };
}

/** An expired access token (refreshable sessions), or an imported session past its imported lifetime. */
function isExpired(session: Session, now: number): boolean {
  if (session.accessExpiresAt !== undefined && session.accessExpiresAt <= now) return true;
  return session.origin.kind === 'imported' && session.origin.endsAt <= now;
}

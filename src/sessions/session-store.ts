import type { Clock } from '../clock.js';
import { isBoolean, isFields, isNumber, isOptional, isString, isStringArray, readRecord, recordFormat, type Fields, type RecordLogger } from '../store/record-format.js';
import type { Store } from '../store/store.js';
import type { RefreshFamily, Session, SessionOrigin } from './session.js';
import { hashToken, mintToken, newSessionId, parseToken, sameHash, successorTokens } from './tokens.js';

const RETIRED_HASHES_KEPT = 8;

/** Store keys of the session model (one place, so a dump can be read and the layout changed safely). */
export const sessionKeys = {
  session: (id: string) => `session:${id}`,
  byUser: (localpart: string) => `user-sessions:${localpart}`,
  byDevice: (localpart: string, deviceId: string) => `device-session:${localpart}:${deviceId}`,
  bySid: (idpId: string, sid: string) => `sid-sessions:${idpId}:${sid}`,
  bySub: (idpId: string, sub: string) => `sub-sessions:${idpId}:${sub}`,
} as const;

/**
 * The session record under `sessionKeys.session`. Version 1 added only the `v` field: releases up to d73999c wrote
 * the same fields without it (version 0), and such sessions stay valid (a rolling upgrade must not log anyone out);
 * the first update after the upgrade rewrites them as version 1.
 */
export const sessionRecord = recordFormat<Session>({ name: 'session', version: 2, decoders: { 0: isSessionFields, 1: isSessionFields, 2: isSessionFieldsV2 } });

/**
 * Version 2 added `homeserverToken` (the sealed homeserver token of appservice and JWT logins). A new version, not an
 * optional field of version 1: a replica of the previous release would read such a session as a delegated-mode one
 * and serve it without the swap; with the version bump it reads it as a miss instead.
 */
function isSessionFieldsV2(f: Fields): boolean {
  return isSessionFields(f) && isOptional(f.homeserverToken, isString);
}

function isSessionFields(f: Fields): boolean {
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
    isNumber(value.lastValidatedAt)
  );
}

function isSessionOrigin(value: unknown): value is SessionOrigin {
  return isOpOrigin(value) || (isFields(value) && value.kind === 'appservice' && isString(value.appserviceId));
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

export type AuthenticateResult =
  | { readonly ok: true; readonly session: Session }
  | { readonly ok: false; readonly reason: 'malformed' | 'unknown' | 'expired' };

export type RefreshResult =
  | { readonly ok: true; readonly session: Session; readonly accessToken: string; readonly refreshToken: string; readonly expiresInMs: number }
  | { readonly ok: false; readonly reason: 'malformed' | 'unknown' | 'reused' };

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

  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    private readonly tokenDerivationKey: Buffer,
    private readonly logger: RecordLogger,
  ) {}

  async create(input: NewSession): Promise<IssuedTokens> {
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
    // Independent writes, issued together (one pipelined round trip on Redis).
    const writes: Promise<unknown>[] = [
      this.store.set(sessionKeys.session(id), sessionRecord.encode(session)),
      this.store.set(sessionKeys.byDevice(session.localpart, session.deviceId), id),
      this.store.addToSet(sessionKeys.byUser(session.localpart), id),
    ];
    if (session.origin.kind !== 'appservice') {
      writes.push(this.store.addToSet(sessionKeys.bySub(session.origin.idpId, session.origin.sub), id));
      if (session.origin.sid !== undefined) writes.push(this.store.addToSet(sessionKeys.bySid(session.origin.idpId, session.origin.sid), id));
    }
    await Promise.all(writes);
    return { session, accessToken, ...(refreshToken === undefined ? {} : { refreshToken }) };
  }

  /** The session, or undefined when absent or unreadable (then with a warning: see `sessionRecord`). */
  async get(id: string): Promise<Session | undefined> {
    const key = sessionKeys.session(id);
    return readRecord(sessionRecord, await this.store.get(key), key, this.logger);
  }

  /** Resolves an access token to its live session: one store read (the session id is inside the token). */
  async authenticate(accessToken: string): Promise<AuthenticateResult> {
    const parsed = parseToken(accessToken);
    if (parsed?.kind !== 'access') return { ok: false, reason: 'malformed' };
    const session = await this.get(parsed.sessionId);
    if (session === undefined || !sameHash(session.accessTokenHash, parsed.hash)) return { ok: false, reason: 'unknown' };
    if (session.accessExpiresAt !== undefined && session.accessExpiresAt <= this.clock.now()) return { ok: false, reason: 'expired' };
    return { ok: true, session };
  }

  /** The session a well-formed access token belongs to, ignoring expiry (logout with an expired token). */
  async sessionOfToken(accessToken: string): Promise<Session | undefined> {
    const parsed = parseToken(accessToken);
    if (parsed?.kind !== 'access') return undefined;
    const session = await this.get(parsed.sessionId);
    return session !== undefined && sameHash(session.accessTokenHash, parsed.hash) ? session : undefined;
  }

  /**
   * Marks the first use of a freshly rotated pair (the spec's moment the previous refresh token dies) and updates
   * last-seen at most once a minute, so the hot path writes rarely.
   */
  async touch(session: Session, seen: { ip?: string; userAgent?: string } = {}): Promise<void> {
    const now = this.clock.now();
    const needsRetire = session.refresh?.successorUnused === true;
    if (!needsRetire && now - session.lastSeenAt < 60_000) return;
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
    const parsed = parseToken(refreshToken);
    if (parsed?.kind !== 'refresh') return { ok: false, reason: 'malformed' };
    const successors = successorTokens(refreshToken, parsed.sessionId, this.tokenDerivationKey);

    for (let attempt = 0; attempt < 20; attempt++) {
      const key = sessionKeys.session(parsed.sessionId);
      const raw = await this.store.get(key);
      const session = readRecord(sessionRecord, raw, key, this.logger);
      if (raw === undefined || session === undefined) return { ok: false, reason: 'unknown' };
      const family = session.refresh;
      if (family === undefined) return { ok: false, reason: 'unknown' };
      const now = this.clock.now();

      if (family.previousHash !== undefined && sameHash(family.previousHash, parsed.hash)) {
        if (family.successorUnused) {
          const expiresInMs = Math.max(0, (session.accessExpiresAt ?? now) - now);
          return { ok: true, session, ...successors, expiresInMs };
        }
        return { ok: false, reason: 'reused' };
      }
      if (family.retiredHashes.some((hash) => sameHash(hash, parsed.hash))) return { ok: false, reason: 'reused' };
      if (!sameHash(family.currentHash, parsed.hash)) return { ok: false, reason: 'unknown' };

      const rotated: Session = {
        ...session,
        lastSeenAt: now,
        accessTokenHash: hashToken(successors.accessToken),
        accessExpiresAt: now + lifetimeMs,
        refresh: {
          generation: family.generation + 1,
          currentHash: hashToken(successors.refreshToken),
          previousHash: family.currentHash,
          successorUnused: true,
          retiredHashes: [...(family.previousHash === undefined ? [] : [family.previousHash]), ...family.retiredHashes].slice(0, RETIRED_HASHES_KEPT),
        },
      };
      // Compared against the string read, not a re-encoding: a version-0 record is replaced by a version-1 one here.
      if (await this.store.compareAndSet(key, raw, sessionRecord.encode(rotated))) {
        this.#changed(parsed.sessionId);
        return { ok: true, session: rotated, ...successors, expiresInMs: lifetimeMs };
      }
      // Lost the race: another request rotated (or touched) the session; read it again.
    }
    throw new Error(`refresh of session ${parsed.sessionId} kept losing compare-and-set`);
  }

  /**
   * Removes the session and its index entries. Returns the session that was removed, if any. An unreadable record is
   * removed too (callers get here after reading it, so only a concurrent rewrite can make it unreadable), but its
   * index entries cannot be found and stay until their own cleanup.
   */
  async remove(id: string): Promise<Session | undefined> {
    const key = sessionKeys.session(id);
    const session = readRecord(sessionRecord, await this.store.consume(key), key, this.logger);
    this.#changed(id);
    if (session === undefined) return undefined;
    const deviceKey = sessionKeys.byDevice(session.localpart, session.deviceId);
    // Only drop the device index if it still points at this session (a newer login may own the device now).
    if ((await this.store.get(deviceKey)) === id) await this.store.delete(deviceKey);
    await this.store.removeFromSet(sessionKeys.byUser(session.localpart), id);
    if (session.origin.kind !== 'appservice') {
      await this.store.removeFromSet(sessionKeys.bySub(session.origin.idpId, session.origin.sub), id);
      if (session.origin.sid !== undefined) await this.store.removeFromSet(sessionKeys.bySid(session.origin.idpId, session.origin.sid), id);
    }
    return session;
  }

  async idsOfUser(localpart: string): Promise<string[]> {
    return this.store.setMembers(sessionKeys.byUser(localpart));
  }

  async idsOfSub(idpId: string, sub: string): Promise<string[]> {
    return this.store.setMembers(sessionKeys.bySub(idpId, sub));
  }

  async idsOfSid(idpId: string, sid: string): Promise<string[]> {
    return this.store.setMembers(sessionKeys.bySid(idpId, sid));
  }

  async idOfDevice(localpart: string, deviceId: string): Promise<string | undefined> {
    return this.store.get(sessionKeys.byDevice(localpart, deviceId));
  }

  /**
   * Read-modify-write with compare-and-set; undefined when the session is gone or unreadable (an unreadable record is
   * left as it is: it may be a newer release's, read during a rollback).
   */
  async update(id: string, change: (current: Session) => Session): Promise<Session | undefined> {
    const key = sessionKeys.session(id);
    for (let attempt = 0; attempt < 20; attempt++) {
      const raw = await this.store.get(key);
      const current = readRecord(sessionRecord, raw, key, this.logger);
      if (raw === undefined || current === undefined) return undefined;
      const next = change(current);
      // Compared against the exact string read (never a re-encoding of it), so any concurrent write makes this fail.
      if (await this.store.compareAndSet(key, raw, sessionRecord.encode(next))) {
        this.#changed(id);
        return next;
      }
    }
    throw new Error(`update of session ${id} kept losing compare-and-set`);
  }
}

function retirePrevious(family: NonNullable<Session['refresh']>): NonNullable<Session['refresh']> {
  const { previousHash, ...rest } = family;
  return {
    ...rest,
    successorUnused: false,
    retiredHashes: [...(previousHash === undefined ? [] : [previousHash]), ...family.retiredHashes].slice(0, RETIRED_HASHES_KEPT),
  };
}

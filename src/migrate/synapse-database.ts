import { openSqlite } from './sqlite.js';

/**
 * Read-only access to a Synapse database, SQLite or PostgreSQL (the two engines Synapse supports), with the rows
 * `migrate synapse` needs, normalised: Synapse stores booleans as 0/1 integers (SQLite has no booleans; its `users`
 * flags are SMALLINT on PostgreSQL too), and PostgreSQL's BIGINT columns come back from `pg` as strings.
 *
 * Drivers: `pg` for PostgreSQL; for SQLite Node's own `node:sqlite` where it exists unflagged, `better-sqlite3` 12
 * on Node 20 (sqlite.ts says why both; README, "Migrating from Synapse"). All are loaded only when a migration runs.
 */

export interface SynapseUserRow {
  readonly name: string;
  readonly passwordHash: string | undefined;
  readonly admin: boolean;
  readonly isGuest: boolean;
  readonly deactivated: boolean;
  readonly appserviceId: string | undefined;
  readonly creationTs: number | undefined;
}

export interface SynapseDeviceRow {
  readonly userId: string;
  readonly deviceId: string;
  readonly displayName: string | undefined;
  readonly lastSeen: number | undefined;
  readonly ip: string | undefined;
  readonly userAgent: string | undefined;
  readonly hidden: boolean;
}

export interface SynapseAccessTokenRow {
  readonly id: number;
  readonly userId: string;
  readonly deviceId: string | undefined;
  readonly token: string;
  readonly validUntilMs: number | undefined;
  readonly puppetsUserId: string | undefined;
  readonly refreshTokenId: number | undefined;
  readonly used: boolean;
}

export interface SynapseRefreshTokenRow {
  readonly id: number;
  readonly userId: string;
  readonly deviceId: string;
  readonly token: string;
  readonly nextTokenId: number | undefined;
  readonly expiryTs: number | undefined;
  readonly ultimateSessionExpiryTs: number | undefined;
}

export interface SynapseExternalIdRow {
  readonly authProvider: string;
  readonly externalId: string;
  readonly userId: string;
}

export interface SynapseThreepidRow {
  readonly userId: string;
  readonly medium: string;
  readonly address: string;
  readonly validatedAt: number | undefined;
}

export interface SynapseProfileRow {
  /** The localpart (Synapse's `profiles.user_id` column holds the localpart, not the full MXID). */
  readonly localpart: string;
  readonly displayName: string | undefined;
}

export interface SynapseRows {
  readonly users: readonly SynapseUserRow[];
  readonly devices: readonly SynapseDeviceRow[];
  readonly accessTokens: readonly SynapseAccessTokenRow[];
  readonly refreshTokens: readonly SynapseRefreshTokenRow[];
  readonly externalIds: readonly SynapseExternalIdRow[];
  readonly threepids: readonly SynapseThreepidRow[];
  readonly profiles: readonly SynapseProfileRow[];
}

type Row = Record<string, unknown>;

export interface SynapseDatabase {
  readonly engine: 'sqlite' | 'postgres';
  /** Every row the migration reads, in one consistent snapshot (one read transaction). */
  readAll(): Promise<SynapseRows>;
  close(): Promise<void>;
}

export class DatabaseUrlError extends Error {}

/** `sqlite:///absolute/path/homeserver.db` (or `sqlite:relative/path`), or `postgres://` / `postgresql://` URLs. */
export async function openSynapseDatabase(url: string): Promise<SynapseDatabase> {
  if (url.startsWith('sqlite:')) {
    // sqlite:///var/lib/synapse/homeserver.db (the path after "sqlite://"); SQLAlchemy's four-slash spelling works too.
    const path = (url.startsWith('sqlite://') ? url.slice('sqlite://'.length) : url.slice('sqlite:'.length)).replace(/^\/+/, '/');
    if (path === '') throw new DatabaseUrlError('--database sqlite:///path: the path is missing');
    return openSqliteDatabase(decodeURIComponent(path));
  }
  if (url.startsWith('postgres://') || url.startsWith('postgresql://')) return openPostgres(url);
  throw new DatabaseUrlError('--database must be sqlite:///path/to/homeserver.db or postgres://user@host/dbname');
}

const QUERIES = {
  users: 'SELECT name, password_hash, admin, is_guest, deactivated, appservice_id, creation_ts FROM users',
  devices: 'SELECT user_id, device_id, display_name, last_seen, ip, user_agent, hidden FROM devices',
  accessTokens: 'SELECT id, user_id, device_id, token, valid_until_ms, puppets_user_id, refresh_token_id, used FROM access_tokens',
  refreshTokens: 'SELECT id, user_id, device_id, token, next_token_id, expiry_ts, ultimate_session_expiry_ts FROM refresh_tokens',
  externalIds: 'SELECT auth_provider, external_id, user_id FROM user_external_ids',
  threepids: 'SELECT user_id, medium, address, validated_at FROM user_threepids',
  profiles: 'SELECT user_id, displayname FROM profiles',
} as const;

function rowsOf(read: (sql: string) => Row[]): SynapseRows {
  return {
    users: read(QUERIES.users).map((r) => ({
      name: str(r.name),
      passwordHash: optStr(r.password_hash),
      admin: bool(r.admin),
      isGuest: bool(r.is_guest),
      deactivated: bool(r.deactivated),
      appserviceId: optStr(r.appservice_id),
      creationTs: optNum(r.creation_ts),
    })),
    devices: read(QUERIES.devices).map((r) => ({
      userId: str(r.user_id),
      deviceId: str(r.device_id),
      displayName: optStr(r.display_name),
      lastSeen: optNum(r.last_seen),
      ip: optStr(r.ip),
      userAgent: optStr(r.user_agent),
      hidden: bool(r.hidden),
    })),
    accessTokens: read(QUERIES.accessTokens).map((r) => ({
      id: num(r.id),
      userId: str(r.user_id),
      deviceId: optStr(r.device_id),
      token: str(r.token),
      validUntilMs: optNum(r.valid_until_ms),
      puppetsUserId: optStr(r.puppets_user_id),
      refreshTokenId: optNum(r.refresh_token_id),
      used: bool(r.used),
    })),
    refreshTokens: read(QUERIES.refreshTokens).map((r) => ({
      id: num(r.id),
      userId: str(r.user_id),
      deviceId: str(r.device_id),
      token: str(r.token),
      nextTokenId: optNum(r.next_token_id),
      expiryTs: optNum(r.expiry_ts),
      ultimateSessionExpiryTs: optNum(r.ultimate_session_expiry_ts),
    })),
    externalIds: read(QUERIES.externalIds).map((r) => ({ authProvider: str(r.auth_provider), externalId: str(r.external_id), userId: str(r.user_id) })),
    threepids: read(QUERIES.threepids).map((r) => ({ userId: str(r.user_id), medium: str(r.medium), address: str(r.address), validatedAt: optNum(r.validated_at) })),
    profiles: read(QUERIES.profiles).map((r) => ({ localpart: str(r.user_id), displayName: optStr(r.displayname) })),
  };
}

async function openSqliteDatabase(path: string): Promise<SynapseDatabase> {
  // Read-only, and never created: a typo in the path must not report "nothing to migrate" from an empty database.
  const db = await openSqlite(path, { readOnly: true });
  return {
    engine: 'sqlite',
    async readAll() {
      // One read transaction: a consistent snapshot even if Synapse is still running (the dry run).
      db.exec('BEGIN');
      try {
        return rowsOf((sql) => db.all(sql));
      } finally {
        db.exec('COMMIT');
      }
    },
    async close() {
      db.close();
    },
  };
}

async function openPostgres(url: string): Promise<SynapseDatabase> {
  const { default: pg } = await import('pg');
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  return {
    engine: 'postgres',
    async readAll() {
      // A read-only snapshot of every table at once, as Synapse may still be running during a dry run.
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      try {
        const results = new Map<string, Row[]>();
        for (const sql of Object.values(QUERIES)) results.set(sql, (await client.query(sql)).rows as Row[]);
        return rowsOf((sql) => results.get(sql) ?? []);
      } finally {
        await client.query('COMMIT');
      }
    },
    async close() {
      await client.end();
    },
  };
}

function str(value: unknown): string {
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'bigint') return String(value);
  throw new Error(`expected a text column, got ${value === null ? 'NULL' : typeof value}`);
}

function optStr(value: unknown): string | undefined {
  return value === null || value === undefined ? undefined : str(value);
}

function num(value: unknown): number {
  const n = typeof value === 'string' || typeof value === 'bigint' ? Number(value) : value;
  if (typeof n !== 'number' || !Number.isFinite(n)) throw new Error(`expected a number column, got ${String(value)}`);
  return n;
}

function optNum(value: unknown): number | undefined {
  return value === null || value === undefined ? undefined : num(value);
}

/** Synapse's booleans: 0/1 integers (SMALLINT), real booleans on PostgreSQL BOOLEAN columns; NULL is false. */
function bool(value: unknown): boolean {
  if (value === null || value === undefined) return false;
  if (typeof value === 'boolean') return value;
  if (typeof value === 'string') return value === '1' || value === 't' || value === 'true';
  return Number(value) !== 0;
}

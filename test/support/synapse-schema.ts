import { openSqlite } from '../../src/migrate/sqlite.js';

/**
 * A SQLite database with the columns of Synapse's tables that `migrate synapse` reads (synapse/storage/schema:
 * users, devices, access_tokens, refresh_tokens, user_external_ids, user_threepids, profiles), for fast tests that
 * need rows Synapse only writes in situations a test cannot cheaply reach (puppet tokens, superseded refresh chains,
 * deactivated users with live tokens). The interop suite migrates a database written by a real Synapse.
 */
export interface SynapseFixture {
  user(name: string, fields?: { admin?: number; is_guest?: number; deactivated?: number; appservice_id?: string; password_hash?: string }): void;
  device(userId: string, deviceId: string, fields?: { display_name?: string; hidden?: number }): void;
  accessToken(fields: { id: number; user_id: string; device_id?: string | null; token: string; valid_until_ms?: number; puppets_user_id?: string; refresh_token_id?: number; used?: number }): void;
  refreshToken(fields: { id: number; user_id: string; device_id: string; token: string; next_token_id?: number; expiry_ts?: number }): void;
  externalId(authProvider: string, externalId: string, userId: string): void;
  threepid(userId: string, medium: string, address: string, validatedAt?: number): void;
  profile(localpart: string, displayName: string): void;
  /** Runs the inserts in one transaction (fast for large fixtures). */
  transaction(fill: () => void): void;
  close(): void;
}

export async function createSynapseFixture(path: string): Promise<SynapseFixture> {
  const db = await openSqlite(path, { readOnly: false });
  // Synapse does not turn SQLite's foreign keys on, and its tables do hold dangling references (a test needs one).
  db.exec('PRAGMA foreign_keys = OFF');
  db.exec(`
    CREATE TABLE users (name TEXT, password_hash TEXT, creation_ts BIGINT, admin SMALLINT DEFAULT 0 NOT NULL, upgrade_ts BIGINT,
      is_guest SMALLINT DEFAULT 0 NOT NULL, appservice_id TEXT, consent_version TEXT, consent_server_notice_sent TEXT,
      user_type TEXT DEFAULT NULL, deactivated SMALLINT DEFAULT 0 NOT NULL, shadow_banned BOOLEAN, UNIQUE(name));
    CREATE TABLE devices (user_id TEXT NOT NULL, device_id TEXT NOT NULL, display_name TEXT, last_seen BIGINT, ip TEXT,
      user_agent TEXT, hidden BOOLEAN DEFAULT 0, CONSTRAINT device_uniqueness UNIQUE (user_id, device_id));
    CREATE TABLE refresh_tokens (id BIGINT PRIMARY KEY, user_id TEXT NOT NULL, device_id TEXT NOT NULL, token TEXT NOT NULL,
      next_token_id BIGINT REFERENCES refresh_tokens (id) ON DELETE CASCADE, expiry_ts BIGINT DEFAULT NULL,
      ultimate_session_expiry_ts BIGINT DEFAULT NULL, UNIQUE(token));
    CREATE TABLE access_tokens (id BIGINT PRIMARY KEY, user_id TEXT NOT NULL, device_id TEXT, token TEXT NOT NULL,
      valid_until_ms BIGINT, puppets_user_id TEXT, last_validated BIGINT,
      refresh_token_id BIGINT REFERENCES refresh_tokens (id) ON DELETE CASCADE, used BOOLEAN, UNIQUE(token));
    CREATE TABLE user_external_ids (auth_provider TEXT NOT NULL, external_id TEXT NOT NULL, user_id TEXT NOT NULL,
      UNIQUE (auth_provider, external_id));
    CREATE TABLE user_threepids (user_id TEXT NOT NULL, medium TEXT NOT NULL, address TEXT NOT NULL,
      validated_at BIGINT NOT NULL, added_at BIGINT NOT NULL);
    CREATE TABLE profiles (user_id TEXT NOT NULL, displayname TEXT, avatar_url TEXT, full_user_id TEXT, UNIQUE(user_id));
  `);
  const insert = (table: string, row: Record<string, unknown>) => {
    const columns = Object.keys(row);
    db.run(`INSERT INTO ${table} (${columns.join(', ')}) VALUES (${columns.map(() => '?').join(', ')})`, columns.map((column) => row[column] ?? null));
  };
  return {
    user: (name, fields = {}) => insert('users', { name, creation_ts: 1_700_000_000, admin: 0, is_guest: 0, deactivated: 0, ...fields }),
    device: (userId, deviceId, fields = {}) => insert('devices', { user_id: userId, device_id: deviceId, hidden: 0, ...fields }),
    accessToken: (fields) => insert('access_tokens', { used: 0, ...fields }),
    refreshToken: (fields) => insert('refresh_tokens', fields),
    externalId: (authProvider, externalId, userId) => insert('user_external_ids', { auth_provider: authProvider, external_id: externalId, user_id: userId }),
    threepid: (userId, medium, address, validatedAt) => insert('user_threepids', { user_id: userId, medium, address, validated_at: validatedAt ?? 1, added_at: 1 }),
    profile: (localpart, displayName) => insert('profiles', { user_id: localpart, displayname: displayName }),
    transaction: (fill) => {
      db.exec('BEGIN');
      fill();
      db.exec('COMMIT');
    },
    close: () => db.close(),
  };
}

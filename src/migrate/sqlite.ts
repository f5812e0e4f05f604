import { createRequire } from 'node:module';

/**
 * One SQLite handle over two drivers: Node's built-in `node:sqlite` where it exists without a flag (Node 22.13+,
 * 23.4+, 24), `better-sqlite3` 12 otherwise (Node 20, which CI still runs). better-sqlite3 is a native module built
 * for one Node ABI; a checkout installed under Node 20 and run under Node 24 (as CI's second fast-suite pass does)
 * cannot load it, while `node:sqlite` needs no build at all. Both are exercised: each CI Node version runs the
 * migration tests through its own driver.
 */
export interface Sqlite {
  readonly driver: 'node:sqlite' | 'better-sqlite3';
  all(sql: string): Record<string, unknown>[];
  run(sql: string, params: readonly unknown[]): void;
  exec(sql: string): void;
  close(): void;
}

export async function openSqlite(path: string, options: { readonly readOnly: boolean }): Promise<Sqlite> {
  const builtin = await loadBuiltin();
  if (builtin !== undefined) {
    // Read-only opening of a missing file fails ("unable to open database file"): a typo never creates an empty one.
    const db = new builtin.DatabaseSync(path, { readOnly: options.readOnly });
    return {
      driver: 'node:sqlite',
      all: (sql) => db.prepare(sql).all() as Record<string, unknown>[],
      run: (sql, params) => void db.prepare(sql).run(...(params as (string | number | null)[])),
      exec: (sql) => db.exec(sql),
      close: () => db.close(),
    };
  }
  const require = createRequire(import.meta.url);
  const Database = require('better-sqlite3') as typeof import('better-sqlite3');
  const db = new Database(path, { readonly: options.readOnly, fileMustExist: options.readOnly });
  return {
    driver: 'better-sqlite3',
    all: (sql) => db.prepare(sql).all() as Record<string, unknown>[],
    run: (sql, params) => void db.prepare(sql).run(...params),
    exec: (sql) => void db.exec(sql),
    close: () => void db.close(),
  };
}

type NodeSqlite = typeof import('node:sqlite');

async function loadBuiltin(): Promise<NodeSqlite | undefined> {
  if (process.env['MCP_SQLITE_DRIVER'] === 'better-sqlite3') return undefined;
  try {
    return (await import('node:sqlite')) as NodeSqlite;
  } catch {
    // Node 20, or 22 before 22.13 without --experimental-sqlite.
    return undefined;
  }
}

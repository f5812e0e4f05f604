import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { createSynapseFixture } from '../test/support/synapse-schema.js';
import { startRedis } from '../test/support/redis-server.js';

/*
 * `migrate synapse` at scale (issue 14: 100,000 tokens must import in under a minute): a SQLite database with
 * Synapse's columns holding N users, each with one device and one live access token (a tenth with a refresh token),
 * migrated into a private redis-server by the real CLI in a child process, then migrated again (the idempotent pass:
 * every token already imported). Not part of `npm run bench`:
 *   node --import tsx bench/migrate-import.ts [--tokens N] [--smoke]
 */

const args = process.argv.slice(2);
const smoke = args.includes('--smoke');
const tokensArg = args.indexOf('--tokens');
const N = tokensArg >= 0 ? Number(args[tokensArg + 1]) : smoke ? 1_000 : 100_000;

const dir = await mkdtemp(join(tmpdir(), 'mcp-bench-migrate-'));
const redis = await startRedis({ ignoreEnv: true });
try {
  const dbPath = join(dir, 'homeserver.db');
  const fixture = await createSynapseFixture(dbPath);
  const built = performance.now();
  fixture.transaction(() => {
    for (let i = 0; i < N; i++) {
      const user = `@user${i}:bench.test`;
      fixture.user(user, { password_hash: '$2b$12$' + 'x'.repeat(53) });
      fixture.device(user, `DEVICE${i}`, { display_name: `device ${i}` });
      if (i % 10 === 0) {
        fixture.refreshToken({ id: i, user_id: user, device_id: `DEVICE${i}`, token: `syr_${i.toString(36)}_${'r'.repeat(20)}_bench` });
        fixture.accessToken({ id: i, user_id: user, device_id: `DEVICE${i}`, token: `syt_${i.toString(36)}_${'a'.repeat(20)}_bench`, valid_until_ms: Date.now() + 3_600_000, refresh_token_id: i });
      } else {
        fixture.accessToken({ id: i, user_id: user, device_id: `DEVICE${i}`, token: `syt_${i.toString(36)}_${'a'.repeat(20)}_bench` });
      }
    }
  });
  fixture.close();
  const buildMs = Math.round(performance.now() - built);

  const configPath = join(dir, 'config.yaml');
  await writeFile(
    configPath,
    stringify({
      server_name: 'bench.test',
      public_baseurl: 'http://127.0.0.1:8009/',
      homeserver: { url: 'http://127.0.0.1:8008', mode: 'synapse', secret: 'bench-homeserver-secret-0123456789abcdef' },
      store: { redis_url: redis.url, key_prefix: 'bench:' },
      sessions: { encryption_key: 'bench-encryption-key-0123456789abcdef0123' },
      log: { level: 'silent' },
    }),
  );
  const run = (report: string) => {
    const started = performance.now();
    const result = spawnSync(
      process.execPath,
      ['--import', 'tsx', 'test/support/run-cli.ts', 'migrate', 'synapse', '--config', configPath, '--database', `sqlite://${dbPath}`, '--report', join(dir, report)],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] },
    );
    if (result.status !== 0) throw new Error(`migrate exited ${result.status}: ${result.stdout}`);
    return Math.round(performance.now() - started);
  };
  const firstMs = run('first.json');
  const secondMs = run('second.json');
  const first = JSON.parse(await readFile(join(dir, 'first.json'), 'utf8')) as { sessions: { imported: number }; elapsed_ms: number; rows_per_second: number };
  const second = JSON.parse(await readFile(join(dir, 'second.json'), 'utf8')) as { sessions: { already_imported: number }; elapsed_ms: number; rows_per_second: number };
  if (first.sessions.imported !== N || second.sessions.already_imported !== N) throw new Error(`expected ${N} imported, then ${N} already imported`);
  const summary = {
    tokens: N,
    fixture_build_ms: buildMs,
    first_run: { wall_ms: firstMs, import_ms: first.elapsed_ms, rows_per_second: first.rows_per_second },
    second_run_idempotent: { wall_ms: secondMs, import_ms: second.elapsed_ms, rows_per_second: second.rows_per_second },
    target: 'first run wall time < 60,000 ms for 100,000 tokens',
  };
  console.log(JSON.stringify(summary, null, 2));
} finally {
  await redis.stop();
  await rm(dir, { recursive: true, force: true });
}

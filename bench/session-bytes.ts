import { Redis } from 'ioredis';
import { parseArgs } from 'node:util';
import type { SessionWriteFormat } from '../src/sessions/session-store.js';
import { startRedis } from '../test/support/redis-server.js';
import { SESSION_KEY_PREFIX } from './harness/proxy-config.js';
import { seedSessions } from './harness/session-seeding.js';

/**
 * Redis bytes per session, for each session format (`store.session_format`), without the proxy or any load: INFO
 * used_memory over N sessions written by the proxy's own SessionStore (bench/harness/session-seeding.ts: two devices
 * per user, an OP session id, the OP refresh token sealed, half with refresh tokens), and MEMORY USAGE by key kind.
 * The figure depends on the record format and key layout only, not on how busy the machine is.
 *
 *   node --import tsx bench/session-bytes.ts [--sessions 100000] [--format compact|compatible]  (default: both)
 */
const { values } = parseArgs({ options: { sessions: { type: 'string', default: '100000' }, format: { type: 'string' } } });
const count = Number(values.sessions);
const formats: SessionWriteFormat[] = values.format === undefined ? ['compatible', 'compact'] : [values.format as SessionWriteFormat];

const results: Record<string, unknown>[] = [];
for (const format of formats) {
  // A private server per format: used_memory then counts this format's keys alone.
  const server = await startRedis({ ignoreEnv: true });
  const redis = new Redis(server.url);
  try {
    const used = async () => Number(/used_memory:(\d+)/.exec(await redis.info('memory'))?.[1]);
    const empty = await used();
    const seeded = await seedSessions({ redisUrl: server.url, count, format });
    const perSession = ((await used()) - empty) / count;
    const byKind = new Map<string, { bytes: number; keys: number }>();
    let cursor = '0';
    let sampled = 0;
    do {
      const [next, keys] = await redis.scan(cursor, 'COUNT', 1000);
      cursor = next;
      for (const key of keys) {
        if (sampled++ >= 20_000) break;
        const kind = key.slice(SESSION_KEY_PREFIX.length).split(':')[0] ?? key;
        const bytes = Number(await redis.call('MEMORY', 'USAGE', key, 'SAMPLES', '0'));
        const entry = byKind.get(kind) ?? { bytes: 0, keys: 0 };
        entry.bytes += bytes;
        entry.keys += 1;
        byKind.set(kind, entry);
      }
    } while (cursor !== '0' && sampled < 20_000);
    const sessionKey = (await redis.scan('0', 'MATCH', `${SESSION_KEY_PREFIX}session:*`, 'COUNT', 1000))[1][0] ?? '';
    results.push({
      format,
      sessions: count,
      bytesPerSession: Math.round(perSession),
      keysPerSession: (await redis.dbsize()) / count,
      seedSeconds: Math.round(seeded.seconds),
      byKind: Object.fromEntries([...byKind].map(([kind, { bytes, keys: n }]) => [kind, { keys: n, meanBytes: Math.round(bytes / n) }])),
      sampleRecordBytes: (await redis.get(sessionKey))?.length,
    });
  } finally {
    redis.disconnect();
    await server.stop();
  }
}
console.log(JSON.stringify(results, null, 1));

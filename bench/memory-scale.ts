import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { sessionKeys, sessionRecordAt } from '../src/sessions/session-store.js';
import { parseToken } from '../src/sessions/tokens.js';
import { startRedis } from '../test/support/redis-server.js';
import { isEntryPoint, progress, runStandalone, type BenchEnvironment } from './harness/bench-environment.js';
import type { RequestShape } from './harness/load-jobs.js';
import type { MemoryBreakdown } from './harness/proxy-protocol.js';
import { compileProxyAt } from './harness/compile-proxy.js';
import { ProxyChild } from './harness/proxy-child.js';
import { HOMESERVER_SECRET, SESSION_KEY_PREFIX, proxyConfig } from './harness/proxy-config.js';
import { atMost, formatValue, ratioRow, type ResultRow, type ScenarioResult } from './harness/report.js';
import { RoundFigures } from './harness/rounds.js';
import { seedSessions } from './harness/session-seeding.js';
import { median } from './harness/statistics.js';

/**
 * Issue 8, scenario 5: what a session costs in Redis (INFO used_memory before and after N sessions, and MEMORY USAGE
 * of one session's keys), what the proxy process weighs with N live sessions it has answered for, and whether a
 * lookup slows down from 1k to N sessions. Runs on a Redis of its own, so INFO sees nothing else.
 */

type SetSize = 'small' | 'large' | 'small, full store';
const SAMPLE = 200;
/** Keycloak's offline refresh tokens are JWTs of about this size; they are kept sealed in every session. */
const KEYCLOAK_REFRESH_TOKEN_LENGTH = 850;
const KEYCLOAK_SAMPLE_SESSIONS = 2_000;
/** The sweep touches at most this many sessions (a million would take minutes and show nothing new). */
const MAX_SWEEP = 100_000;
/** How long the proxy is left idle after the sweep before its RSS is read again. */
const SETTLE_MS = 10_000;
/** How long after the forced full collection the memory is read again. */
const AFTER_COLLECTION_MS = 5_000;

export async function memoryScale(env: BenchEnvironment): Promise<ScenarioResult> {
  const settings = env.settings;
  const total = Math.max(settings.sessions, settings.smallSessionSet);
  const small = settings.smallSessionSet;
  const load = await env.loadGenerator();
  const upstream = await env.upstream();
  const redisServer = await startRedis({ ignoreEnv: true });
  const redis = new Redis(redisServer.url);
  // `--base REF`: REF's src/ with this tree's proxy-process entry, to pair runs with a baseline (one run each).
  const entry = settings.base === undefined ? undefined : compileProxyAt(settings.base, 'memory-scale', { thisEntry: true }).entry;
  const proxy = await ProxyChild.start({ name: 'memory-scale', config: proxyConfig({ homeserverUrl: upstream.url, redisUrl: redisServer.url }), ...(entry === undefined ? {} : { entry }) });
  const figures = new RoundFigures<SetSize>();
  const problems: string[] = [];
  try {
    const idle = await proxy.memory();
    const idleRss = idle.rss;
    const usedMemory = async () => Number(/used_memory:(\d+)/.exec(await redis.info('memory'))?.[1]);
    const emptyBytes = await usedMemory();

    progress(`memory: seeding ${small} sessions`);
    const smallFile = join(env.tempDir, 'memory-small-tokens.txt');
    const first = await seedSessions({ redisUrl: redisServer.url, count: small, tokensFile: smallFile });
    const smallBytes = await usedMemory();

    const introspect = (file: string): RequestShape => ({
      url: `${proxy.homeserverFacingUrl}/oauth2/introspect`,
      method: 'POST',
      headers: { authorization: `Bearer ${HOMESERVER_SECRET}`, accept: 'application/json', 'x-mas-supports-device-id': '1' },
      tokens: { file, as: 'form' },
    });
    const lookupRound = async (size: SetSize, file: string, round: number) => {
      progress(`memory: lookups at ${settings.lookupRate}/s, ${size} set, round ${round + 1}/${settings.rounds}`);
      const result = await load.run({ kind: 'fixed-rate', ...introspect(file), rate: settings.lookupRate, connections: 8, durationSec: settings.roundSec });
      if (result.errors + result.non2xx > 0) problems.push(`${size}: ${result.errors} errors, ${result.non2xx} non-2xx`);
      figures.add(size, 'p50', result.latencyMs.p50);
      figures.add(size, 'p99', result.latencyMs.p99);
    };
    await load.run({ kind: 'fixed-rate', ...introspect(smallFile), rate: settings.lookupRate, connections: 8, durationSec: settings.warmupSec });
    for (let round = 0; round < settings.rounds; round++) await lookupRound('small', smallFile, round);
    const afterSmall = await proxy.memory();
    const smallRss = afterSmall.rss;

    progress(`memory: seeding ${total - small} more sessions (${total} in all)`);
    const largeFile = join(env.tempDir, 'memory-large-tokens.txt');
    const rest = total > small ? await seedSessions({ redisUrl: redisServer.url, count: total - small, firstIndex: small, tokensFile: largeFile }) : { accessTokens: [], seconds: 0 };
    const allTokens = [...first.accessTokens, ...rest.accessTokens];
    // Spread over the whole set: a shuffled copy, so consecutive lookups hit unrelated keys.
    writeFileSync(largeFile, `${shuffled(allTokens).join('\n')}\n`);
    const largeBytes = await usedMemory();
    const perSession = (largeBytes - emptyBytes) / total;
    const sample = await memoryUsageSample(redis, allTokens, SAMPLE);

    // Alternating with the first sessions again: separates the size of the store from drift over the run.
    await load.run({ kind: 'fixed-rate', ...introspect(largeFile), rate: settings.lookupRate, connections: 8, durationSec: settings.warmupSec });
    for (let round = 0; round < settings.rounds; round++) {
      await lookupRound('large', largeFile, round);
      await lookupRound('small, full store', smallFile, round);
    }
    const swept = Math.min(total, MAX_SWEEP);
    progress(`memory: introspecting ${swept} of the ${total} sessions once each`);
    // RSS is a saw-tooth (old-space garbage piles up until a full collection): the peak during the sweep, sampled
    // every 5 ms, beside the value after it.
    await proxy.startRssWatch();
    const sweep = await load.run({ kind: 'throughput', ...introspect(largeFile), connections: settings.introspectionConnections, amount: swept });
    const sweepPeakRss = (await proxy.stopRssWatch()).peak;
    if (sweep.errors + sweep.non2xx > 0) problems.push(`sweep: ${sweep.errors} errors, ${sweep.non2xx} non-2xx`);
    const afterSweep = await proxy.memory();
    const largeRss = afterSweep.rss;
    // The same process left alone for a while, with nothing forced: what V8's own idle-time collections (its memory
    // reducer) bring RSS back to — the footprint an operator sees between bursts.
    await sleep(settings.mode === 'smoke' ? 200 : SETTLE_MS);
    const settled = await proxy.memory();
    // Last, since it shrinks the heap: what the proxy keeps alive after the sweep, garbage collected.
    const collected = await proxy.memoryAfterCollection();
    // V8 hands the pages a collection emptied back to the system from a background task (its unmapper), not inside
    // the collection: read again once that has had time to run.
    await sleep(settings.mode === 'smoke' ? 200 : AFTER_COLLECTION_MS);
    const collectedLater = await proxy.memory();

    progress(`memory: ${KEYCLOAK_SAMPLE_SESSIONS} sessions holding a Keycloak-sized (${KEYCLOAK_REFRESH_TOKEN_LENGTH} chars) OP refresh token`);
    const beforeKeycloak = await usedMemory();
    await seedSessions({ redisUrl: redisServer.url, count: KEYCLOAK_SAMPLE_SESSIONS, firstIndex: total + 1_000_000, opRefreshTokenLength: KEYCLOAK_REFRESH_TOKEN_LENGTH });
    const keycloakPerSession = ((await usedMemory()) - beforeKeycloak) / KEYCLOAK_SAMPLE_SESSIONS;

    const p50 = (size: SetSize) => figures.median(size, 'p50');
    const MB = 1e6;
    const rows: ResultRow[] = [
      ratioRow(`Redis bytes per session, ${total.toLocaleString('en-US')} sessions (INFO used_memory)`, perSession, 'B', { label: `at ${small.toLocaleString('en-US')}`, value: (smallBytes - emptyBytes) / small }, {
        target: atMost('≤ 1 KB (1,024 B)', perSession, 1024, (bytes) => formatValue(bytes, 'B')),
      }),
      ratioRow(`Redis bytes per session, MEMORY USAGE of its keys (${SAMPLE} sampled)`, sample.perSession, 'B', { label: 'INFO', value: perSession }),
      ratioRow(`proxy RSS after introspecting ${swept === total ? 'all ' : ''}${swept.toLocaleString('en-US')}${swept === total ? '' : ` of ${total.toLocaleString('en-US')}`} sessions`, largeRss / MB, 'MB', { label: `RSS at ${small.toLocaleString('en-US')}`, value: smallRss / MB }, {
        target: atMost('≤ 150 MB', largeRss / MB, 150, (mb) => formatValue(mb, 'MB')),
      }),
      ratioRow(`proxy RSS ${SETTLE_MS / 1000} s after the sweep, idle (no collection forced)`, settled.rss / MB, 'MB', { label: 'right after the sweep', value: largeRss / MB }),
      ratioRow(`lookup (introspection) median @ ${settings.lookupRate}/s, ${total.toLocaleString('en-US')} sessions`, p50('large'), 'ms', { label: `${small.toLocaleString('en-US')} sessions`, value: p50('small') }, {
        p99Ms: figures.median('large', 'p99'),
        rounds: figures.rounds('large', 'p50'),
      }),
      ratioRow(`introspection sweep, ${swept.toLocaleString('en-US')} distinct sessions once each`, sweep.requestsPerSecond, 'req/s', { label: 'itself', value: sweep.requestsPerSecond }, { p99Ms: sweep.latencyMs.p99 }),
    ];
    const notes = [
      `per-session keys (MEMORY USAGE, median of ${SAMPLE}): ${Object.entries(sample.byKey).map(([key, bytes]) => `${key} ${Math.round(bytes)} B`).join(', ')}; user and subject sets are shared by the user's 2 sessions and counted half`,
      `with Keycloak-sized OP refresh tokens (${KEYCLOAK_REFRESH_TOKEN_LENGTH} chars, sealed in the session) a session costs ${formatValue(keycloakPerSession, 'B')} (INFO, ${KEYCLOAK_SAMPLE_SESSIONS.toLocaleString('en-US')} sessions)`,
      `lookups at ${small.toLocaleString('en-US')} vs ${total.toLocaleString('en-US')} sessions: median ${formatValue(p50('small'), 'ms')} vs ${formatValue(p50('large'), 'ms')}, p99 ${formatValue(figures.median('small', 'p99'), 'ms')} vs ${formatValue(figures.median('large', 'p99'), 'ms')}; the first ${small.toLocaleString('en-US')} again, alternating with the full-set rounds: median ${formatValue(p50('small, full store'), 'ms')}, p99 ${formatValue(figures.median('small, full store', 'p99'), 'ms')}; seeding ${total.toLocaleString('en-US')} sessions took ${(first.seconds + rest.seconds).toFixed(0)} s${total < 1_000_000 ? ' (1M is not in the default run: `node --import tsx bench/memory-scale.ts --sessions 1000000`, about 3.5 min)' : ''}`,
      `proxy RSS: idle ${formatValue(idleRss / MB, 'MB')}, after ${small.toLocaleString('en-US')} sessions ${formatValue(smallRss / MB, 'MB')}, after the sweep over ${swept.toLocaleString('en-US')} of ${total.toLocaleString('en-US')} ${formatValue(largeRss / MB, 'MB')} (peak during it ${formatValue(sweepPeakRss / MB, 'MB')}; plain node, no tsx)`,
      `proxy memory (V8 heap committed / used: new space, old space; outside the heap = RSS - committed heap): ${[
        ['idle', idle],
        [`after ${small.toLocaleString('en-US')}`, afterSmall],
        ['after the sweep', afterSweep],
        [`${SETTLE_MS / 1000} s later, idle`, settled],
        ['after a full collection', collected],
        [`${AFTER_COLLECTION_MS / 1000} s after it`, collectedLater],
      ]
        .map(([label, memory]) => `${label as string} ${describeMemory(memory as MemoryBreakdown)}`)
        .join('; ')}`,
    ];
    return {
      scenario: settings.base === undefined ? 'memory & scale' : `memory & scale (base ${settings.base})`,
      rows,
      notes,
      problems,
      details: { total, small, emptyBytes, smallBytes, largeBytes, perSession, sample, keycloakPerSession, idleRss, smallRss, largeRss, settledRss: settled.rss, sweepPeakRss, memory: { idle, afterSmall, afterSweep, settled, collected, collectedLater }, lookups: figures.toJSON(), sweep, seedingSeconds: first.seconds + rest.seconds },
    };
  } finally {
    await proxy.stop();
    redis.disconnect();
    await redisServer.stop();
  }
}

/**
 * MEMORY USAGE of the keys a session owns, in whichever index layout its format wrote (a missing key counts 0);
 * indexes shared by a user's two sessions count half.
 */
async function memoryUsageSample(redis: Redis, tokens: readonly string[], size: number) {
  const byKey: Record<string, number[]> = { session: [], 'device index': [], 'user index (½)': [], 'subject index (½)': [], 'OP session index': [] };
  const totals: number[] = [];
  for (let index = 0; index < size; index++) {
    const token = tokens[Math.floor((index * tokens.length) / size)]!;
    const id = parseToken(token)?.sessionId;
    if (id === undefined) continue;
    const raw = await redis.get(SESSION_KEY_PREFIX + sessionKeys.session(id));
    if (raw === null) continue;
    const session = sessionRecordAt(id).decode(raw);
    if (session === undefined || session.origin.kind === 'appservice' || session.origin.kind === 'imported') continue;
    const usage = async (...keys: string[]) => {
      let bytes = 0;
      for (const key of keys) bytes += Number(await redis.call('MEMORY', 'USAGE', SESSION_KEY_PREFIX + key, 'SAMPLES', '0'));
      return bytes;
    };
    const { idpId, sub, sid } = session.origin;
    const parts: [string, number][] = [
      ['session', await usage(sessionKeys.session(id))],
      ['device index', await usage(sessionKeys.byDevice(session.localpart, session.deviceId))],
      ['user index (½)', (await usage(sessionKeys.byUser(session.localpart), sessionKeys.userList(session.localpart))) / 2],
      ['subject index (½)', (await usage(sessionKeys.bySub(idpId, sub), sessionKeys.subList(idpId, sub))) / 2],
      ['OP session index', sid === undefined ? 0 : await usage(sessionKeys.bySid(idpId, sid), sessionKeys.sidList(idpId, sid))],
    ];
    for (const [name, bytes] of parts) byKey[name]!.push(bytes);
    totals.push(parts.reduce((sum, [, bytes]) => sum + bytes, 0));
  }
  return { perSession: median(totals), byKey: Object.fromEntries(Object.entries(byKey).map(([name, values]) => [name, median(values)])) };
}

/** One line of a proxy's memory: RSS, the V8 heap committed and used (new and old space), and what lies outside. */
function describeMemory(memory: MemoryBreakdown): string {
  const mb = (bytes: number | undefined) => ((bytes ?? 0) / 1e6).toFixed(1);
  const space = (name: string) => `${mb(memory.spaces[name]?.size)}/${mb(memory.spaces[name]?.used)}`;
  const where = memory.mappings === undefined ? '' : ` [resident: files ${mb(memory.mappings.file)}, malloc main arena ${mb(memory.mappings.brkHeap)}, other malloc arenas ${mb(memory.mappings.mallocArenas)}, other anonymous ${mb(memory.mappings.otherAnonymous)}; external ${mb(memory.external)}, V8 malloced ${mb(memory.v8Malloced)}]`;
  return `RSS ${mb(memory.rss)} MB = heap ${mb(memory.heapTotal)}/${mb(memory.heapUsed)} (new ${space('new_space')}, old ${space('old_space')}) + ${mb(memory.rss - memory.heapTotal)} outside${where}`;
}

function shuffled<T>(items: readonly T[]): T[] {
  const copy = [...items];
  for (let index = copy.length - 1; index > 0; index--) {
    const other = Math.floor(Math.random() * (index + 1));
    [copy[index], copy[other]] = [copy[other]!, copy[index]!];
  }
  return copy;
}

if (isEntryPoint(import.meta.url)) await runStandalone('memory-scale', memoryScale);

import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { startRedis } from '../test/support/redis-server.js';
import { startUpstream } from '../test/support/upstream-server.js';
import { progress } from './harness/bench-environment.js';
import { compileProxyAt } from './harness/compile-proxy.js';
import { LoadGenerator } from './harness/load-generator-client.js';
import type { MemoryBreakdown } from './harness/proxy-protocol.js';
import { ProxyChild } from './harness/proxy-child.js';
import { HOMESERVER_SECRET, proxyConfig } from './harness/proxy-config.js';
import { seedSessions } from './harness/session-seeding.js';

/**
 * Where the proxy's RSS goes over a sweep of introspections, and what comes back when: one proxy (node flags and
 * environment as node-flags.ts takes them), N sessions introspected once each, and the memory by mapping kind
 * (harness: /proc/<pid>/smaps) idle, right after the sweep, 10 s later, after a forced full collection and 1, 5 and
 * 15 s after it. Not in `npm run bench`.
 *
 *   node --import tsx bench/memory-probe.ts [--sessions 100000] [--variant='MALLOC_ARENA_MAX=2 --trace-gc-nvp']
 *     [--base REF: the proxy built from REF's src/ (this tree's bench entry), to alternate runs with a baseline]
 *     [--promoted] [--snapshots DIR]
 */

const { values } = parseArgs({ options: { variant: { type: 'string' }, sessions: { type: 'string' }, connections: { type: 'string' }, snapshots: { type: 'string' }, promoted: { type: 'boolean' }, base: { type: 'string' } } });
const sessions = Number(values.sessions ?? 100_000);
const words = (values.variant ?? '').split(' ').filter(Boolean);
const env = Object.fromEntries(words.filter((word) => !word.startsWith('-')).map((word) => [word.slice(0, word.indexOf('=')), word.slice(word.indexOf('=') + 1)]));

// `--base REF`: REF's src/ with this tree's proxy-process entry (its memory protocol is newer than older refs').
const entry = values.base === undefined ? undefined : compileProxyAt(values.base, 'memory-probe', { thisEntry: true }).entry;
const load = await LoadGenerator.start();
const upstream = await startUpstream();
const redis = await startRedis({ ignoreEnv: true });
const proxy = await ProxyChild.start({ name: 'memory-probe', config: proxyConfig({ homeserverUrl: upstream.url, redisUrl: redis.url }), nodeFlags: words.filter((word) => word.startsWith('-')), env, probe: values.promoted === true, ...(entry === undefined ? {} : { entry }) });
const readings: [string, MemoryBreakdown][] = [];
const tokensFile = join(process.cwd(), 'bench', 'results', `memory-probe-tokens-${process.pid}.txt`);
try {
  readings.push(['idle', await proxy.memory()]);
  if (values.snapshots !== undefined) progress(`memory probe: idle snapshot: ${await proxy.heapSnapshot(values.snapshots)}`);
  progress(`memory probe: seeding ${sessions} sessions`);
  const seeded = await seedSessions({ redisUrl: redis.url, count: sessions, tokensFile });
  writeFileSync(tokensFile, `${seeded.accessTokens.toSorted(() => Math.random() - 0.5).join('\n')}\n`);
  progress('memory probe: sweep');
  await proxy.startRssWatch();
  // --promoted: V8's sampling heap profiler over the sweep, keeping only what outlived the young generation.
  if (values.promoted === true) await proxy.probeStart({ allocations: 'promoted' });
  const sweeping = load.run({
    kind: 'throughput',
    url: `${proxy.homeserverFacingUrl}/oauth2/introspect`,
    method: 'POST',
    headers: { authorization: `Bearer ${HOMESERVER_SECRET}`, accept: 'application/json', 'x-mas-supports-device-id': '1' },
    tokens: { file: tokensFile, as: 'form' },
    connections: Number(values.connections ?? 16),
    amount: sessions,
  });
  // --snapshots DIR: heap snapshots idle-equivalent (before) and in the middle of the sweep (V8 collects first, so
  // they hold what is reachable then: requests in flight and whatever outlives them).
  if (values.snapshots !== undefined) {
    await sleep(4000);
    progress(`memory probe: snapshot during the sweep: ${await proxy.heapSnapshot(values.snapshots)}`);
  }
  const sweep = await sweeping;
  const peak = (await proxy.stopRssWatch()).peak;
  if (values.promoted === true) {
    const sites = (await proxy.probeStop()).allocationSites;
    if (sites !== undefined) {
      const per = (bytes: number) => `${(bytes / sessions).toFixed(0)} B/req`;
      console.log(`promoted during the sweep (sampled): ${(sites.sampledBytes / 1e6).toFixed(1)} MB, ${per(sites.sampledBytes)}`);
      for (const [title, list] of [['by allocating function', sites.bySelf], ['by innermost src/ frame', sites.bySource], ['by stack', sites.byStack]] as const) {
        console.log(`  ${title}:`);
        for (const site of list.slice(0, 25)) console.log(`    ${per(site.bytes).padStart(10)}  ${site.site}`);
      }
    }
  }
  if (sweep.errors + sweep.non2xx > 0) throw new Error(`sweep: ${sweep.errors} errors, ${sweep.non2xx} non-2xx`);
  readings.push(['after the sweep', await proxy.memory()]);
  await sleep(10_000);
  readings.push(['10 s later', await proxy.memory()]);
  readings.push(['full collection', await proxy.memoryAfterCollection()]);
  for (const [label, wait] of [['1 s after', 1000], ['5 s after', 4000], ['15 s after', 10_000]] as const) {
    await sleep(wait);
    readings.push([label, await proxy.memory()]);
  }
  const mb = (bytes: number | undefined) => ((bytes ?? 0) / 1e6).toFixed(1);
  console.log(`${values.base === undefined ? 'this tree' : `base ${values.base}`}, variant '${values.variant ?? 'default'}', ${sessions} sessions, ${sweep.requestsPerSecond.toFixed(0)} req/s, peak RSS ${mb(peak)} MB`);
  for (const [label, m] of readings) {
    const space = (name: string) => `${mb(m.spaces[name]?.size)}/${mb(m.spaces[name]?.used)}`;
    console.log(
      `${label.padEnd(16)} RSS ${mb(m.rss)} heap ${mb(m.heapTotal)} (new ${space('new_space')} old ${space('old_space')} code ${space('code_space')} lo ${space('large_object_space')}) | files ${mb(m.mappings?.file)} brk ${mb(m.mappings?.brkHeap)} arenas ${mb(m.mappings?.mallocArenas)} anon ${mb(m.mappings?.otherAnonymous)} | external ${mb(m.external)} arrayBuffers ${mb(m.arrayBuffers)} v8malloc ${mb(m.v8Malloced)}`,
    );
  }
} finally {
  await proxy.stop();
  await load.stop();
  await redis.stop();
  await upstream.close();
  rmSync(tokensFile, { force: true });
}

import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startRedis } from '../test/support/redis-server.js';
import { startUpstream } from '../test/support/upstream-server.js';
import { progress } from './harness/bench-environment.js';
import { LoadGenerator } from './harness/load-generator-client.js';
import { ProxyChild } from './harness/proxy-child.js';
import { HOMESERVER_SECRET, proxyConfig } from './harness/proxy-config.js';
import { seedSessions } from './harness/session-seeding.js';
import { median } from './harness/statistics.js';

/**
 * What a V8 flag costs and saves: the proxy started once per variant of node flags (all at the same time, on one
 * Redis and one upstream), then, round by round in a rotating order, the same closed-loop load on each — introspections
 * of live sessions, and pass-through requests carrying their tokens — with the proxy's CPU time per request (/proc,
 * which moves far less with the machine's load than req/s) and its RSS after each round and at its peak (sampled every
 * 5 ms). With `--sessions 100000 --requests 100000 --rounds 1` each proxy introspects every session once, as the
 * memory scenario's sweep does. Not in `npm run bench`.
 *
 *   node --import tsx bench/node-flags.ts --variant default --variant=--max-semi-space-size=4 [--rounds 5] [--requests 30000]
 */

const { values } = parseArgs({
  options: { variant: { type: 'string', multiple: true }, rounds: { type: 'string' }, requests: { type: 'string' }, sessions: { type: 'string' }, rate: { type: 'string' } },
});
// 'default' is node without extra flags; a variant with flags is given as --variant=--flag=value (words separated by
// spaces; NAME=value sets an environment variable).
const variants = values.variant ?? ['default', '--max-semi-space-size=4'];
const rounds = Number(values.rounds ?? 5);
const requests = Number(values.requests ?? 30_000);
const sessions = Number(values.sessions ?? 10_000);
/** `--rate N`: each round also offers introspections at N/s for 5 s (open loop) and records the median and p99. */
const rate = values.rate === undefined ? undefined : Number(values.rate);
const RATE_SECONDS = 5;

type Load = 'introspection' | 'pass-through';
const LOADS: readonly Load[] = ['introspection', 'pass-through'];

const load = await LoadGenerator.start();
const upstream = await startUpstream();
const trim = setInterval(() => upstream.requests.splice(0), 1000);
const redis = await startRedis({ ignoreEnv: true });
const proxies: ProxyChild[] = [];
try {
  for (const [index, variant] of variants.entries()) {
    // Words of a variant: `--flag[=value]` for node, `NAME=value` for the environment (e.g. MALLOC_ARENA_MAX=2).
    const words = variant === 'default' ? [] : variant.split(' ').filter(Boolean);
    const env = Object.fromEntries(words.filter((word) => !word.startsWith('-')).map((word) => [word.slice(0, word.indexOf('=')), word.slice(word.indexOf('=') + 1)]));
    proxies.push(await ProxyChild.start({ name: `node-flags-${index}`, config: proxyConfig({ homeserverUrl: upstream.url, redisUrl: redis.url }), nodeFlags: words.filter((word) => word.startsWith('-')), env }));
  }
  const idle = await Promise.all(proxies.map((proxy) => proxy.memory()));
  const tokensFile = join(process.cwd(), 'bench', 'results', `node-flags-tokens-${process.pid}.txt`);
  progress(`node flags: seeding ${sessions} sessions`);
  await seedSessions({ redisUrl: redis.url, count: sessions, tokensFile });
  const shape = (proxy: ProxyChild, kind: Load) =>
    kind === 'introspection'
      ? {
          url: `${proxy.homeserverFacingUrl}/oauth2/introspect`,
          method: 'POST',
          headers: { authorization: `Bearer ${HOMESERVER_SECRET}`, accept: 'application/json', 'x-mas-supports-device-id': '1' },
          tokens: { file: tokensFile, as: 'form' as const },
        }
      : { url: `${proxy.clientUrl}/_upstream/json`, tokens: { file: tokensFile, as: 'bearer' as const } };
  progress('node flags: warm-up (not counted)');
  for (const proxy of proxies) for (const kind of LOADS) await load.run({ kind: 'throughput', ...shape(proxy, kind), connections: 16, amount: Math.ceil(requests / 5) });
  const cpu: Record<string, number[]> = {};
  const throughput: Record<string, number[]> = {};
  const latency: Record<string, number[]> = {};
  const rss: number[][] = variants.map(() => []);
  const peak: number[] = variants.map(() => 0);
  for (let round = 0; round < rounds; round++) {
    for (let step = 0; step < variants.length; step++) {
      const index = (round + step) % variants.length;
      const proxy = proxies[index]!;
      for (const kind of LOADS) {
        progress(`node flags: round ${round + 1}/${rounds}, ${kind}, variant '${variants[index]}'`);
        const before = proxy.cpuTimeMs();
        await proxy.startRssWatch();
        const result = await load.run({ kind: 'throughput', ...shape(proxy, kind), connections: kind === 'introspection' ? 16 : 50, amount: requests });
        const used = proxy.cpuTimeMs() - before;
        peak[index] = Math.max(peak[index]!, (await proxy.stopRssWatch()).peak);
        if (result.errors + result.non2xx > 0) throw new Error(`${kind} through '${variants[index]}': ${result.errors} errors, ${result.non2xx} non-2xx`);
        (cpu[`${index} ${kind}`] ??= []).push((used * 1000) / result.ok);
        (throughput[`${index} ${kind}`] ??= []).push(result.requestsPerSecond);
      }
      if (rate !== undefined) {
        progress(`node flags: round ${round + 1}/${rounds}, introspection at ${rate}/s, variant '${variants[index]}'`);
        const result = await load.run({ kind: 'fixed-rate', ...shape(proxy, 'introspection'), rate, connections: 16, durationSec: RATE_SECONDS });
        if (result.errors + result.non2xx > 0) throw new Error(`introspection at ${rate}/s through '${variants[index]}': ${result.errors} errors, ${result.non2xx} non-2xx`);
        (latency[`${index} p50`] ??= []).push(result.latencyMs.p50);
        (latency[`${index} p99`] ??= []).push(result.latencyMs.p99);
      }
      rss[index]!.push((await proxy.memory()).rss);
    }
  }
  const mb = (bytes: number) => `${(bytes / 1e6).toFixed(1)} MB`;
  for (const [index, variant] of variants.entries()) {
    const figures = LOADS.map((kind) => `${kind} ${median(cpu[`${index} ${kind}`]!).toFixed(1)} µs/req (rounds ${cpu[`${index} ${kind}`]!.map((v) => v.toFixed(0)).join(' ')}), ${median(throughput[`${index} ${kind}`]!).toFixed(0)} req/s`);
    if (rate !== undefined) figures.push(`introspection at ${rate}/s: median ${median(latency[`${index} p50`]!).toFixed(2)} ms, p99 ${median(latency[`${index} p99`]!).toFixed(2)} ms (rounds ${latency[`${index} p99`]!.map((v) => v.toFixed(1)).join(' ')})`);
    console.log(`'${variant}': idle ${mb(idle[index]!.rss)}, RSS after rounds ${rss[index]!.map(mb).join(' ')} (median ${mb(median(rss[index]!))}), peak during the loads ${mb(peak[index]!)}; ${figures.join('; ')}`);
  }
} finally {
  clearInterval(trim);
  for (const proxy of proxies) await proxy.stop();
  await load.stop();
  await redis.stop();
  await upstream.close();
}

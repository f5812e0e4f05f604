import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { progress } from './harness/bench-environment.js';
import { BenchEnvironment } from './harness/bench-environment.js';
import { settingsFromArgs } from './harness/bench-settings.js';
import { compileProxyAt } from './harness/compile-proxy.js';
import { ProxyChild } from './harness/proxy-child.js';
import { HOMESERVER_SECRET, proxyConfig } from './harness/proxy-config.js';
import { RoundFigures, rotated, startBaseAndThis } from './harness/rounds.js';
import { seedSessions } from './harness/session-seeding.js';
import { median } from './harness/statistics.js';

/**
 * Proxy CPU per request of this tree against a baseline git ref (default `main`), both running at once and measured
 * in alternating rounds: on a shared machine the figure drifts with the load of the moment, so a before/after taken
 * minutes apart compares the machine, not the code. Hot paths: pass-through unauthenticated and with the tokens of
 * live sessions, and introspection of own tokens (Redis).
 *
 *   node --import tsx bench/compare-cpu.ts [--base REF] [--rounds N] [--seconds S] [--only a,b] [--this-first]
 *
 * The two processes are not quite alike on a busy machine (which started first, where the scheduler put them): run
 * it with the same tree on both sides (`--base HEAD` on a clean tree) to see that spread, and with `--this-first`
 * to start this tree's proxy first.
 */

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: { base: { type: 'string' }, rounds: { type: 'string' }, seconds: { type: 'string' }, only: { type: 'string' }, 'this-first': { type: 'boolean' } },
  strict: true,
});
const baseRef = values.base ?? 'main';
const rounds = Number(values.rounds ?? '5');
const seconds = Number(values.seconds ?? '3');
const KEY_PREFIX = 'mcp-bench-compare:';
const SESSIONS = 1000;

type Tree = 'base' | 'this';
type Path = 'unauthenticated' | 'with token' | 'introspection';
const PATHS: readonly Path[] = ['unauthenticated', 'with token', 'introspection'];
const paths = values.only === undefined ? PATHS : PATHS.filter((path) => values.only?.split(',').includes(path));

const env = new BenchEnvironment(settingsFromArgs([]));
const proxies: Partial<Record<Tree, ProxyChild>> = {};
try {
  const { entry: baseEntry, commit } = compileProxyAt(baseRef, 'compare');

  const upstream = await env.upstream();
  const redis = await env.redis();
  const load = await env.loadGenerator();
  const tokens = join(env.tempDir, 'compare-tokens.txt');
  await seedSessions({ redisUrl: redis.url, keyPrefix: KEY_PREFIX, count: SESSIONS, tokensFile: tokens });
  const config = proxyConfig({ homeserverUrl: upstream.url, redisUrl: redis.url, keyPrefix: KEY_PREFIX });
  const startBase = async () => {
    proxies.base = await ProxyChild.start({ name: 'compare-base', config, entry: baseEntry });
  };
  const startThis = async () => {
    proxies.this = await ProxyChild.start({ name: 'compare-this', config });
  };
  await startBaseAndThis(values['this-first'], startBase, startThis);

  const shape = (path: Path, proxy: ProxyChild) => {
    switch (path) {
      case 'unauthenticated':
        return { url: `${proxy.clientUrl}/_upstream/json`, connections: 50 };
      case 'with token':
        return { url: `${proxy.clientUrl}/_upstream/json`, connections: 50, tokens: { file: tokens, as: 'bearer' as const } };
      case 'introspection':
        return {
          url: `${proxy.homeserverFacingUrl}/oauth2/introspect`,
          connections: 16,
          method: 'POST',
          headers: { authorization: `Bearer ${HOMESERVER_SECRET}` },
          tokens: { file: tokens, as: 'form' as const },
        };
    }
  };
  const figures = new RoundFigures<Tree>();
  progress('compare: warm-up');
  for (const tree of ['base', 'this'] as const) {
    for (const path of paths) await load.run({ kind: 'throughput', ...shape(path, proxies[tree] as ProxyChild), durationSec: 2 });
  }
  for (let round = 0; round < rounds; round++) {
    for (const path of paths) {
      for (const tree of rotated(['base', 'this'] as const, round)) {
        const proxy = proxies[tree] as ProxyChild;
        const before = proxy.cpuTimeMs();
        const result = await load.run({ kind: 'throughput', ...shape(path, proxy), durationSec: seconds });
        const cpu = ((proxy.cpuTimeMs() - before) * 1000) / result.ok;
        if (result.errors + result.non2xx > 0) throw new Error(`${tree} ${path}: ${result.errors} errors, ${result.non2xx} non-2xx`);
        figures.add(tree, `${path} cpu`, cpu);
        figures.add(tree, `${path} rps`, result.requestsPerSecond);
        progress(`compare: round ${round + 1}/${rounds}, ${path}, ${tree}: ${cpu.toFixed(0)} µs/req, ${result.requestsPerSecond.toFixed(0)} req/s`);
      }
    }
  }
  process.stdout.write(`\nproxy CPU per request, base ${baseRef} (${commit}) vs this tree, ${rounds} alternating rounds of ${seconds} s\n`);
  for (const path of paths) {
    const row = (tree: Tree) => `${figures.median(tree, `${path} cpu`).toFixed(0)} µs [${figures.rounds(tree, `${path} cpu`).map((value) => value.toFixed(0)).join(' ')}]`;
    const ratio = figures.median('this', `${path} cpu`) / figures.median('base', `${path} cpu`);
    const paired = median(figures.rounds('this', `${path} cpu`).map((value, index) => value / (figures.rounds('base', `${path} cpu`)[index] as number)));
    process.stdout.write(`${path.padEnd(16)} base ${row('base')}  this ${row('this')}  this/base ${ratio.toFixed(2)} (paired median ${paired.toFixed(2)}); req/s ${figures.median('base', `${path} rps`).toFixed(0)} → ${figures.median('this', `${path} rps`).toFixed(0)}\n`);
  }
} finally {
  for (const proxy of Object.values(proxies)) await proxy.stop();
  await env.close();
}
process.exit(0);

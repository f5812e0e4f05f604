import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startHomeserverDouble } from '../test/support/homeserver-double.js';
import { startTestOp } from '../test/support/test-op.js';
import { isEntryPoint, progress, runStandalone, type BenchEnvironment } from './harness/bench-environment.js';
import type { LoadGenerator } from './harness/load-generator-client.js';
import type { RequestShape } from './harness/load-jobs.js';
import { benchUsers, nativeAccessToken, tokenEndpointOf } from './harness/op-client.js';
import { ProxyChild } from './harness/proxy-child.js';
import { HOMESERVER_SECRET, SERVER_NAME, proxyConfig } from './harness/proxy-config.js';
import { atLeast, atMost, formatValue, ratioRow, type ResultRow, type ScenarioResult } from './harness/report.js';
import { RoundFigures, rotated } from './harness/rounds.js';
import { seedSessions } from './harness/session-seeding.js';

/**
 * Issue 8, scenario 3: `POST /oauth2/introspect` as Synapse calls it, on the homeserver-facing listener. The proxy's
 * own tokens are answered from Redis (target ≥ 5,000/s with p99 ≤ 5 ms at 5,000/s); tokens of native OIDC clients
 * are relayed to the OP and cached. The baseline is the bare Node HTTP upstream answering the same POST.
 */

/** `own tokens ×2`: the same, answered by the proxy with `workers: 2` (issue 19: the saturation point with 2 workers). */
type Target = 'bare node' | 'own tokens' | 'own tokens ×2' | 'op relay';
const NATIVE_TOKENS = 20;
/** Fractions of the target rate tried once each, to find how much load keeps p99 within 5 ms. */
const LADDER = [0.4, 0.6, 0.8];
/** The same for 2 workers, upwards from the target rate until p99 passes 5 ms. */
const LADDER_2_WORKERS = [0.6, 1, 1.4, 1.8, 2.2];
const P99_LIMIT_MS = 5;
const KEY_PREFIX = 'mcp-bench-introspection:';
/** What Synapse sends with every introspection (synapse/api/auth/mas.py). */
const SYNAPSE_HEADERS = { authorization: `Bearer ${HOMESERVER_SECRET}`, accept: 'application/json', 'x-mas-supports-device-id': '1' };

export async function introspection(env: BenchEnvironment): Promise<ScenarioResult> {
  const settings = env.settings;
  const upstream = await env.upstream();
  const redis = await env.redis();
  const load = await env.loadGenerator();

  const ownTokensFile = join(env.tempDir, 'introspection-own-tokens.txt');
  const seeded = await seedSessions({ redisUrl: redis.url, keyPrefix: KEY_PREFIX, count: settings.smallSessionSet, firstIndex: 10_000_000, tokensFile: ownTokensFile });

  const op = await startTestOp({ users: benchUsers(10) });
  const homeserver = await startHomeserverDouble({ masEndpoint: 'http://127.0.0.1:9/', secret: HOMESERVER_SECRET, serverName: SERVER_NAME });
  const proxy = await ProxyChild.start({ name: 'introspection', config: proxyConfig({ homeserverUrl: homeserver.url, redisUrl: redis.url, keyPrefix: KEY_PREFIX, op }) });
  const proxy2 = await ProxyChild.start({ name: 'introspection-2-workers', config: proxyConfig({ homeserverUrl: homeserver.url, redisUrl: redis.url, keyPrefix: KEY_PREFIX, op }), workers: 2 });
  const children: Partial<Record<Target, ProxyChild>> = { 'own tokens': proxy, 'own tokens ×2': proxy2, 'op relay': proxy };
  const figures = new RoundFigures<Target>();
  const problems: string[] = [];
  const ladder: { rate: number; p50: number; p99: number }[] = [];
  const ladder2: { rate: number; p50: number; p99: number; achieved: number }[] = [];
  try {
    const tokenEndpoint = await tokenEndpointOf(op);
    const users = benchUsers(10);
    const nativeTokens = await Promise.all(
      Array.from({ length: settings.mode === 'smoke' ? 2 : NATIVE_TOKENS }, (_, index) => nativeAccessToken(op, tokenEndpoint, users[index % users.length]!, `NATIVE${index}`)),
    );
    const nativeTokensFile = join(env.tempDir, 'introspection-native-tokens.txt');
    writeFileSync(nativeTokensFile, `${nativeTokens.join('\n')}\n`);

    const introspect = (file: string, via: ProxyChild = proxy): RequestShape => ({
      url: `${via.homeserverFacingUrl}/oauth2/introspect`,
      method: 'POST',
      headers: SYNAPSE_HEADERS,
      tokens: { file, as: 'form' },
    });
    const shapes: Record<Target, RequestShape> = {
      'bare node': { url: `${upstream.url}/_upstream/json`, method: 'POST', headers: SYNAPSE_HEADERS, tokens: { file: ownTokensFile, as: 'form' } },
      'own tokens': introspect(ownTokensFile),
      'own tokens ×2': introspect(ownTokensFile, proxy2),
      'op relay': introspect(nativeTokensFile),
    };

    // Every answer must be active, or the benchmark measures refusals. This also provisions the native users.
    await expectActive(load, shapes['own tokens'], seeded.accessTokens.slice(0, 3), problems);
    await expectActive(load, shapes['own tokens ×2'], seeded.accessTokens.slice(0, 4), problems);
    await expectActive(load, shapes['op relay'], nativeTokens, problems);

    const targets: readonly Target[] = ['bare node', 'own tokens', 'own tokens ×2', 'op relay'];
    progress('introspection: warm-up');
    for (const target of targets) await load.run({ kind: 'throughput', ...shapes[target], connections: settings.introspectionConnections, durationSec: settings.warmupSec });
    for (let round = 0; round < settings.rounds; round++) {
      for (const target of rotated(targets, round)) {
        progress(`introspection: round ${round + 1}/${settings.rounds}, ${target}, ${settings.introspectionConnections} conn`);
        const child = children[target];
        const cpuBefore = child?.cpuTimeMs() ?? 0;
        const result = await load.run({ kind: 'throughput', ...shapes[target], connections: settings.introspectionConnections, durationSec: settings.roundSec });
        if (child !== undefined && result.ok > 0) figures.add(target, 'cpu µs/req', ((child.cpuTimeMs() - cpuBefore) * 1000) / result.ok);
        if (result.errors + result.non2xx > 0) problems.push(`${target}: ${result.errors} errors, ${result.non2xx} non-2xx`);
        figures.add(target, 'req/s', result.requestsPerSecond);
        figures.add(target, 'p99', result.latencyMs.p99);
      }
      for (const target of rotated(targets, round)) {
        progress(`introspection: round ${round + 1}/${settings.rounds}, ${target}, ${settings.introspectionRate}/s fixed`);
        const result = await load.run({ kind: 'fixed-rate', ...shapes[target], rate: settings.introspectionRate, connections: settings.introspectionConnections, durationSec: settings.roundSec });
        if (result.errors + result.non2xx > 0) problems.push(`${target} fixed rate: ${result.errors} errors, ${result.non2xx} non-2xx`);
        figures.add(target, 'fixed p50', result.latencyMs.p50);
        figures.add(target, 'fixed p99', result.latencyMs.p99);
        figures.add(target, 'fixed achieved', result.requestsPerSecond);
        figures.add(target, 'fixed lag', result.maxLagMs);
        figures.add(target, 'fixed send lag p99', result.sendLagMs.p99);
      }
    }
    for (const fraction of LADDER) {
      const rate = Math.round(settings.introspectionRate * fraction);
      progress(`introspection: own tokens at ${rate}/s fixed`);
      const result = await load.run({ kind: 'fixed-rate', ...shapes['own tokens'], rate, connections: settings.introspectionConnections, durationSec: settings.roundSec });
      ladder.push({ rate, p50: result.latencyMs.p50, p99: result.latencyMs.p99 });
    }
    for (const fraction of LADDER_2_WORKERS) {
      const rate = Math.round(settings.introspectionRate * fraction);
      progress(`introspection: own tokens, 2 workers, at ${rate}/s fixed`);
      const result = await load.run({ kind: 'fixed-rate', ...shapes['own tokens ×2'], rate, connections: settings.introspectionConnections, durationSec: settings.roundSec });
      if (result.errors + result.non2xx > 0) problems.push(`own tokens ×2 at ${rate}/s: ${result.errors} errors, ${result.non2xx} non-2xx`);
      ladder2.push({ rate, p50: result.latencyMs.p50, p99: result.latencyMs.p99, achieved: result.requestsPerSecond });
      // Past the limit the queue only grows: higher rates cannot be within it.
      if (result.latencyMs.p99 > P99_LIMIT_MS) break;
    }
  } finally {
    await proxy.stop();
    await proxy2.stop();
    await homeserver.stop();
    await op.stop();
  }
  const withinTarget = [...ladder, { rate: settings.introspectionRate, p50: figures.median('own tokens', 'fixed p50'), p99: figures.median('own tokens', 'fixed p99') }].filter((step) => step.p99 <= P99_LIMIT_MS);
  const bestRate = Math.max(0, ...withinTarget.map((step) => step.rate));
  // The saturation point with 2 workers: the highest open-loop rate whose p99 stayed within 5 ms. When even the lowest
  // step missed, there is none to give (0, and the note says so): the closed-loop maximum is what the workers answer
  // at any latency, not a rate within the limit.
  const within2 = ladder2.filter((step) => step.p99 <= P99_LIMIT_MS);
  const saturation2 = within2.length > 0 ? Math.max(...within2.map((step) => step.rate)) : 0;
  const saturation1 = bestRate;

  const rps = (target: Target) => figures.median(target, 'req/s');
  const rate = settings.introspectionRate;
  const rows: ResultRow[] = [
    ratioRow(`bare Node HTTP server, same POST, ${settings.introspectionConnections} conn`, rps('bare node'), 'req/s', { label: 'bare node', value: rps('bare node') }, { p99Ms: figures.median('bare node', 'p99'), rounds: figures.rounds('bare node', 'req/s') }),
    ratioRow(`own tokens (Redis), ${settings.introspectionConnections} conn`, rps('own tokens'), 'req/s', { label: 'bare node', value: rps('bare node') }, {
      p99Ms: figures.median('own tokens', 'p99'),
      rounds: figures.rounds('own tokens', 'req/s'),
      target: atLeast('≥ 5,000/s', rps('own tokens'), 5000, (value) => formatValue(value, 'req/s')),
    }),
    ratioRow(`own tokens: median latency @ ${rate}/s`, figures.median('own tokens', 'fixed p50'), 'ms', { label: 'bare node', value: figures.median('bare node', 'fixed p50') }, {
      p99Ms: figures.median('own tokens', 'fixed p99'),
      rounds: figures.rounds('own tokens', 'fixed p50'),
      target: atMost('p99 ≤ 5 ms @ 5,000/s', figures.median('own tokens', 'fixed p99'), 5, (ms) => `p99 ${formatValue(ms, 'ms')}`),
    }),
    ratioRow(`own tokens, 2 workers, ${settings.introspectionConnections} conn`, rps('own tokens ×2'), 'req/s', { label: 'own tokens 1 process', value: rps('own tokens') }, {
      p99Ms: figures.median('own tokens ×2', 'p99'),
      rounds: figures.rounds('own tokens ×2', 'req/s'),
    }),
    ratioRow(`own tokens, 2 workers: saturation (p99 ≤ 5 ms)`, saturation2, 'req/s', { label: 'same for 1 process', value: saturation1 }, {
      p99Ms: within2.length > 0 ? within2[within2.length - 1]!.p99 : figures.median('own tokens ×2', 'p99'),
    }),
    ratioRow(`own tokens 2 workers: median latency @ ${rate}/s`, figures.median('own tokens ×2', 'fixed p50'), 'ms', { label: 'own tokens 1 process', value: figures.median('own tokens', 'fixed p50') }, {
      p99Ms: figures.median('own tokens ×2', 'fixed p99'),
      rounds: figures.rounds('own tokens ×2', 'fixed p50'),
    }),
    ratioRow(`OP relay with cache, ${settings.introspectionConnections} conn`, rps('op relay'), 'req/s', { label: 'own tokens', value: rps('own tokens') }, {
      p99Ms: figures.median('op relay', 'p99'),
      rounds: figures.rounds('op relay', 'req/s'),
    }),
    ratioRow(`OP relay: median latency @ ${rate}/s`, figures.median('op relay', 'fixed p50'), 'ms', { label: 'own tokens', value: figures.median('own tokens', 'fixed p50') }, {
      p99Ms: figures.median('op relay', 'fixed p99'),
      rounds: figures.rounds('op relay', 'fixed p50'),
    }),
    ratioRow(`proxy 1 process, own tokens: CPU per introspection`, figures.median('own tokens', 'cpu µs/req'), 'µs', { label: 'proxy 1 process', value: figures.median('own tokens', 'cpu µs/req') }, { rounds: figures.rounds('own tokens', 'cpu µs/req') }),
    ratioRow(`proxy 2 workers, own tokens: CPU per introspection`, figures.median('own tokens ×2', 'cpu µs/req'), 'µs', { label: 'proxy 1 process', value: figures.median('own tokens', 'cpu µs/req') }, {
      rounds: figures.rounds('own tokens ×2', 'cpu µs/req'),
    }),
    ratioRow(`proxy 1 process, OP relay with cache: CPU per introspection`, figures.median('op relay', 'cpu µs/req'), 'µs', { label: 'proxy own tokens', value: figures.median('own tokens', 'cpu µs/req') }, { rounds: figures.rounds('op relay', 'cpu µs/req') }),
  ];
  const achieved = Math.min(...figures.rounds('own tokens', 'fixed achieved'));
  const notes = [
    `${settings.smallSessionSet} live sessions seeded through SessionStore; ${settings.mode === 'smoke' ? 2 : NATIVE_TOKENS} native OP tokens; the relay cache keeps answers ${'10 s'} (homeserver.introspection_cache_ttl default), so a few requests per round go to the OP`,
    `own tokens, p99 by offered rate (one round each): ${ladder.map((step) => `${step.rate}/s ${formatValue(step.p99, 'ms')}`).join(', ')}; highest rate tried with p99 ≤ 5 ms: ${bestRate === 0 ? 'none' : `${bestRate}/s`}`,
    `own tokens with 2 workers, p99 by offered rate (one round each): ${ladder2.map((step) => `${step.rate}/s ${formatValue(step.p99, 'ms')} (achieved ${Math.round(step.achieved)}/s)`).join(', ')}; saturation point (highest rate with p99 ≤ 5 ms): ${within2.length > 0 ? `${Math.round(saturation2)}/s` : `none, every step of the ladder missed (closed loop answered ${Math.round(figures.median('own tokens ×2', 'req/s'))}/s at any latency)`}; 1 process: ${bestRate > 0 ? `${bestRate}/s` : 'none'}`,
    `fixed-rate runs achieved ≥ ${Math.round(achieved)}/s of ${rate}/s (own tokens); worst generator lag ${figures.rounds('own tokens', 'fixed lag').map((lag) => lag.toFixed(1)).join('/')} ms`,
    `p99 at ${rate}/s by round: own tokens ${figures.rounds('own tokens', 'fixed p99').map((value) => value.toFixed(2)).join('/')} ms, bare node ${figures.rounds('bare node', 'fixed p99').map((value) => value.toFixed(2)).join('/')} ms; the generator's own send lag p99 (${process.env['BENCH_FIXED_RATE_CLOCK'] === 'thread' ? 'harness/paced-sender.ts' : 'setTimeout'}) ${figures.rounds('own tokens', 'fixed send lag p99').map((value) => value.toFixed(2)).join('/')} ms and ${figures.rounds('bare node', 'fixed send lag p99').map((value) => value.toFixed(2)).join('/')} ms`,
    `proxy CPU per introspection (load-independent): own tokens ${figures.median('own tokens', 'cpu µs/req').toFixed(0)} µs (2 workers, primary + workers: ${figures.median('own tokens ×2', 'cpu µs/req').toFixed(0)} µs), OP relay with cache ${figures.median('op relay', 'cpu µs/req').toFixed(0)} µs`,
  ];
  return { scenario: 'introspection', rows, notes, problems, details: { figures: figures.toJSON(), ladder, ladder2, saturation2 } };
}

async function expectActive(load: LoadGenerator, shape: RequestShape, tokens: readonly string[], problems: string[]): Promise<void> {
  const { tokens: _rotation, ...base } = shape;
  const result = await load.run({
    kind: 'sequence',
    steps: tokens.map((token) => ({ ...base, headers: { ...base.headers, 'content-type': 'application/x-www-form-urlencoded' }, body: `token=${token}&token_type_hint=access_token` })),
  });
  for (const step of result.steps) {
    if (step.status !== 200 || !step.body.includes('"active":true')) problems.push(`introspection not active: ${step.status} ${step.body.slice(0, 200)}`);
  }
}

if (isEntryPoint(import.meta.url)) await runStandalone('introspection', introspection);

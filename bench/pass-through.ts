import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { mintToken, newSessionId } from '../src/sessions/tokens.js';
import { startBaselineProxy } from './harness/baseline-child.js';
import { isEntryPoint, progress, runStandalone, type BenchEnvironment } from './harness/bench-environment.js';
import { ProxyChild } from './harness/proxy-child.js';
import { proxyConfig } from './harness/proxy-config.js';
import { atLeast, atMost, formatValue, ratioRow, type ResultRow, type ScenarioResult } from './harness/report.js';
import { RoundFigures, rotated } from './harness/rounds.js';
import { seedSessions } from './harness/session-seeding.js';

/**
 * Issue 8, scenario 1: the fast upstream's 2 KB JSON answer fetched directly, through Debian's nginx and through the
 * proxy, unauthenticated and with the access tokens of live legacy sessions (Redis) riding along. Synapse checks
 * them through introspection, which has its own scenario; the proxy looks at a session on the way in only when it
 * is due for re-validation, and remembers when that is. Then the latency each adds at a fixed 1,000 req/s.
 */

/**
 * swap: the proxy in appservice mode, swapping each proxy token for the session's homeserver token (issue 16).
 * `nginx ×2` and `proxy ×2` (issue 19): nginx with a master and 2 worker processes, the proxy with `workers: 2`
 * (src/cluster.ts) — the same number of workers on both sides, measured in the same rounds as the single processes.
 * `node` and `http-proxy` (issue 19): minimal reverse proxies in a Node process of their own, started like the proxy
 * (bench/baseline-proxy-process.ts) — node:http's request and pipe alone (the floor of any Node proxy here), and
 * the same server forwarding with http-proxy's web() (what http-proxy costs without Koa or the proxy's code).
 */
type Target = 'direct' | 'nginx' | 'nginx ×2' | 'node' | 'http-proxy' | 'proxy' | 'proxy ×2' | 'swap';
const TARGETS: readonly Target[] = ['direct', 'nginx', 'nginx ×2', 'node', 'http-proxy', 'proxy', 'proxy ×2', 'swap'];
/** Single processes whose CPU per request is compared with the proxy's (one process each). */
const SINGLE_PROCESSES = ['nginx', 'node', 'http-proxy', 'proxy'] as const;
/** The fixed-rate latency is about what one request costs, not about cores: single processes only. */
const LATENCY_TARGETS: readonly Target[] = ['direct', 'nginx', 'proxy', 'swap'];
const PATH = '/_upstream/json';
/** Few connections: at a fixed, moderate rate a handful suffices, and more would only add idle sockets. */
const LATENCY_CONNECTIONS = 10;
const TOKEN_SESSIONS = 1000;
const KEY_PREFIX = 'mcp-bench-pass-through:';
const SWAP_KEY_PREFIX = 'mcp-bench-swap:';

export async function passThrough(env: BenchEnvironment): Promise<ScenarioResult> {
  const settings = env.settings;
  const upstream = await env.upstream();
  const nginx = await env.nginx();
  const nginx2 = await env.nginx(2);
  const load = await env.loadGenerator();
  const redis = await env.redis();
  const tokensFile = join(env.tempDir, 'pass-through-tokens.txt');
  await seedSessions({ redisUrl: redis.url, keyPrefix: KEY_PREFIX, count: Math.min(TOKEN_SESSIONS, settings.sessions), firstIndex: 20_000_000, tokensFile });
  const proxy = await ProxyChild.start({ name: 'pass-through', config: proxyConfig({ homeserverUrl: upstream.url, redisUrl: redis.url, keyPrefix: KEY_PREFIX }) });
  // The same store and sessions: both proxies accept the same tokens, as two deployments of one proxy would.
  const proxy2 = await ProxyChild.start({ name: 'pass-through-2-workers', config: proxyConfig({ homeserverUrl: upstream.url, redisUrl: redis.url, keyPrefix: KEY_PREFIX }), workers: 2 });
  // The same sessions with a sealed homeserver token each, served by a proxy in appservice mode. The swap target
  // gets its own token file; the others keep theirs (a token of one store means nothing to the other proxy).
  const swapTokensFile = join(env.tempDir, 'pass-through-swap-tokens.txt');
  await seedSessions({ redisUrl: redis.url, keyPrefix: SWAP_KEY_PREFIX, count: Math.min(TOKEN_SESSIONS, settings.sessions), firstIndex: 20_000_000, tokensFile: swapTokensFile, homeserverTokens: true });
  const swap = await ProxyChild.start({ name: 'pass-through-swap', config: swapProxyConfig(env.tempDir, upstream.url, redis.url) });
  const nodeBaseline = await startBaselineProxy('node', upstream.url);
  const httpProxyBaseline = await startBaselineProxy('http-proxy', upstream.url);
  const urls: Record<Target, string> = {
    direct: upstream.url + PATH,
    nginx: nginx.url + PATH,
    'nginx ×2': nginx2.url + PATH,
    node: nodeBaseline.clientUrl + PATH,
    'http-proxy': httpProxyBaseline.clientUrl + PATH,
    proxy: proxy.clientUrl + PATH,
    'proxy ×2': proxy2.clientUrl + PATH,
    swap: swap.clientUrl + PATH,
  };
  // Whose CPU time each round reads: the Node processes and nginx (its one process, or its master and workers).
  const cpuOf: Partial<Record<Target, { cpuTimeMs(): number }>> = { nginx, 'nginx ×2': nginx2, node: nodeBaseline, 'http-proxy': httpProxyBaseline, proxy, 'proxy ×2': proxy2, swap };
  // Well-formed (right checksum) but naming no session: nothing can be remembered about them.
  const unknownTokensFile = join(env.tempDir, 'pass-through-unknown-tokens.txt');
  writeFileSync(unknownTokensFile, `${Array.from({ length: TOKEN_SESSIONS }, () => mintToken('access', newSessionId())).join('\n')}\n`);
  const variants = [
    { name: 'unauthenticated', shape: (_target: Target) => ({}) },
    { name: 'with token', shape: (target: Target) => ({ tokens: { file: target === 'swap' ? swapTokensFile : tokensFile, as: 'bearer' as const } }) },
  ] as const;

  const throughput = new RoundFigures<Target>();
  const latency = new RoundFigures<Target>();
  const errors: string[] = [];
  try {
    // Every baseline must pass the same answer on as the proxy, and drop the request's hop-by-hop headers.
    errors.push(...(await checkAnswers(upstream.url, { nginx: nginx.url, node: nodeBaseline.clientUrl, 'http-proxy': httpProxyBaseline.clientUrl, proxy: proxy.clientUrl })));
    // With tokens too: the proxy's first sight of each session reads it from Redis once.
    progress(`pass-through: warm-up`);
    for (const target of TARGETS) {
      for (const variant of variants) await load.run({ kind: 'throughput', url: urls[target], ...variant.shape(target), connections: settings.passThroughConnections, durationSec: settings.warmupSec });
    }

    for (let round = 0; round < settings.rounds; round++) {
      for (const variant of variants) {
        for (const target of rotated(TARGETS, round)) {
          progress(`pass-through: round ${round + 1}/${settings.rounds}, ${variant.name}, ${target}`);
          const child = cpuOf[target];
          const cpuBefore = child?.cpuTimeMs() ?? 0;
          const result = await load.run({ kind: 'throughput', url: urls[target], ...variant.shape(target), connections: settings.passThroughConnections, durationSec: settings.roundSec });
          if (child !== undefined && result.ok > 0) throughput.add(target, `${variant.name} cpu µs/req`, ((child.cpuTimeMs() - cpuBefore) * 1000) / result.ok);
          if (result.errors + result.non2xx > 0) errors.push(`${target} ${variant.name}: ${result.errors} errors, ${result.non2xx} non-2xx`);
          throughput.add(target, `${variant.name} req/s`, result.requestsPerSecond);
          throughput.add(target, `${variant.name} p50`, result.latencyMs.p50);
          throughput.add(target, `${variant.name} p99`, result.latencyMs.p99);
        }
      }
      progress(`pass-through: round ${round + 1}/${settings.rounds}, unknown tokens, proxy`);
      const unknown = await load.run({ kind: 'throughput', url: urls.proxy, tokens: { file: unknownTokensFile, as: 'bearer' }, connections: settings.passThroughConnections, durationSec: settings.roundSec });
      if (unknown.errors + unknown.non2xx > 0) errors.push(`proxy unknown tokens: ${unknown.errors} errors, ${unknown.non2xx} non-2xx`);
      throughput.add('proxy', 'unknown token req/s', unknown.requestsPerSecond);
      throughput.add('proxy', 'unknown token p99', unknown.latencyMs.p99);
      for (const target of rotated(LATENCY_TARGETS, round)) {
        progress(`pass-through: round ${round + 1}/${settings.rounds}, ${settings.latencyRate} req/s fixed, ${target}`);
        const result = await load.run({
          kind: 'fixed-rate',
          url: urls[target],
          ...variants[1].shape(target),
          rate: settings.latencyRate,
          connections: LATENCY_CONNECTIONS,
          durationSec: settings.roundSec,
        });
        if (result.errors + result.non2xx > 0) errors.push(`${target} fixed rate: ${result.errors} errors, ${result.non2xx} non-2xx`);
        latency.add(target, 'p50', result.latencyMs.p50);
        latency.add(target, 'p99', result.latencyMs.p99);
        latency.add(target, 'achieved', result.requestsPerSecond);
        latency.add(target, 'lag', result.maxLagMs);
      }
    }
  } finally {
    await proxy.stop();
    await proxy2.stop();
    await swap.stop();
    await nodeBaseline.stop();
    await httpProxyBaseline.stop();
  }

  const cpu = (target: Target, variant: string) => throughput.median(target, `${variant} cpu µs/req`);
  const rows: ResultRow[] = [];
  for (const variant of variants) {
    const rps = (target: Target) => throughput.median(target, `${variant.name} req/s`);
    const extra = (target: Target) => ({ p99Ms: throughput.median(target, `${variant.name} p99`), rounds: throughput.rounds(target, `${variant.name} req/s`) });
    const label = `${variant.name}, ${settings.passThroughConnections} conn`;
    rows.push(ratioRow(`direct, ${label}`, rps('direct'), 'req/s', { label: 'direct', value: rps('direct') }, extra('direct')));
    for (const [nginxTarget, proxyTarget, workers] of [['nginx', 'proxy', 1], ['nginx ×2', 'proxy ×2', 2]] as const) {
      const processes = workers === 1 ? '1 process' : `${workers} workers`;
      rows.push(ratioRow(`nginx ${processes}, ${label}`, rps(nginxTarget), 'req/s', { label: 'direct', value: rps('direct') }, extra(nginxTarget)));
      rows.push(
        ratioRow(`proxy ${processes}, ${label}`, rps(proxyTarget), 'req/s', { label: `nginx ${processes}`, value: rps(nginxTarget) }, {
          ...extra(proxyTarget),
          target: atLeast('≥ 0.5× nginx', rps(proxyTarget) / rps(nginxTarget), 0.5, (ratio) => `${ratio.toFixed(2)}× nginx`),
        }),
      );
    }
  }
  // Issue 19: how far a Node process gets at all. Each single process against nginx's one process, same rounds.
  for (const variant of variants) {
    const rps = (target: Target) => throughput.median(target, `${variant.name} req/s`);
    const label = `${variant.name}, ${settings.passThroughConnections} conn`;
    for (const [target, name] of [['node', 'Node floor (http.request + pipe), 1 process'], ['http-proxy', 'http-proxy web() alone, 1 process']] as const) {
      rows.push(ratioRow(`${name}, ${label}`, rps(target), 'req/s', { label: 'nginx 1 process', value: rps('nginx') }, { p99Ms: throughput.median(target, `${variant.name} p99`), rounds: throughput.rounds(target, `${variant.name} req/s`) }));
    }
    for (const target of SINGLE_PROCESSES) {
      if (target === 'proxy') continue;
      rows.push(ratioRow(`${target} 1 process, ${variant.name}: CPU per request`, cpu(target, variant.name), 'µs', { label: 'proxy 1 process', value: cpu('proxy', variant.name) }, { rounds: throughput.rounds(target, `${variant.name} cpu µs/req`) }));
    }
  }
  // CPU time per request summed over the proxy's processes (with 2 workers: the primary and both workers): the
  // figure that holds on a busy machine, where req/s mostly says how much CPU the others left.
  for (const variant of variants) {
    rows.push(ratioRow(`proxy 1 process, ${variant.name}: CPU per request`, cpu('proxy', variant.name), 'µs', { label: 'proxy 1 process', value: cpu('proxy', variant.name) }, { rounds: throughput.rounds('proxy', `${variant.name} cpu µs/req`) }));
    rows.push(
      ratioRow(`proxy 2 workers, ${variant.name}: CPU per request`, cpu('proxy ×2', variant.name), 'µs', { label: 'proxy 1 process', value: cpu('proxy', variant.name) }, {
        rounds: throughput.rounds('proxy ×2', `${variant.name} cpu µs/req`),
      }),
    );
  }
  rows.push(ratioRow(`swap (appservice), with token: CPU per request`, cpu('swap', 'with token'), 'µs', { label: 'proxy 1 process', value: cpu('proxy', 'with token') }, { rounds: throughput.rounds('swap', 'with token cpu µs/req') }));
  rows.push(
    ratioRow(`swap vs plain proxy, with token, ${settings.passThroughConnections} conn`, throughput.median('swap', 'with token req/s'), 'req/s', { label: 'proxy with token', value: throughput.median('proxy', 'with token req/s') }, {
      p99Ms: throughput.median('swap', 'with token p99'),
      rounds: throughput.rounds('swap', 'with token req/s'),
    }),
  );
  rows.push(
    ratioRow(`proxy, unknown well-formed tokens, ${settings.passThroughConnections} conn`, throughput.median('proxy', 'unknown token req/s'), 'req/s', { label: 'proxy with token', value: throughput.median('proxy', 'with token req/s') }, {
      p99Ms: throughput.median('proxy', 'unknown token p99'),
      rounds: throughput.rounds('proxy', 'unknown token req/s'),
    }),
  );
  const p50 = (target: Target) => latency.median(target, 'p50');
  const latencyRow = (target: Target, extra: Partial<ResultRow> = {}) =>
    ratioRow(`${target}: median latency @ ${settings.latencyRate} req/s`, p50(target), 'ms', { label: 'direct', value: p50('direct') }, {
      p99Ms: latency.median(target, 'p99'),
      rounds: latency.rounds(target, 'p50'),
      ...extra,
    });
  const added = (target: Target) => p50(target) - p50('direct');
  rows.push(latencyRow('direct'));
  rows.push(latencyRow('nginx'));
  rows.push(latencyRow('proxy', { target: atMost('added median ≤ 0.5 ms', added('proxy'), 0.5, (ms) => `+${formatValue(ms, 'ms')}`) }));
  rows.push(latencyRow('swap'));

  const notes = [
    `added median latency at ${settings.latencyRate} req/s: proxy +${formatValue(added('proxy'), 'ms')}, nginx +${formatValue(added('nginx'), 'ms')} (open loop, ${LATENCY_CONNECTIONS} keep-alive connections, tokens of ${Math.min(TOKEN_SESSIONS, settings.sessions)} live sessions round robin)`,
    `proxy vs direct, with token: ${(throughput.median('proxy', 'with token req/s') / throughput.median('direct', 'with token req/s')).toFixed(2)}×`,
    ...variants.map((variant) => {
      const ratio = (target: Target, of: Target) => (throughput.median(target, `${variant.name} req/s`) / throughput.median(of, `${variant.name} req/s`)).toFixed(2);
      return `${variant.name}, per worker count: proxy/nginx ${ratio('proxy', 'nginx')}× with 1, ${ratio('proxy ×2', 'nginx ×2')}× with 2; 2 workers over 1: proxy ${ratio('proxy ×2', 'proxy')}×, nginx ${ratio('nginx ×2', 'nginx')}× (the load generator, the upstream and the workers share the machine's ${availableParallelism()} cores)`;
    }),
    `proxy CPU per request (load-independent): unauthenticated ${cpu('proxy', 'unauthenticated').toFixed(0)} µs, with token ${cpu('proxy', 'with token').toFixed(0)} µs; with 2 workers (primary + workers) ${cpu('proxy ×2', 'unauthenticated').toFixed(0)} µs and ${cpu('proxy ×2', 'with token').toFixed(0)} µs`,
    ...variants.map((variant) => {
      const rps = (target: Target) => throughput.median(target, `${variant.name} req/s`);
      const each = SINGLE_PROCESSES.map((target) => `${target} ${Math.round(rps(target))} req/s (${(rps(target) / rps('nginx')).toFixed(2)}×), ${cpu(target, variant.name).toFixed(0)} µs CPU/req`);
      return `single processes, ${variant.name} (req/s, ratio to nginx, CPU per request): ${each.join('; ')}`;
    }),
    `token swap (appservice mode) vs plain pass-through, with token: CPU ${throughput.median('swap', 'with token cpu µs/req').toFixed(0)} vs ${throughput.median('proxy', 'with token cpu µs/req').toFixed(0)} µs/req, ${(throughput.median('swap', 'with token req/s') / throughput.median('proxy', 'with token req/s')).toFixed(2)}× req/s, median latency +${formatValue(p50('swap') - p50('proxy'), 'ms')} (homeserver.token_cache_ttl ${process.env['BENCH_SWAP_CACHE_TTL'] ?? '2s'}: a miss reads the session once per token per TTL)`,
  ];
  return { scenario: 'pass-through', rows, notes, problems: errors, details: { throughput: throughput.toJSON(), latency: latency.toJSON() } };
}

if (isEntryPoint(import.meta.url)) await runStandalone('pass-through', passThrough);

/** The proxy in appservice mode in front of the same upstream: a registration file of its own, no shared secret. */
function swapProxyConfig(tempDir: string, upstreamUrl: string, redisUrl: string): Record<string, unknown> {
  const registration = join(tempDir, 'pass-through-swap-registration.yaml');
  writeFileSync(
    registration,
    [
      'id: matrix-compat-proxy',
      'url: null',
      `as_token: ${randomBytes(32).toString('hex')}`,
      `hs_token: ${randomBytes(32).toString('hex')}`,
      'sender_localpart: compat-proxy',
      'rate_limited: false',
      'namespaces:',
      '  users:',
      '    - exclusive: false',
      "      regex: '@.*:bench\\.test'",
      '',
    ].join('\n'),
  );
  const config = proxyConfig({ homeserverUrl: upstreamUrl, redisUrl, keyPrefix: SWAP_KEY_PREFIX });
  const homeserver = config['homeserver'] as Record<string, unknown>;
  // BENCH_SWAP_CACHE_TTL (e.g. 60s) separates the cost of a cache hit from the store read of a miss.
  const ttl = process.env['BENCH_SWAP_CACHE_TTL'];
  return { ...config, homeserver: { url: homeserver['url'], mode: 'appservice', appservice: { registration_file: registration }, ...(ttl === undefined ? {} : { token_cache_ttl: ttl }) } };
}

/**
 * One request through each target before any load: the 2 KB JSON must arrive as the upstream sends it, and a request
 * with hop-by-hop headers (the fixed ones and one its Connection header names) must reach the upstream without them
 * (its echo route answers with the request it saw). nginx is checked for the body only: it forwards what Connection
 * names (it replaces Connection itself and drops Keep-Alive and TE only).
 */
async function checkAnswers(upstreamUrl: string, targets: Record<string, string>): Promise<string[]> {
  const problems: string[] = [];
  const expected = await get(upstreamUrl + PATH, {});
  for (const [name, base] of Object.entries(targets)) {
    const answer = await get(base + PATH, {});
    if (answer.status !== 200 || answer.body !== expected.body) problems.push(`${name}: the JSON answer differs from the upstream's (status ${answer.status})`);
    if (name === 'nginx') continue;
    const echo = await get(`${base}/bench-hop-by-hop-probe`, { connection: 'keep-alive, x-bench-hop', 'x-bench-hop': '1', 'keep-alive': 'timeout=5', te: 'trailers', 'x-bench-end-to-end': 'kept' });
    const seen = (JSON.parse(echo.body) as { headers: Record<string, string> }).headers;
    const leaked = ['x-bench-hop', 'keep-alive', 'te'].filter((header) => header in seen);
    if (echo.status !== 200 || leaked.length > 0 || seen['x-bench-end-to-end'] !== 'kept') problems.push(`${name}: hop-by-hop headers passed on (${leaked.join(', ') || 'end-to-end header lost'})`);
  }
  return problems;
}

function get(url: string, headers: Record<string, string>): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const sent = request(url, { headers }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (body += chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
      response.on('error', reject);
    });
    sent.on('error', reject);
    sent.end();
  });
}

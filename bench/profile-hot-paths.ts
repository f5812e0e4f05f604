import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { startBaselineProxy } from './harness/baseline-child.js';
import { isEntryPoint, progress, runStandalone, type BenchEnvironment } from './harness/bench-environment.js';
import { REPO_ROOT, RESULTS_DIR } from './harness/child-processes.js';
import { BUILD_DIR } from './harness/compile-proxy.js';
import { summariseProfile, type ProfileSummary } from './harness/cpu-profile.js';
import { ProxyChild } from './harness/proxy-child.js';
import { HOMESERVER_SECRET, proxyConfig } from './harness/proxy-config.js';
import { ratioRow, type ResultRow, type ScenarioResult } from './harness/report.js';
import { seedSessions } from './harness/session-seeding.js';

/**
 * CPU profiles (`node --cpu-prof`) of the proxy process under the two hot paths: pass-through with a token, and
 * introspection of its own tokens on Redis. Separate runs, because profiling slows the process it watches; the
 * throughput under the profiler is shown only to say how much load the profile saw. Issue 19: the same pass-through
 * load through http-proxy's web() alone (bench/baseline-proxy-process.ts, no Koa, no proxy code) is profiled too,
 * so that the two profiles, per request, show what the proxy adds to http-proxy.
 */

const PROFILE_SESSIONS = 1000;
const KEY_PREFIX = 'mcp-bench-profile:';

export async function profileHotPaths(env: BenchEnvironment): Promise<ScenarioResult> {
  const settings = env.settings;
  const upstream = await env.upstream();
  const redis = await env.redis();
  const load = await env.loadGenerator();
  const profileRoot = join(RESULTS_DIR, 'profiles');
  mkdirSync(profileRoot, { recursive: true });

  const config = proxyConfig({ homeserverUrl: upstream.url, redisUrl: redis.url, keyPrefix: KEY_PREFIX });
  const runs = [
    {
      name: 'pass-through',
      start: (dir: string) => ProxyChild.start({ name: 'profile-pass-through', config, cpuProfileDir: dir }),
      url: (proxy: ProxyChild) => `${proxy.clientUrl}/_upstream/json`,
      shape: { tokens: { file: join(env.tempDir, 'profile-tokens.txt'), as: 'bearer' as const } },
      connections: settings.passThroughConnections,
    },
    {
      name: 'pass-through, http-proxy alone',
      start: (dir: string) => startBaselineProxy('http-proxy', upstream.url, { name: 'profile-http-proxy', cpuProfileDir: dir }),
      url: (proxy: ProxyChild) => `${proxy.clientUrl}/_upstream/json`,
      shape: { tokens: { file: join(env.tempDir, 'profile-tokens.txt'), as: 'bearer' as const } },
      connections: settings.passThroughConnections,
    },
    {
      name: 'introspection',
      start: (dir: string) => ProxyChild.start({ name: 'profile-introspection', config, cpuProfileDir: dir }),
      url: (proxy: ProxyChild) => `${proxy.homeserverFacingUrl}/oauth2/introspect`,
      shape: { method: 'POST', headers: { authorization: `Bearer ${HOMESERVER_SECRET}` }, tokens: { file: join(env.tempDir, 'profile-tokens.txt'), as: 'form' as const } },
      connections: settings.introspectionConnections,
    },
  ];
  await seedSessions({ redisUrl: redis.url, keyPrefix: KEY_PREFIX, count: Math.min(PROFILE_SESSIONS, settings.sessions), tokensFile: join(env.tempDir, 'profile-tokens.txt') });

  const rows: ResultRow[] = [];
  const problems: string[] = [];
  const summaries: Record<string, ProfileSummary & { file: string; window: { fromMicros: number; toMicros: number }; requests: number; busyMicrosPerRequest: number }> = {};
  for (const run of runs) {
    const dir = join(profileRoot, run.name.replace(/[^\w-]+/g, '-'));
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    const proxy = await run.start(dir);
    let requestsPerSecond: number;
    let requests: number;
    let window: { fromMicros: number; toMicros: number };
    try {
      progress(`profile: ${run.name}, ${settings.profileSec} s under --cpu-prof`);
      await load.run({ kind: 'throughput', url: run.url(proxy), ...run.shape, connections: run.connections, durationSec: settings.warmupSec });
      const fromMicros = await proxy.clockMicros();
      const result = await load.run({ kind: 'throughput', url: run.url(proxy), ...run.shape, connections: run.connections, durationSec: settings.profileSec });
      window = { fromMicros, toMicros: await proxy.clockMicros() };
      requestsPerSecond = result.requestsPerSecond;
      requests = result.ok;
      if (result.errors + result.non2xx > 0) problems.push(`${run.name}: ${result.errors} errors, ${result.non2xx} non-2xx`);
    } finally {
      await proxy.stop();
    }
    // Main thread only: `CPU.<date>.<time>.<pid>.<thread>.<n>.cpuprofile`, thread 0.
    const file = readdirSync(dir).find((name) => /\.\d+\.0\.\d+\.cpuprofile$/.test(name));
    if (file === undefined) throw new Error(`no .cpuprofile of the main thread written in ${dir}`);
    const summary = summariseProfile(join(dir, file), { roots: [BUILD_DIR, REPO_ROOT], window });
    // Busy time per request under the profiler: what a share of the profile is worth in µs, to compare two profiles.
    summaries[run.name] = { ...summary, file: join(dir, file), window, requests, busyMicrosPerRequest: (summary.busyMs * 1000) / Math.max(1, requests) };
    rows.push(ratioRow(`${run.name} under the profiler`, requestsPerSecond, 'req/s', { label: 'itself', value: requestsPerSecond }));
  }

  const notes = Object.entries(summaries).map(([name, summary]) => {
    const top = summary.topSelf.slice(0, 6).map((frame) => `${frame.frame} ${frame.selfPercent} %`).join('; ');
    const origins = summary.byOrigin.slice(0, 6).map((entry) => `${entry.origin} ${entry.selfPercent} %`).join(', ');
    return `profile ${name}: busy ${summary.busyMs} ms (${summary.busyMicrosPerRequest.toFixed(0)} µs per request); self time by origin: ${origins}; top self frames: ${top}`;
  });
  return { scenario: 'profile', rows, notes, problems, details: { profiles: summaries } };
}

if (isEntryPoint(import.meta.url)) await runStandalone('profile', profileHotPaths);

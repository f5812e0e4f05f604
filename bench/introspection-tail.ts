import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { BenchEnvironment, progress } from './harness/bench-environment.js';
import { settingsFromArgs } from './harness/bench-settings.js';
import { RESULTS_DIR } from './harness/child-processes.js';
import { compileProxyAt } from './harness/compile-proxy.js';
import type { FixedRateResult, FixedRateTrace } from './harness/load-jobs.js';
import { ProxyChild } from './harness/proxy-child.js';
import { HOMESERVER_SECRET, proxyConfig } from './harness/proxy-config.js';
import { rotated } from './harness/rounds.js';
import { seedSessions } from './harness/session-seeding.js';
import { distributionOf, median, percentile } from './harness/statistics.js';
import { startProbe, stopProbe, type ProbeReport } from './harness/tail-probe.js';

/**
 * Where the introspection p99 at 5,000/s comes from (issue 19). Open-loop introspections of own tokens, one proxy
 * process, alternating round by round with the bare Node server answering the same POST (the baseline of
 * bench/introspection.ts) and, with `--base REF`, with a proxy built from a git ref. Every request's due time and
 * latency come back from the load generator, and the target's own record from harness/tail-probe.ts (preloaded into
 * the proxies, in this process for the bare server): its garbage collections, event-loop delay and blocks, bytes
 * allocated and CPU; the load generator records the same about itself and how late it sent each request. The slow
 * requests are grouped into episodes (slow requests due less than 2 ms apart) and each episode is set against what
 * overlapped it: a collection or a blocked loop in the target, the generator sending late, or the generator's own
 * collections and blocks. /proc/<pid>/schedstat gives each process's time waiting for a CPU.
 *
 *   node --import tsx bench/introspection-tail.ts [--rounds N] [--seconds S] [--rate R] [--base REF] [--flags "..."]
 *     [--no-bare] [--allocations] [--sched-generator nice:N|fifo:N] [--sched-targets nice:N|fifo:N] [--clocks thread,timer]
 *
 * Writes bench/results/<time>-introspection-tail.json (every round's figures, episodes, schedstat).
 */

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    rounds: { type: 'string' },
    seconds: { type: 'string' },
    rate: { type: 'string' },
    connections: { type: 'string' },
    base: { type: 'string' },
    'no-bare': { type: 'boolean' },
    allocations: { type: 'boolean' },
    'live-objects': { type: 'boolean' },
    flags: { type: 'string' },
    'sched-generator': { type: 'string' },
    'sched-targets': { type: 'string' },
    clocks: { type: 'string' },
    smoke: { type: 'boolean' },
  },
  strict: true,
});
const smoke = values.smoke === true;
const rounds = Number(values.rounds ?? (smoke ? '1' : '4'));
const seconds = Number(values.seconds ?? (smoke ? '0.3' : '5'));
const rate = Number(values.rate ?? (smoke ? '300' : '5000'));
const connections = Number(values.connections ?? '16');
/** Sample where the targets allocate (V8's sampling heap profiler): its cost makes the latencies of such a run moot. */
const allocations: boolean | 'live' = values['live-objects'] === true ? 'live' : values.allocations === true;
/**
 * What wakes the load generator (load-jobs.ts `clock`): `--clocks timer,thread` runs every target under each in the
 * same rounds, so the generator's own lateness before and after issue 19's item 3 is compared paired.
 */
const clocks = (values.clocks ?? 'thread').split(',').map((clock): 'thread' | 'timer' => {
  if (clock !== 'thread' && clock !== 'timer') throw new Error(`--clocks: thread or timer, not "${clock}"`);
  return clock;
});
const SLOW_MS = 5;
/** Slow requests due closer together than this belong to one episode. */
const EPISODE_GAP_MS = 2;
const KEY_PREFIX = 'mcp-bench-tail:';
const SESSIONS = 1000;
const SYNAPSE_HEADERS = { authorization: `Bearer ${HOMESERVER_SECRET}`, accept: 'application/json', 'x-mas-supports-device-id': '1' };

/** `flags`: this tree's proxy started with `--flags` (node/V8 flags, space-separated), next to the one without. */
type Target = 'bare node' | 'this' | 'base' | 'flags';

interface Episode {
  readonly start: number;
  readonly requests: number;
  readonly maxLatencyMs: number;
  /** The longest collection pause of the target overlapping the episode (ms) and its kind. */
  readonly targetGcMs: number;
  readonly targetGcKind: string;
  /** The longest event-loop block of the target overlapping the episode, collections included (ms). */
  readonly targetBlockMs: number;
  /** How late the generator sent the episode's requests at most (ms). */
  readonly generatorSendLagMs: number;
  readonly generatorGcMs: number;
  readonly generatorBlockMs: number;
  readonly cause: string;
}

interface SchedStat {
  readonly runMs: number;
  readonly waitMs: number;
  readonly slices: number;
}

/**
 * `nice:N` or `fifo:N` (SCHED_FIFO priority N) for every thread of a process, by `renice`/`chrt` per thread id: a
 * process's threads are scheduled one by one on Linux, and V8's GC helpers and libuv's pool are threads too.
 */
function applySchedule(pid: number, spec: string): void {
  const match = /^(nice|fifo):(-?\d+)$/.exec(spec);
  if (match === null) throw new Error(`scheduling "${spec}": say nice:N or fifo:N`);
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    if (match[1] === 'nice') execFileSync('renice', ['-n', match[2] as string, '-p', tid], { stdio: 'ignore' });
    else execFileSync('chrt', ['-f', '-p', match[2] as string, tid], { stdio: 'ignore' });
  }
}

/** CPU time and run-queue wait of a process's main thread (the event loop), from /proc/<pid>/task/<pid>/schedstat. */
function schedStat(pid: number): SchedStat | undefined {
  try {
    const [run, wait, slices] = readFileSync(`/proc/${pid}/task/${pid}/schedstat`, 'utf8').trim().split(' ').map(Number);
    return { runMs: (run ?? 0) / 1e6, waitMs: (wait ?? 0) / 1e6, slices: slices ?? 0 };
  } catch {
    return undefined;
  }
}

/** This process's children by role (load generator, redis-server, proxies), found through /proc. */
function childPids(): Record<string, number> {
  const found: Record<string, number> = {};
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid !== process.pid) continue;
      const command = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (command.includes('load-generator')) found['load generator'] = Number(entry);
      else if (command.includes('redis-server')) found['redis'] = Number(entry);
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

const overlaps = (start: number, end: number, eventStart: number, eventLength: number) => eventStart < end && eventStart + eventLength > start;

function analyse(trace: FixedRateTrace, target: ProbeReport): { episodes: Episode[]; sendLagP99: number; slowWithoutCause: number } {
  const { dueAt, latencyMs } = trace;
  // How late the generator handed each request to a connection, as it measured per request.
  const sendLag = Float64Array.from(trace.sendLagMs);
  const episodes: Episode[] = [];
  let current: { start: number; end: number; lastDue: number; requests: number; max: number; sendLag: number } | undefined;
  const close = () => {
    if (current === undefined) return;
    const { start, end } = current;
    const gc = target.gc.filter(([at, length]) => overlaps(start, end, at, length)).sort((a, b) => b[1] - a[1])[0];
    const block = Math.max(0, ...target.blocks.filter(([at, length]) => overlaps(start, end, at, length)).map(([, length]) => length));
    const generatorGc = Math.max(0, ...trace.generator.gc.filter(([at, length]) => overlaps(start, end, at, length)).map(([, length]) => length));
    const generatorBlock = Math.max(0, ...trace.generator.blocks.filter(([at, length]) => overlaps(start, end, at, length)).map(([, length]) => length));
    const targetGcMs = gc?.[1] ?? 0;
    // The largest overlapping stall names the cause; under 1 ms nothing seen explains a 5 ms wait.
    const candidates: [string, number][] = [
      [`target ${gc?.[2] ?? ''} GC`, targetGcMs],
      ['target loop blocked (no GC)', targetGcMs >= 1 ? 0 : block],
      ['generator sent late', current.sendLag],
      ['generator GC', generatorGc],
      ['generator loop blocked', generatorGc >= 1 ? 0 : generatorBlock],
    ];
    const [cause, size] = candidates.sort((a, b) => b[1] - a[1])[0] as [string, number];
    episodes.push({
      start,
      requests: current.requests,
      maxLatencyMs: current.max,
      targetGcMs,
      targetGcKind: gc?.[2] ?? '',
      targetBlockMs: block,
      generatorSendLagMs: current.sendLag,
      generatorGcMs: generatorGc,
      generatorBlockMs: generatorBlock,
      cause: size >= 1 ? cause : 'nothing seen',
    });
    current = undefined;
  };
  for (let index = 0; index < dueAt.length; index++) {
    const latency = latencyMs[index] as number;
    if (latency < SLOW_MS) continue;
    const due = dueAt[index] as number;
    if (current !== undefined && due > current.lastDue + EPISODE_GAP_MS) close();
    if (current === undefined) current = { start: due, end: due + latency, lastDue: due, requests: 0, max: 0, sendLag: 0 };
    current.requests += 1;
    current.lastDue = due;
    current.end = Math.max(current.end, due + latency);
    current.max = Math.max(current.max, latency);
    current.sendLag = Math.max(current.sendLag, sendLag[index] as number);
  }
  close();
  const sorted = Float64Array.from(sendLag).sort();
  const slowWithoutCause = episodes.filter((episode) => episode.cause === 'nothing seen').reduce((sum, episode) => sum + episode.requests, 0);
  return { episodes, sendLagP99: percentile(sorted, 0.99), slowWithoutCause };
}

const env = new BenchEnvironment(settingsFromArgs(smoke ? ['--smoke'] : []));
const proxies: Partial<Record<Target, ProxyChild>> = {};
const startedAt = new Date();
const roundsOut: Record<string, unknown>[] = [];
const problems: string[] = [];
try {
  const upstream = await env.upstream();
  const redis = await env.redis();
  const load = await env.loadGenerator();
  const tokens = join(env.tempDir, 'tail-tokens.txt');
  await seedSessions({ redisUrl: redis.url, keyPrefix: KEY_PREFIX, count: SESSIONS, tokensFile: tokens });
  const config = proxyConfig({ homeserverUrl: upstream.url, redisUrl: redis.url, keyPrefix: KEY_PREFIX });
  proxies.this = await ProxyChild.start({ name: 'tail-this', config, probe: true });
  let baseCommit: string | undefined;
  if (values.base !== undefined) {
    const base = compileProxyAt(values.base, 'tail');
    baseCommit = base.commit;
    proxies.base = await ProxyChild.start({ name: 'tail-base', config, entry: base.entry, probe: true });
  }
  if (values.flags !== undefined) proxies.flags = await ProxyChild.start({ name: 'tail-flags', config, probe: true, nodeFlags: values.flags.split(' ').filter((flag) => flag !== '') });
  const pids = childPids();
  // Scheduling priority (issue 19, the generator's own lag): the generator serves every target alike; the targets'
  // setting goes to every proxy process and to this process, which serves the bare Node baseline.
  const schedGenerator = values['sched-generator'];
  const schedTargets = values['sched-targets'];
  if (schedGenerator !== undefined) applySchedule(pids['load generator'] as number, schedGenerator);
  if (schedTargets !== undefined) {
    for (const proxy of Object.values(proxies)) applySchedule(proxy.pid, schedTargets);
    applySchedule(process.pid, schedTargets);
  }
  if (schedGenerator !== undefined || schedTargets !== undefined) progress(`tail: scheduling: generator ${schedGenerator ?? 'default'}, targets ${schedTargets ?? 'default'}`);
  const targets: Target[] = [...(values['no-bare'] === true ? [] : ['bare node' as const]), 'this', ...(proxies.base === undefined ? [] : ['base' as const]), ...(proxies.flags === undefined ? [] : ['flags' as const])];
  const urlOf = (target: Target) => (target === 'bare node' ? `${upstream.url}/_upstream/json` : `${(proxies[target] as ProxyChild).homeserverFacingUrl}/oauth2/introspect`);
  progress('tail: warm-up');
  for (const target of targets) await load.run({ kind: 'throughput', url: urlOf(target), method: 'POST', headers: SYNAPSE_HEADERS, tokens: { file: tokens, as: 'form' }, connections, durationSec: smoke ? 0.1 : 2 });

  const units = targets.flatMap((target) => clocks.map((clock) => ({ target, clock, label: clocks.length > 1 ? `${target} (${clock})` : target })));
  for (let round = 0; round < rounds; round++) {
    for (const { target, clock, label } of rotated(units, round)) {
      const proxy = proxies[target];
      const processes: Record<string, number> = { ...pids, ...(proxy === undefined ? { target: process.pid } : { target: proxy.pid }) };
      const schedBefore = Object.fromEntries(Object.entries(processes).map(([name, pid]) => [name, schedStat(pid)]));
      const load1 = loadavg()[0] as number;
      if (proxy === undefined) await startProbe({ allocations });
      else await proxy.probeStart({ allocations });
      const result: FixedRateResult = await load.run({ kind: 'fixed-rate', url: urlOf(target), method: 'POST', headers: SYNAPSE_HEADERS, tokens: { file: tokens, as: 'form' }, rate, connections, durationSec: seconds, trace: true, clock });
      const report = proxy === undefined ? await stopProbe() : await proxy.probeStop();
      const sched = Object.fromEntries(
        Object.entries(processes).map(([name, pid]) => {
          const before = schedBefore[name];
          const after = schedStat(pid);
          if (before === undefined || after === undefined) return [name, undefined];
          return [name, { cpuMsPerS: (after.runMs - before.runMs) / seconds, runQueueWaitMsPerS: (after.waitMs - before.waitMs) / seconds, slicesPerS: (after.slices - before.slices) / seconds }];
        }),
      );
      const trace = result.trace as FixedRateTrace;
      const { episodes, sendLagP99, slowWithoutCause } = analyse(trace, report);
      const requests = result.ok;
      const per10k = (count: number) => (count * 10_000) / requests;
      const gcOf = (kind: string) => report.gc.filter(([, , k]) => k === kind);
      const pauses = (list: [number, number, string][]) => distributionOf(list.map(([, length]) => length));
      const causes: Record<string, number> = {};
      for (const episode of episodes) causes[episode.cause] = (causes[episode.cause] ?? 0) + episode.requests;
      const summary = {
        round: round + 1,
        target: label,
        clock,
        loadAverage: load1,
        requests,
        errors: result.errors + result.non2xx,
        latencyMs: { ...result.latencyMs, p999: percentile(Float64Array.from(trace.latencyMs.filter((value) => value >= 0)).sort(), 0.999) },
        slowRequests: trace.latencyMs.filter((value) => value >= SLOW_MS).length,
        slowRequestsByCause: causes,
        slowWithoutCause,
        targetGc: {
          scavengesPer10k: per10k(gcOf('minor').length),
          scavengePauseMs: pauses(gcOf('minor')),
          markCompactsPer10k: per10k(gcOf('major').length),
          markCompactPauseMs: pauses(gcOf('major')),
          otherPer10k: per10k(report.gc.length - gcOf('minor').length - gcOf('major').length),
          pauseMsPer10k: per10k(report.gc.reduce((sum, [, length]) => sum + length, 0)),
        },
        targetAllocatedBytesPerRequest: report.allocatedBytes / requests,
        targetCpuUsPerRequest: (report.cpuMs * 1000) / requests,
        targetEventLoopDelayMs: report.eventLoopDelayMs,
        targetBlocksOver2ms: report.blocks.length,
        generator: {
          maxLagMs: result.maxLagMs,
          sendLagP99Ms: sendLagP99,
          sendLagMs: distributionOf(trace.sendLagMs),
          sentOver1msLate: trace.sendLagMs.filter((lag) => lag >= 1).length,
          gcPauseMsPer10k: per10k(trace.generator.gc.reduce((sum, [, length]) => sum + length, 0)),
          gcOver1ms: trace.generator.gc.filter(([, length]) => length >= 1).length,
          eventLoopDelayMs: trace.generator.eventLoopDelayMs,
          blocksOver2ms: trace.generator.blocks.length,
          cpuUsPerRequest: (trace.generator.cpuMs * 1000) / requests,
        },
        schedstat: sched,
        episodes: episodes.sort((a, b) => b.maxLatencyMs - a.maxLatencyMs),
        ...(report.allocationSites === undefined ? {} : { allocationSites: report.allocationSites }),
      };
      roundsOut.push(summary);
      // Only right answers are measured: a refusal or an error would be a different path (bench-smoke checks this).
      if (summary.errors > 0) problems.push(`round ${round + 1}, ${label}: ${result.errors} errors, ${result.non2xx} non-2xx`);
      const top = summary.episodes.slice(0, 4).map((episode) => `${episode.maxLatencyMs.toFixed(1)}ms×${episode.requests} ${episode.cause}`).join('; ');
      progress(
        `tail: round ${round + 1}/${rounds} ${label.padEnd(9)} p50 ${result.latencyMs.p50.toFixed(2)} p99 ${result.latencyMs.p99.toFixed(2)} max ${result.latencyMs.max.toFixed(1)} ms; slow ${summary.slowRequests}; ` +
          `scav/10k ${summary.targetGc.scavengesPer10k.toFixed(1)} (p50 ${summary.targetGc.scavengePauseMs.p50.toFixed(2)} max ${summary.targetGc.scavengePauseMs.max.toFixed(2)} ms), MC/10k ${summary.targetGc.markCompactsPer10k.toFixed(2)} (max ${summary.targetGc.markCompactPauseMs.max.toFixed(1)} ms); ` +
          `alloc ${(summary.targetAllocatedBytesPerRequest / 1024).toFixed(1)} KiB/req; cpu ${summary.targetCpuUsPerRequest.toFixed(0)} µs/req; eld p99 ${report.eventLoopDelayMs.p99.toFixed(2)} max ${report.eventLoopDelayMs.max.toFixed(1)}; ` +
          `gen lag max ${result.maxLagMs.toFixed(1)} p99 ${sendLagP99.toFixed(2)} cpu ${summary.generator.cpuUsPerRequest.toFixed(1)} µs/req; runq ms/s ${Object.entries(sched).map(([name, value]) => `${name} ${value?.runQueueWaitMsPerS.toFixed(0) ?? '?'}`).join(', ')}; load ${load1.toFixed(1)}\n        top: ${top}`,
      );
      if (report.allocationSites !== undefined) {
        const perRequest = (bytes: number) => `${(bytes / requests).toFixed(0)} B`;
        progress(`tail: ${label} allocation sites (sampled ${perRequest(report.allocationSites.sampledBytes)}/req), innermost src/ frame: ${report.allocationSites.bySource.slice(0, 25).map((site) => `\n    ${perRequest(site.bytes)} ${site.site}`).join('')}`);
        progress(`tail: ${label} by allocating function: ${report.allocationSites.bySelf.slice(0, 25).map((site) => `\n    ${perRequest(site.bytes)} ${site.site}`).join('')}`);
      }
    }
  }
  const byTarget = (target: string, pick: (round: Record<string, unknown>) => number) => roundsOut.filter((round) => round['target'] === target).map(pick);
  process.stdout.write(`\nintrospection tail at ${rate}/s, ${connections} connections, ${rounds} rounds of ${seconds} s${baseCommit === undefined ? '' : `, base ${values.base} (${baseCommit})`}\n`);
  for (const { label: target } of units) {
    const p99 = byTarget(target, (round) => (round['latencyMs'] as { p99: number }).p99);
    const gc = byTarget(target, (round) => (round['targetGc'] as { scavengesPer10k: number }).scavengesPer10k);
    const alloc = byTarget(target, (round) => round['targetAllocatedBytesPerRequest'] as number);
    const cpu = byTarget(target, (round) => round['targetCpuUsPerRequest'] as number);
    const generator = (pick: (figures: { sendLagP99Ms: number; cpuUsPerRequest: number }) => number) => byTarget(target, (round) => pick(round['generator'] as { sendLagP99Ms: number; cpuUsPerRequest: number }));
    const lag = generator((figures) => figures.sendLagP99Ms);
    process.stdout.write(
      `${target.padEnd(10)} p99 ${median(p99).toFixed(2)} ms [${p99.map((value) => value.toFixed(1)).join(' ')}]; scavenges/10k ${median(gc).toFixed(1)}; alloc ${(median(alloc) / 1024).toFixed(2)} KiB/req; cpu ${median(cpu).toFixed(0)} µs/req; ` +
        `generator send lag p99 ${median(lag).toFixed(2)} ms [${lag.map((value) => value.toFixed(2)).join(' ')}], cpu ${median(generator((figures) => figures.cpuUsPerRequest)).toFixed(1)} µs/req\n`,
    );
  }
  if (!smoke) {
    mkdirSync(RESULTS_DIR, { recursive: true });
    const file = join(RESULTS_DIR, `${startedAt.toISOString().replace(/[:.]/g, '-')}-introspection-tail.json`);
    writeFileSync(file, `${JSON.stringify({ name: 'introspection-tail', startedAt, finishedAt: new Date(), node: process.version, rate, connections, seconds, problems, base: values.base, baseCommit, flags: values.flags, scheduling: { generator: values['sched-generator'] ?? 'default', targets: values['sched-targets'] ?? 'default' }, clocks, loadAverageAtEnd: loadavg(), rounds: roundsOut }, null, 1)}\n`);
    process.stdout.write(`results: ${file}\n`);
  }
} finally {
  for (const proxy of Object.values(proxies)) await proxy.stop();
  await env.close();
}
if (problems.length > 0) {
  process.stderr.write(`wrong answers:\n${problems.join('\n')}\n`);
  process.exit(1);
}
process.exit(0);

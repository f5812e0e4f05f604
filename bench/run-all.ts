import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { BenchEnvironment, progress, type Scenario } from './harness/bench-environment.js';
import { settingsFromArgs } from './harness/bench-settings.js';
import type { ProfileSummary } from './harness/cpu-profile.js';
import { REPO_ROOT } from './harness/child-processes.js';
import { writeReport, type ResultsDocument } from './harness/html-report.js';
import { renderTable, writeResults, type ScenarioResult } from './harness/report.js';
import { horizontal } from './horizontal.js';
import { introspection } from './introspection.js';
import { largeBodies } from './large-bodies.js';
import { login } from './login.js';
import { memoryScale } from './memory-scale.js';
import { passThrough } from './pass-through.js';
import { profileHotPaths } from './profile-hot-paths.js';

/**
 * `npm run bench`: every scenario of issue 8 in one run (so every ratio has its baseline from the same minutes),
 * the table on stdout, JSON in bench/results/. `--smoke` runs everything for a moment, without meaning;
 * `--only pass-through,login` picks scenarios.
 */

const SCENARIOS: readonly (readonly [string, Scenario])[] = [
  ['pass-through', passThrough],
  ['large-bodies', largeBodies],
  ['introspection', introspection],
  ['login', login],
  ['memory-scale', memoryScale],
  ['horizontal', horizontal],
  ['profile', profileHotPaths],
];

/** Committed: the bench README embeds these for the figures it quotes. */
const CHARTS_DIR = join(REPO_ROOT, 'bench', 'charts');

const settings = settingsFromArgs();
const unknown = settings.only.filter((name) => !SCENARIOS.some(([known]) => known === name));
if (unknown.length > 0) {
  process.stderr.write(`unknown scenario(s) ${unknown.join(', ')}; known: ${SCENARIOS.map(([name]) => name).join(', ')}\n`);
  process.exit(2);
}

const startedAt = new Date();
const env = new BenchEnvironment(settings);
const results: ScenarioResult[] = [];
const load: Record<string, { before: number; after: number }> = {};
let failed = false;
try {
  for (const [name, scenario] of SCENARIOS) {
    if (settings.only.length > 0 && !settings.only.includes(name)) continue;
    const before = loadavg()[0] ?? 0;
    const started = performance.now();
    progress(`== ${name}`);
    try {
      results.push(await scenario(env));
    } catch (error) {
      failed = true;
      process.stderr.write(`scenario ${name} failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
      results.push({ scenario: name, rows: [], notes: [], problems: [`scenario failed: ${error instanceof Error ? error.message : String(error)}`], details: {} });
    }
    load[name] = { before, after: loadavg()[0] ?? 0 };
    progress(`== ${name} done in ${((performance.now() - started) / 1000).toFixed(0)} s`);
  }
} finally {
  await env.close();
}

process.stdout.write(`\nmatrix-compat-proxy benchmarks (${settings.mode}, ${settings.rounds} round(s), node ${process.version}, ${(Date.now() - startedAt.getTime()) / 1000} s)\n\n`);
process.stdout.write(`${renderTable(results)}\n`);
const profiles = results.find((result) => result.scenario === 'profile')?.details['profiles'] as Record<string, ProfileSummary> | undefined;
for (const [name, summary] of Object.entries(profiles ?? {})) {
  process.stdout.write(`\nCPU profile, ${name} (proxy process, self time, % of busy samples):\n`);
  for (const frame of summary.topSelf.slice(0, 10)) process.stdout.write(`  ${String(frame.selfPercent).padStart(5)} %  ${frame.frame}\n`);
  process.stdout.write(`  by origin: ${summary.byOrigin.slice(0, 8).map((entry) => `${entry.origin} ${entry.selfPercent} %`).join(', ')}\n`);
  process.stdout.write(`  own code (src/) inclusive: ${summary.topOwnInclusive.slice(0, 6).map((frame) => `${frame.frame} ${frame.totalPercent} %`).join(', ')}\n`);
}
process.stdout.write(`\nmachine load average (1 min) before/after each scenario: ${Object.entries(load).map(([name, value]) => `${name} ${value.before.toFixed(1)}/${value.after.toFixed(1)}`).join(', ')}\n`);
const resultsPath = writeResults('all', settings, results, startedAt, { loadAverage: load, elapsedSeconds: (Date.now() - startedAt.getTime()) / 1000, ...(env.pinning === undefined ? {} : { pinning: env.pinning }) });
process.stdout.write(`results: ${resultsPath}\n`);
if (settings.report) {
  // The smoke run's charts mean nothing: its page goes to the results folder only, never over bench/charts/.
  const document = JSON.parse(readFileSync(resultsPath, 'utf8')) as ResultsDocument;
  const page = writeReport(document, resultsPath.replace(/\.json$/, '-report.html'), settings.mode === 'smoke' ? undefined : CHARTS_DIR);
  process.stdout.write(`report: ${page}${settings.mode === 'smoke' ? '' : ` (charts: ${CHARTS_DIR})`}\n`);
}
process.exit(failed ? 1 : 0);

import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import type { BenchSettings } from './bench-settings.js';
import { RESULTS_DIR } from './child-processes.js';

/** µs: CPU time per request, summed over the proxy's processes. */
export type Unit = 'req/s' | 'ms' | 'µs' | 'MB/s' | 'MB' | 'B' | 'count';

export interface Target {
  /** The goal as the issue states it, e.g. "≥ 0.5× nginx". */
  readonly goal: string;
  readonly met: boolean;
  /** How far from the goal, e.g. "0.62× (+24 %)". */
  readonly margin: string;
}

/** One line of the table. Medians over rounds; `ratio` is against a baseline measured in the same run. */
export interface ResultRow {
  readonly measure: string;
  readonly value: number;
  readonly unit: Unit;
  /** Latency p99 in ms (median of the rounds' p99), where the measure has a latency. */
  readonly p99Ms?: number;
  readonly rounds?: readonly number[];
  readonly baseline?: { readonly label: string; readonly value: number; readonly ratio: number };
  readonly target?: Target;
}

export interface ScenarioResult {
  readonly scenario: string;
  readonly rows: readonly ResultRow[];
  /** Findings that are not a number in the table (what a limit was, what was not feasible). */
  readonly notes: readonly string[];
  /**
   * Wrong answers seen while measuring (errors, unexpected statuses, inactive tokens): the figures of a scenario
   * with problems measure something else than they claim. The smoke test fails on any.
   */
  readonly problems: readonly string[];
  /** Everything measured, for the JSON file. */
  readonly details: Readonly<Record<string, unknown>>;
}

export function ratioRow(measure: string, value: number, unit: Unit, baseline: { label: string; value: number }, extra: Partial<ResultRow> = {}): ResultRow {
  return { measure, value, unit, baseline: { ...baseline, ratio: value / baseline.value }, ...extra };
}

/** "≥ goal" or "≤ goal" on a value; the margin says by how much. */
export function atLeast(goal: string, actual: number, limit: number, format: (value: number) => string): Target {
  return { goal, met: actual >= limit, margin: `${format(actual)} (${signedPercent(actual / limit - 1)} vs limit)` };
}

export function atMost(goal: string, actual: number, limit: number, format: (value: number) => string): Target {
  return { goal, met: actual <= limit, margin: `${format(actual)} (${signedPercent(actual / limit - 1)} vs limit)` };
}

function signedPercent(fraction: number): string {
  const percent = Math.round(fraction * 100);
  return `${percent >= 0 ? '+' : ''}${percent} %`;
}

export function formatValue(value: number, unit: Unit): string {
  if (!Number.isFinite(value)) return 'n/a';
  switch (unit) {
    case 'req/s':
      return `${Math.round(value).toLocaleString('en-US')} req/s`;
    case 'ms':
      return `${value < 10 ? value.toFixed(3) : value.toFixed(1)} ms`;
    case 'µs':
      return `${Math.round(value).toLocaleString('en-US')} µs`;
    case 'MB/s':
      return `${value.toFixed(0)} MB/s`;
    case 'MB':
      return `${value.toFixed(1)} MB`;
    case 'B':
      return `${Math.round(value).toLocaleString('en-US')} B`;
    case 'count':
      return Math.round(value).toLocaleString('en-US');
  }
}

export function renderTable(results: readonly ScenarioResult[]): string {
  const header = ['scenario', 'measure', 'median', 'p99', 'vs baseline (same run)', 'target', 'result'];
  const lines: string[][] = [header];
  for (const result of results) {
    for (const row of result.rows) {
      lines.push([
        result.scenario,
        row.measure,
        formatValue(row.value, row.unit),
        row.p99Ms === undefined ? '' : formatValue(row.p99Ms, 'ms'),
        row.baseline === undefined ? '' : `${row.baseline.ratio.toFixed(2)}× ${row.baseline.label} (${formatValue(row.baseline.value, row.unit)})`,
        row.target?.goal ?? '',
        row.target === undefined ? '' : `${row.target.met ? 'met' : 'MISSED'}: ${row.target.margin}`,
      ]);
    }
  }
  const widths = header.map((_, column) => Math.max(...lines.map((line) => (line[column] ?? '').length)));
  const render = (line: string[]) => `| ${line.map((cell, column) => cell.padEnd(widths[column] ?? 0)).join(' | ')} |`;
  const rule = `|${widths.map((width) => '-'.repeat(width + 2)).join('|')}|`;
  const notes = results.flatMap((result) => [
    ...result.notes.map((note) => `- ${result.scenario}: ${note}`),
    ...summariseProblems(result.problems).map((problem) => `- ${result.scenario}: PROBLEM: ${problem}`),
  ]);
  return [render(lines[0] as string[]), rule, ...lines.slice(1).map(render), ...(notes.length === 0 ? [] : ['', 'Notes:', ...notes])].join('\n');
}

/**
 * Writes bench/results/<stamp>-<name>.json and bench/results/latest-<name>.json; a smoke run only
 * bench/results/smoke-<name>.json (it runs with every `npm test`). Returns the path written first.
 */
export function writeResults(name: string, settings: BenchSettings, results: readonly ScenarioResult[], startedAt: Date, extra: Record<string, unknown> = {}): string {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const document = {
    name,
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model, memoryBytes: totalmem(), node: process.version, platform: process.platform },
    settings,
    results,
    ...extra,
  };
  const text = `${JSON.stringify(document, null, 2)}\n`;
  if (settings.mode === 'smoke') {
    const path = join(RESULTS_DIR, `smoke-${name}.json`);
    writeFileSync(path, text);
    return path;
  }
  const path = join(RESULTS_DIR, `${startedAt.toISOString().replace(/[:.]/g, '-')}-${name}.json`);
  writeFileSync(path, text);
  writeFileSync(join(RESULTS_DIR, `latest-${name}.json`), text);
  return path;
}

/** Identical problems once, with a count, and at most a few kinds. */
function summariseProblems(problems: readonly string[]): string[] {
  const counts = new Map<string, number>();
  for (const problem of problems) counts.set(problem, (counts.get(problem) ?? 0) + 1);
  const lines = [...counts].map(([problem, count]) => (count === 1 ? problem : `${problem} (×${count})`));
  return lines.length <= 5 ? lines : [...lines.slice(0, 5), `… ${lines.length - 5} more kinds`];
}

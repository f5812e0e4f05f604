import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { formatValue, type ResultRow, type ScenarioResult, type Unit } from './report.js';

/**
 * `npm run bench -- --report` (issue 19): one self-contained HTML page — inline SVG, inline CSS, no script, no
 * external asset — with the charts of a results document, and each chart as an SVG file the bench README embeds.
 * Charts: per scenario and unit, one bar per measure (median over rounds, each round a dot, the p99 as a whisker for
 * latencies, the baseline of the same run as a hollow bar) with the issue's target drawn as a red line; and memory
 * over session count for the memory & scale scenario.
 */

export interface ResultsDocument {
  readonly startedAt: string;
  readonly machine?: { readonly cpus?: number; readonly cpuModel?: string; readonly node?: string };
  readonly settings?: { readonly mode?: string; readonly rounds?: number };
  readonly results: readonly ScenarioResult[];
  readonly loadAverage?: Readonly<Record<string, { readonly before: number; readonly after: number }>>;
}

export interface Chart {
  /** File name stem: `<scenario>-<what>`. */
  readonly id: string;
  readonly title: string;
  readonly svg: string;
}

const WIDTH = 760;
const LABEL_WIDTH = 290;
const BAR_HEIGHT = 18;
const ROW_GAP = 10;
const COLOURS = { proxy: '#2f6fb3', nginx: '#3d9a50', direct: '#8a8a8a', other: '#7a5aa8', target: '#d1352b', baseline: '#444' };

export function chartsOf(document: ResultsDocument): Chart[] {
  const charts: Chart[] = [];
  for (const result of document.results) {
    const load = document.loadAverage?.[scenarioKey(result.scenario)];
    const loadNote = load === undefined ? '' : ` — load average ${load.before.toFixed(1)} → ${load.after.toFixed(1)} on ${document.machine?.cpus ?? '?'} CPUs`;
    const byUnit = new Map<Unit, ResultRow[]>();
    for (const row of result.rows) byUnit.set(row.unit, [...(byUnit.get(row.unit) ?? []), row]);
    for (const [unit, rows] of byUnit) {
      const title = `${result.scenario}: ${unitTitle(unit)}${loadNote}`;
      charts.push({ id: `${slug(result.scenario)}-${slug(unitTitle(unit))}`, title, svg: barChart(title, rows, unit) });
    }
    if (result.scenario === 'memory & scale') charts.push(...memoryCharts(result, loadNote));
  }
  return charts;
}

export function renderHtml(document: ResultsDocument, charts: readonly Chart[]): string {
  const loads = Object.entries(document.loadAverage ?? {}).map(([name, value]) => `${name} ${value.before.toFixed(1)}/${value.after.toFixed(1)}`).join(', ');
  const tables = document.results.map((result) => `<h2>${escape(result.scenario)}</h2>\n${charts.filter((chart) => chart.id.startsWith(`${slug(result.scenario)}-`)).map((chart) => `<figure>${chart.svg}</figure>`).join('\n')}\n${rowsTable(result)}${notesList(result)}`);
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>matrix-compat-proxy benchmarks ${escape(document.startedAt)}</title>
<style>body{font:14px/1.4 system-ui,sans-serif;max-width:820px;margin:2em auto;color:#222}table{border-collapse:collapse;font-size:12px;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}figure{margin:0 0 1em}.missed{color:#d1352b;font-weight:600}.met{color:#3d9a50}</style>
</head><body>
<h1>matrix-compat-proxy benchmarks</h1>
<p>Run ${escape(document.startedAt)}, ${escape(document.settings?.mode ?? '')} mode, ${document.settings?.rounds ?? '?'} round(s), ${escape(document.machine?.node ?? '')} on ${document.machine?.cpus ?? '?'} × ${escape(document.machine?.cpuModel ?? '')}.
Machine load average (1 min) before/after each scenario: ${escape(loads || 'not recorded')}. Throughput and latency move with that load; ratios are against baselines measured in the same minutes.
Red lines are the targets of issues 8 and 19.</p>
${tables.join('\n')}
</body></html>
`;
}

/** Writes the page and, when `chartsDir` is given, every chart as `<id>.svg` there. Returns the page's path. */
export function writeReport(document: ResultsDocument, htmlPath: string, chartsDir?: string): string {
  const charts = chartsOf(document);
  writeFileSync(htmlPath, renderHtml(document, charts));
  if (chartsDir !== undefined) {
    mkdirSync(chartsDir, { recursive: true });
    for (const chart of charts) writeFileSync(join(chartsDir, `${chart.id}.svg`), `${chart.svg}\n`);
  }
  return htmlPath;
}

function barChart(title: string, rows: readonly ResultRow[], unit: Unit): string {
  const targets = rows.map(targetLine);
  const values = rows.flatMap((row, index) => [row.value, ...(row.rounds ?? []), row.p99Ms !== undefined && unit === 'ms' ? row.p99Ms : 0, row.baseline?.value ?? 0, targets[index] ?? 0]);
  const max = niceMax(Math.max(...values.filter(Number.isFinite), 1e-9));
  const plotWidth = WIDTH - LABEL_WIDTH - 20;
  const x = (value: number) => LABEL_WIDTH + (Math.max(0, value) / max) * plotWidth;
  const rowHeight = BAR_HEIGHT + ROW_GAP;
  const top = 34;
  const height = top + rows.length * rowHeight + 40;
  const parts: string[] = [];
  parts.push(`<text x="8" y="18" font-size="13" font-weight="600">${escape(title)}</text>`);
  for (const tick of ticks(max)) {
    parts.push(`<line x1="${x(tick).toFixed(1)}" y1="${top - 4}" x2="${x(tick).toFixed(1)}" y2="${height - 34}" stroke="#e4e4e4"/>`);
    parts.push(`<text x="${x(tick).toFixed(1)}" y="${height - 20}" font-size="10" text-anchor="middle" fill="#555">${escape(shortValue(tick, unit))}</text>`);
  }
  rows.forEach((row, index) => {
    const y = top + index * rowHeight;
    const colour = colourOf(row.measure);
    parts.push(`<text x="${LABEL_WIDTH - 6}" y="${y + BAR_HEIGHT - 5}" font-size="11" text-anchor="end">${escape(truncate(row.measure, 46))}</text>`);
    if (row.baseline !== undefined && row.baseline.ratio !== 1 && Number.isFinite(row.baseline.value)) {
      parts.push(`<rect x="${LABEL_WIDTH}" y="${y + 1}" width="${(x(row.baseline.value) - LABEL_WIDTH).toFixed(1)}" height="${BAR_HEIGHT - 2}" fill="none" stroke="${COLOURS.baseline}" stroke-dasharray="3 2"><title>${escape(`baseline ${row.baseline.label}: ${formatValue(row.baseline.value, unit)}`)}</title></rect>`);
    }
    parts.push(`<rect x="${LABEL_WIDTH}" y="${y + 4}" width="${(x(row.value) - LABEL_WIDTH).toFixed(1)}" height="${BAR_HEIGHT - 8}" fill="${colour}"><title>${escape(`${row.measure}: ${formatValue(row.value, unit)}`)}</title></rect>`);
    if (unit === 'ms' && row.p99Ms !== undefined) {
      parts.push(`<line x1="${x(row.value).toFixed(1)}" y1="${y + BAR_HEIGHT / 2}" x2="${x(row.p99Ms).toFixed(1)}" y2="${y + BAR_HEIGHT / 2}" stroke="${colour}" stroke-width="1.5"/>`);
      parts.push(`<line x1="${x(row.p99Ms).toFixed(1)}" y1="${y + 3}" x2="${x(row.p99Ms).toFixed(1)}" y2="${y + BAR_HEIGHT - 3}" stroke="${colour}" stroke-width="1.5"><title>p99 ${escape(formatValue(row.p99Ms, 'ms'))}</title></line>`);
    }
    for (const round of row.rounds ?? []) parts.push(`<circle cx="${x(round).toFixed(1)}" cy="${y + BAR_HEIGHT / 2}" r="2.4" fill="#fff" stroke="#222" stroke-width="0.8"/>`);
    const target = targets[index];
    if (target !== undefined) {
      parts.push(`<line x1="${x(target).toFixed(1)}" y1="${y - 2}" x2="${x(target).toFixed(1)}" y2="${y + BAR_HEIGHT + 2}" stroke="${COLOURS.target}" stroke-width="2.5"><title>${escape(`target ${row.target?.goal ?? ''}`)}</title></line>`);
    }
    const label = `${shortValue(row.value, unit)}${row.target === undefined ? '' : row.target.met ? ' ✓' : ' ✗'}`;
    parts.push(`<text x="${Math.min(x(row.value) + 4, WIDTH - 60).toFixed(1)}" y="${y - 1}" font-size="9.5" fill="#333">${escape(label)}</text>`);
  });
  parts.push(`<text x="${LABEL_WIDTH}" y="${height - 6}" font-size="9.5" fill="#555">bar: median over rounds · dots: rounds${unit === 'ms' ? ' · whisker: p99' : ''} · dashed: baseline (same run) · red: target</text>`);
  return svg(WIDTH, height, parts);
}

function memoryCharts(result: ScenarioResult, loadNote: string): Chart[] {
  const d = result.details as Record<string, number | undefined>;
  const { total, small, emptyBytes, smallBytes, perSession, idleRss, smallRss, largeRss } = d;
  if (total === undefined || small === undefined || emptyBytes === undefined || smallBytes === undefined || perSession === undefined) return [];
  const charts: Chart[] = [];
  const bytesTitle = 'memory & scale: Redis bytes per session over session count (INFO used_memory)';
  charts.push({ id: 'memory-scale-redis-bytes-per-session', title: bytesTitle, svg: lineChart(bytesTitle, [[0, 0], [small, (smallBytes - emptyBytes) / small], [total, perSession]].slice(1) as [number, number][], 'B', 1024, '≤ 1 KB') });
  if (idleRss !== undefined && smallRss !== undefined && largeRss !== undefined) {
    const rssTitle = `memory & scale: proxy RSS over session count (MB)${loadNote}`;
    charts.push({ id: 'memory-scale-proxy-rss', title: rssTitle, svg: lineChart(rssTitle, [[0, idleRss / 1e6], [small, smallRss / 1e6], [total, largeRss / 1e6]], 'MB', 150, '≤ 150 MB') });
  }
  return charts;
}

function lineChart(title: string, points: readonly [number, number][], unit: Unit, target: number, targetLabel: string): string {
  const height = 240;
  const left = 70;
  const right = WIDTH - 30;
  const top = 34;
  const bottom = height - 40;
  const maxX = Math.max(...points.map(([px]) => px), 1);
  const maxY = niceMax(Math.max(target * 1.15, ...points.map(([, py]) => py)));
  const x = (value: number) => left + (value / maxX) * (right - left);
  const y = (value: number) => bottom - (value / maxY) * (bottom - top);
  const parts: string[] = [`<text x="8" y="18" font-size="13" font-weight="600">${escape(title)}</text>`];
  for (const tick of ticks(maxY)) {
    parts.push(`<line x1="${left}" y1="${y(tick).toFixed(1)}" x2="${right}" y2="${y(tick).toFixed(1)}" stroke="#e4e4e4"/>`);
    parts.push(`<text x="${left - 6}" y="${(y(tick) + 3).toFixed(1)}" font-size="10" text-anchor="end" fill="#555">${escape(shortValue(tick, unit))}</text>`);
  }
  for (const [px] of points) parts.push(`<text x="${x(px).toFixed(1)}" y="${bottom + 16}" font-size="10" text-anchor="middle" fill="#555">${px.toLocaleString('en-US')}</text>`);
  parts.push(`<text x="${(left + right) / 2}" y="${height - 6}" font-size="10" text-anchor="middle" fill="#555">sessions in the store</text>`);
  parts.push(`<line x1="${left}" y1="${y(target).toFixed(1)}" x2="${right}" y2="${y(target).toFixed(1)}" stroke="${COLOURS.target}" stroke-width="2"/>`);
  parts.push(`<text x="${right}" y="${(y(target) - 4).toFixed(1)}" font-size="10" text-anchor="end" fill="${COLOURS.target}">target ${escape(targetLabel)}</text>`);
  parts.push(`<polyline fill="none" stroke="${COLOURS.proxy}" stroke-width="2" points="${points.map(([px, py]) => `${x(px).toFixed(1)},${y(py).toFixed(1)}`).join(' ')}"/>`);
  for (const [px, py] of points) {
    parts.push(`<circle cx="${x(px).toFixed(1)}" cy="${y(py).toFixed(1)}" r="3.5" fill="${COLOURS.proxy}"/>`);
    parts.push(`<text x="${(x(px) + 5).toFixed(1)}" y="${(y(py) - 6).toFixed(1)}" font-size="10">${escape(shortValue(py, unit))}</text>`);
  }
  return svg(WIDTH, height, parts);
}

/**
 * The target as a value on the row's axis, from the goal text of issues 8 and 19: "≥ 0.5× nginx" is a factor of the
 * row's baseline, "added median ≤ 0.5 ms" is the baseline plus that, "≤ 1 KB (1,024 B)" is the number in brackets.
 */
function targetLine(row: ResultRow): number | undefined {
  const goal = row.target?.goal;
  if (goal === undefined) return undefined;
  const number = (text: string) => Number(text.replace(/,/g, ''));
  const factor = /([\d.]+)\s*×/.exec(goal);
  if (factor !== null && row.baseline !== undefined) return number(factor[1] ?? '') * row.baseline.value;
  const bracket = /\(([\d.,]+)\s*[A-Za-z/]*\)/.exec(goal);
  const first = /([\d.,]*\d)/.exec(goal);
  const value = number((bracket ?? first)?.[1] ?? 'NaN');
  if (!Number.isFinite(value)) return undefined;
  if (/added|over|\+/.test(goal) && row.baseline !== undefined) return row.baseline.value + value;
  return value;
}

function rowsTable(result: ScenarioResult): string {
  const lines = result.rows.map((row) => {
    const target = row.target === undefined ? '' : `<span class="${row.target.met ? 'met' : 'missed'}">${escape(row.target.goal)}: ${row.target.met ? 'met' : 'missed'} (${escape(row.target.margin)})</span>`;
    return `<tr><td>${escape(row.measure)}</td><td>${escape(formatValue(row.value, row.unit))}</td><td>${row.p99Ms === undefined ? '' : escape(formatValue(row.p99Ms, 'ms'))}</td><td>${row.baseline === undefined ? '' : escape(`${ratioText(row.baseline.ratio)}× ${row.baseline.label}`)}</td><td>${target}</td></tr>`;
  });
  return `<table><tr><th>measure</th><th>median</th><th>p99</th><th>vs baseline</th><th>target</th></tr>${lines.join('')}</table>`;
}

/** JSON turns a ratio over a zero baseline (a smoke run) into null. */
function ratioText(ratio: number | null): string {
  return typeof ratio === 'number' && Number.isFinite(ratio) ? ratio.toFixed(2) : 'n/a';
}

function notesList(result: ScenarioResult): string {
  const items = [...result.notes.map(escape), ...result.problems.map((problem) => `<span class="missed">PROBLEM: ${escape(problem)}</span>`)];
  return items.length === 0 ? '' : `<ul>${items.map((item) => `<li>${item}</li>`).join('')}</ul>`;
}

function svg(width: number, height: number, parts: readonly string[]): string {
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="system-ui,sans-serif"><rect width="100%" height="100%" fill="#fff"/>${parts.join('')}</svg>`;
}

function colourOf(measure: string): string {
  const lower = measure.toLowerCase();
  if (lower.startsWith('proxy') || lower.includes('through the proxy') || lower.includes('proxy ')) return COLOURS.proxy;
  if (lower.startsWith('nginx') || lower.includes('nginx')) return COLOURS.nginx;
  if (lower.startsWith('direct') || lower.includes('direct')) return COLOURS.direct;
  return COLOURS.other;
}

function niceMax(value: number): number {
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (step * magnitude >= value) return step * magnitude;
  return 10 * magnitude;
}

function ticks(max: number): number[] {
  return [0, 0.25, 0.5, 0.75, 1].map((fraction) => fraction * max);
}

function shortValue(value: number, unit: Unit): string {
  if (unit === 'req/s') return value >= 1000 ? `${(value / 1000).toFixed(value >= 10_000 ? 0 : 1)}k/s` : `${Math.round(value)}/s`;
  if (unit === 'ms') return value >= 100 ? `${Math.round(value)} ms` : value >= 10 ? `${value.toFixed(1)} ms` : `${value.toFixed(2)} ms`;
  if (unit === 'µs') return `${Math.round(value).toLocaleString('en-US')} µs`;
  if (unit === 'B') return `${Math.round(value).toLocaleString('en-US')} B`;
  if (unit === 'MB' || unit === 'MB/s') return `${value.toFixed(value >= 100 ? 0 : 1)} ${unit}`;
  return Math.round(value).toLocaleString('en-US');
}

function unitTitle(unit: Unit): string {
  return { 'req/s': 'throughput', ms: 'latency', µs: 'CPU per request', 'MB/s': 'transfer rate', MB: 'memory', B: 'bytes', count: 'counts' }[unit];
}

/** run-all keys the load average by the scenario's command-line name; results carry its display name. */
function scenarioKey(scenario: string): string {
  return { 'large bodies': 'large-bodies', 'memory & scale': 'memory-scale' }[scenario] ?? scenario;
}

function slug(text: string): string {
  return text.toLowerCase().replace(/&/g, '').replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');
}

function truncate(text: string, length: number): string {
  return text.length <= length ? text : `${text.slice(0, length - 1)}…`;
}

function escape(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

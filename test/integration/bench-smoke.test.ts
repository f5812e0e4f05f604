import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/**
 * `npm run bench -- --smoke`: every benchmark scenario for a moment, against the real stack (proxy processes, Redis,
 * nginx, the in-process OP, the homeserver double). No figure is judged; what must hold is that every scenario ran
 * and saw only right answers (active introspections, 200 logins, 302 callbacks, whole transfers, a session usable
 * across two replicas), so a change that breaks a measured path fails here.
 */

const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
const SCENARIOS = ['pass-through', 'large bodies', 'introspection', 'login', 'memory & scale', 'horizontal', 'profile'];

/** A bench script run to its end as `node --import tsx <args>` from the repository: exit code and whole output. */
async function runBenchScript(args: readonly string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', ...args], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  return { code, stdout, stderr };
}

interface SmokeResults {
  readonly settings: { readonly mode: string };
  readonly results: readonly { readonly scenario: string; readonly rows: readonly { readonly value: number }[]; readonly problems: readonly string[] }[];
}

// About 75 s alone; minutes when other work loads the machine. A hang still fails.
test('the benchmark smoke run measures every scenario and sees only right answers', { timeout: 360_000 }, async () => {
  const { code, stdout, stderr } = await runBenchScript(['bench/run-all.ts', '--smoke', '--report']);
  assert.equal(code, 0, `run-all --smoke failed:\n${stderr.slice(-4000)}`);

  const resultsPath = /^results: (.+\.json)$/m.exec(stdout)?.[1];
  assert.ok(resultsPath, `no results file named in:\n${stdout.slice(-2000)}`);
  const document = JSON.parse(readFileSync(resultsPath, 'utf8')) as SmokeResults;
  assert.equal(document.settings.mode, 'smoke');
  assert.deepEqual(
    document.results.map((result) => result.scenario),
    SCENARIOS,
  );
  for (const result of document.results) {
    assert.deepEqual(result.problems, [], `${result.scenario} saw wrong answers`);
    assert.ok(result.rows.length > 0, `${result.scenario} measured nothing`);
    for (const row of result.rows) assert.ok(Number.isFinite(row.value), `${result.scenario}: a figure is not a number`);
  }
  for (const scenario of SCENARIOS) assert.ok(stdout.includes(`| ${scenario}`), `the table has no ${scenario} rows`);

  // --report: one self-contained page (issue 19) with a chart per scenario and nothing fetched from elsewhere.
  const reportPath = /^report: (\S+\.html)/m.exec(stdout)?.[1];
  assert.ok(reportPath, `no report named in:\n${stdout.slice(-2000)}`);
  const page = readFileSync(reportPath, 'utf8');
  for (const scenario of SCENARIOS) assert.ok(page.includes(`<h2>${scenario.replace('&', '&amp;')}</h2>`), `no section for ${scenario}`);
  assert.ok((page.match(/<svg /g) ?? []).length >= SCENARIOS.length, 'a chart per scenario');
  assert.doesNotMatch(page, /<(script|link|img)\b|\b(src|href)=|url\(/i, 'no script and no external asset');
  assert.match(page, /stroke="#d1352b"/, 'targets drawn as lines');
});

// bench/introspection-tail.ts (issue 19, not part of run-all): its traced open loop, the probe preloaded into the
// proxy and every figure it derives, for a moment; it exits non-zero when an answer was not a 2xx.
test('the introspection tail probe runs against the bare server and the proxy and reports its figures', { timeout: 180_000 }, async () => {
  const { code, stdout, stderr } = await runBenchScript(['bench/introspection-tail.ts', '--smoke']);
  assert.equal(code, 0, `introspection-tail --smoke failed:\n${stderr.slice(-4000)}`);
  for (const target of ['bare node', 'this']) {
    const line = new RegExp(`^${target} +p99 ([\\d.]+) ms .*alloc ([\\d.]+) KiB/req; cpu (\\d+) µs/req; generator send lag p99 ([\\d.]+) ms \\[.*\\], cpu ([\\d.]+) µs/req$`, 'm').exec(stdout);
    assert.ok(line, `no summary for ${target} in:\n${stdout.slice(-2000)}`);
    // The generator's send lag may round to 0.00 ms (harness/paced-sender.ts); every other figure is positive.
    const [p99, alloc, cpu, sendLag, generatorCpu] = line.slice(1).map(Number);
    assert.ok([p99, alloc, cpu, generatorCpu].every((value) => Number.isFinite(value) && (value as number) > 0) && Number.isFinite(sendLag) && (sendLag as number) >= 0, `${target}: ${line[0]}`);
  }
  assert.match(stderr, /tail: round 1\/1 this .* scav\/10k [\d.]+ .* eld p99 [\d.]+/, 'the proxy reported its collections and event-loop delay');
});

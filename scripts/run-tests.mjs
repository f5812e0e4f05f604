#!/usr/bin/env node
// Runs a test suite with node's built-in test runner (through tsx for TypeScript), on whatever `node` is on PATH.
//   fast    (default, `npm test`): unit, contract and integration tests — real Redis, real OP, real HTTP
//   interop (`npm run test:interop`): real Synapse and Keycloak
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { spawn } from 'node:child_process';

const suites = { fast: ['test/unit', 'test/contract', 'test/integration'], interop: ['test/interop'] };
const suite = process.argv[2] ?? 'fast';
const dirs = suites[suite];
if (!dirs) {
  console.error(`unknown suite ${suite}; one of ${Object.keys(suites).join(', ')}`);
  process.exit(2);
}

function findTests(dir) {
  let found = [];
  let entries = [];
  try {
    entries = readdirSync(dir);
  } catch {
    return found;
  }
  for (const name of entries) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) found = found.concat(findTests(path));
    else if (name.endsWith('.test.ts')) found.push(relative(process.cwd(), path));
  }
  return found.sort();
}

const files = dirs.flatMap(findTests);
if (files.length === 0) {
  console.error(`no test files found for suite ${suite}`);
  process.exit(1);
}
console.log(`node ${process.version}: ${files.length} test files (${suite})`);
const concurrency = suite === 'interop' ? 1 : Math.max(1, Number(process.env.TEST_CONCURRENCY ?? 2));
// A file that stalls (a socket that never answers, a port taken by a concurrent run between choosing and listening)
// would otherwise hold the run until CI's own limit kills it without naming the file — and node's own
// --test-timeout does not end a file's process on every Node version. So each file runs in its own test-runner
// process with a bound well above its slowest honest run (bench smoke ≈ 6 min on a loaded machine; an interop file
// that starts Synapse and Keycloak ≈ 10 min), and is killed (its whole process group) past it.
const fileTimeoutMs = Number(process.env.TEST_FILE_TIMEOUT_MS ?? (suite === 'interop' ? 30 : 12) * 60_000);

const started = Date.now();
const first = await runAll(files, concurrency);
let failed = first.filter((r) => r.outcome === 'failed').map((r) => r.file);
const stalled = first.filter((r) => r.outcome === 'stalled').map((r) => r.file);
let totals = sum(first);
if (failed.length === 0 && stalled.length > 0 && stalled.length <= 2) {
  // Only files that hit the bound failed: run those alone once more, so a stall caused by the concurrent run is
  // told apart from one in the file itself (which stalls again and fails the run). The stall stays in the log.
  console.log(`\n${stalled.length} test file(s) stalled past ${fileTimeoutMs / 1000} s and nothing else failed; running them alone once more`);
  const second = await runAll(stalled, 1);
  failed = second.filter((r) => r.outcome !== 'passed').map((r) => r.file);
  totals = sum([...first.filter((r) => r.outcome !== 'stalled'), ...second]);
} else {
  failed = [...failed, ...stalled];
}
console.log(
  `\n${suite}: ${files.length} files, ${totals.tests} tests, ${totals.pass} passed, ${totals.fail} failed, ` +
    `${totals.skipped} skipped, ${Math.round((Date.now() - started) / 1000)} s`,
);
for (const r of first.filter((x) => x.outcome === 'stalled')) console.log(`  STALLED (killed after ${fileTimeoutMs / 1000} s): ${r.file}`);
for (const file of failed) console.log(`  FAILED: ${file}`);
process.exit(failed.length === 0 && totals.tests > 0 ? 0 : 1);

async function runAll(list, parallel) {
  const results = [];
  let next = 0;
  async function worker() {
    while (next < list.length) {
      const file = list[next];
      next += 1;
      results.push(await runFile(file));
    }
  }
  await Promise.all(Array.from({ length: Math.min(parallel, list.length) }, worker));
  return results;
}

/**
 * One file in its own process (its own process group, so a stall is killed with its children). The file runs its
 * node:test tests itself rather than under `node --test`, whose reporter holds a file's results until the file ends:
 * this way each test is printed as it finishes, and a stalled file's output names the last test that finished.
 */
function runFile(file) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', '--test-reporter=spec', file], {
      env: process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    const chunks = [];
    child.stdout.on('data', (c) => chunks.push(c));
    child.stderr.on('data', (c) => chunks.push(c));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    }, fileTimeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      // Output is printed whole when the file ends, so parallel files never interleave.
      const output = Buffer.concat(chunks).toString('utf8');
      process.stdout.write(`\n=== ${file}\n${output}`);
      const count = (name) => Number(new RegExp(`^ℹ ${name} (\\d+)$`, 'm').exec(output)?.[1] ?? 0);
      const outcome = timedOut ? 'stalled' : code === 0 ? 'passed' : 'failed';
      resolve({ file, outcome, tests: count('tests'), pass: count('pass'), fail: count('fail'), skipped: count('skipped') });
    });
  });
}

function sum(results) {
  const total = { tests: 0, pass: 0, fail: 0, skipped: 0 };
  for (const r of results) for (const key of Object.keys(total)) total[key] += r[key];
  return total;
}

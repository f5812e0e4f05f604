import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';

/**
 * main.ts bounds V8's old-generation growth (boundHeapGrowth, --heap-growing-percent) because the proxy's RSS is
 * mostly garbage promoted out of the young generation and waiting for the next full collection. Read back from V8
 * itself: with --trace-gc-verbose each full collection prints the growing factor it used for the next limit
 * (Node 20: "Limit: … (1.5)"; Node 24: "factor 1.5 based on …").
 */

const WORKLOAD = `
(await import('./src/main.ts')).boundHeapGrowth();
const kept = [];
for (let i = 0; i < 500_000; i++) kept.push({ i });
globalThis.gc();
process.stdout.write(String(kept.length));
`;

/** This process's environment without NODE_TEST_CONTEXT: the child is a plain node process, not a test file. */
function plainEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env['NODE_TEST_CONTEXT'];
  return env;
}

/**
 * The growing factor of the last full collection in a fresh process: the workload's explicit gc(), after the bound
 * (the collections while tsx and main.ts load ran with V8's own factor). V8 prints with C stdio, so only the order
 * of its own lines is kept, not where they fall among the process's other output.
 */
function lastGrowingFactor(nodeFlags: readonly string[] = []): number {
  const run = spawnSync(process.execPath, ['--trace-gc-verbose', '--expose-gc', ...nodeFlags, '--import', 'tsx', '--input-type=module', '-e', WORKLOAD], {
    env: plainEnv(),
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
  });
  assert.equal(run.status, 0, run.stderr);
  const factors = [...run.stdout.matchAll(/\[HeapController\] (?:Limit: .*\((\d+\.\d)\)|factor (\d+\.\d) based on)/g)].map((match) => Number(match[1] ?? match[2]));
  assert.ok(factors.length > 0, 'V8 printed its heap growing factor');
  return factors.at(-1)!;
}

test('the proxy process grows its old generation by 1.5× (HEAP_GROWING_PERCENT) at each full collection', () => {
  assert.equal(lastGrowingFactor(), 1.5);
});

test("an operator's own --heap-growing-percent wins over the proxy's", () => {
  assert.equal(lastGrowingFactor(['--heap-growing-percent=300']), 4);
});

#!/usr/bin/env node
// Runs a test suite with node's built-in test runner (through tsx for TypeScript), on whatever `node` is on PATH.
//   fast    (default, `npm test`): unit, contract and integration tests — real Redis, real OP, real HTTP
//   interop (`npm run test:interop`): real Synapse and Keycloak
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { spawnSync } from 'node:child_process';

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
const concurrency = suite === 'interop' ? '1' : String(Number(process.env.TEST_CONCURRENCY ?? 2));
const result = spawnSync(
  process.execPath,
  ['--import', 'tsx', '--test', `--test-concurrency=${concurrency}`, '--test-reporter=spec', ...files],
  { stdio: 'inherit', env: process.env },
);
process.exit(result.status ?? 1);

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { interopSkipReason } from '../support/interop-stack.js';

// scripts/install-synapse.sh as CI and developers run it, on a cache folder of its own: two runs at once used to leave
// a virtualenv without pip behind, and every later run failed with "No module named pip" (issue 18).

const SCRIPT = fileURLToPath(new URL('../../scripts/install-synapse.sh', import.meta.url));

function run(cache: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn('bash', [SCRIPT], { env: { ...process.env, MCP_CACHE: cache }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

test('two runs at once on a half-made virtualenv (no pip): both succeed, one rebuilds it, the venv works', { skip: interopSkipReason(), timeout: 600_000 }, async () => {
  const cache = await mkdtemp(join(tmpdir(), 'mcp-install-synapse-'));
  try {
    // The state the race left behind: a venv whose bin/python exists but which never got pip.
    const made = spawnSync(process.env['PYTHON'] ?? 'python3', ['-m', 'venv', '--without-pip', join(cache, 'synapse-venv')], { encoding: 'utf8' });
    assert.equal(made.status, 0, made.stderr);
    const python = join(cache, 'synapse-venv', 'bin', 'python');
    assert.notEqual(spawnSync(python, ['-m', 'pip', '--version']).status, 0, 'the starting venv has no pip');

    const started = performance.now();
    const [first, second] = await Promise.all([run(cache), run(cache)]);
    console.log(`two concurrent installs into an empty cache: ${Math.round(performance.now() - started)} ms`);
    for (const result of [first, second]) {
      assert.equal(result.code, 0, `install-synapse.sh failed:\n${result.stderr}`);
      assert.match(result.stdout, /^\d+\.\d+\.\d+\n$/, 'prints the installed version');
    }
    assert.equal(first.stdout, second.stdout);
    const rebuilt = [first, second].filter((result) => /rebuilding .* no working pip/.test(result.stderr));
    assert.equal(rebuilt.length, 1, 'one run rebuilt the venv; the other waited for the lock and found it ready');

    assert.equal(spawnSync(python, ['-m', 'pip', '--version']).status, 0, 'pip works in the rebuilt venv');
    const imports = spawnSync(python, ['-c', 'import synapse, psycopg2; print(synapse.__version__)'], { encoding: 'utf8' });
    assert.equal(imports.status, 0, imports.stderr);
    assert.equal(imports.stdout, first.stdout);

    const again = await run(cache);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(again.stderr, '', 'a third run installs nothing');
  } finally {
    await rm(cache, { recursive: true, force: true });
  }
});

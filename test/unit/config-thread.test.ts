import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { ConfigError as ConfigErrorOfItsOwn } from '../../src/config/config-error.js';
import { loadConfigInThread, parseConfigInThread } from '../../src/config/config-thread.js';
import { ConfigError, loadConfig, parseConfig } from '../../src/config/load-config.js';

/**
 * The configuration is checked in a worker thread (src/config/config-thread.ts) so that the validation layer does
 * not stay loaded in a serving proxy: the same Config, the same problems, and nothing of that layer imported by
 * what the proxy runs.
 */

const repo = fileURLToPath(new URL('../../', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'mcp-config-thread-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const REGISTRATION = 'id: bridge\nurl: null\nas_token: as-token-0123\nhs_token: hs-token-0123\nsender_localpart: bridgebot\nnamespaces:\n  users:\n    - { exclusive: true, regex: "@bridge_.*:example\\\\.org" }\n';

function fullConfig(): Record<string, unknown> {
  writeFileSync(join(dir, 'bridge.yaml'), REGISTRATION);
  writeFileSync(join(dir, 'client-secret'), 'a-client-secret-from-a-file\n');
  return {
    server_name: 'example.org',
    public_baseurl: 'https://matrix.example.org/',
    homeserver: { url: 'http://127.0.0.1:8008', secret: '${HS_SECRET}', previous_secrets: [{ secret: 'an-older-homeserver-secret' }] },
    sessions: { encryption_key: 'encryption-key-0123456789abcdef0123456789', previous_encryption_keys: [{ key: 'previous-key-0123456789abcdef0123456789' }] },
    oidc_providers: [
      {
        idp_id: 'op',
        issuer: 'https://op.example.org/',
        client_id: 'proxy',
        client_secret_path: 'client-secret',
        password_grant: { enabled: true },
        user_mapping_provider: { config: { localpart_template: '{{ user.preferred_username }}', display_name_template: '{{ user.name }}' } },
      },
    ],
    password_login: { enabled: true, idp_id: 'op' },
    appservice_config_files: ['bridge.yaml'],
    trusted_proxies: ['10.0.0.0/8'],
    workers: 2,
    store: { redis_url: 'redis://127.0.0.1:6379/0' },
  };
}

const ENV = { HS_SECRET: 'homeserver-secret-0123456789' };

describe('the configuration checked in a worker thread', () => {
  test('loadConfigInThread answers what loadConfig answers, deep-frozen', async () => {
    const path = join(dir, 'config.yaml');
    writeFileSync(path, stringify(fullConfig()));
    const inProcess = loadConfig(path, ENV);
    const inThread = await loadConfigInThread(path, ENV);
    assert.deepEqual(inThread, inProcess);
    assert.equal(inThread.oidc_providers[0]?.client_secret, 'a-client-secret-from-a-file');
    assert.equal(inThread.homeserver.secret, ENV.HS_SECRET);
    assert.ok(Object.isFrozen(inThread) && Object.isFrozen(inThread.oidc_providers) && Object.isFrozen(inThread.oidc_providers[0]) && Object.isFrozen(inThread.homeserver.previous_secrets[0]));
  });

  test('parseConfigInThread: the same Config, relative files from baseDir, variables from env', async () => {
    const text = stringify(fullConfig());
    assert.deepEqual(await parseConfigInThread(text, { env: ENV, baseDir: dir }), parseConfig(text, { env: ENV, baseDir: dir }));
  });

  test('a refused configuration: a ConfigError with the same lines', async () => {
    const broken = { ...fullConfig(), server_name: 'example org', homeserver: { url: 'ftp://x' } };
    const text = stringify(broken);
    let expected: readonly string[] = [];
    try {
      parseConfig(text, { env: ENV, baseDir: dir });
    } catch (err: unknown) {
      assert.ok(err instanceof ConfigError);
      expected = err.problems;
    }
    assert.ok(expected.length >= 2);
    await assert.rejects(parseConfigInThread(text, { env: ENV, baseDir: dir }), (err: unknown) => {
      assert.ok(err instanceof ConfigErrorOfItsOwn && err instanceof ConfigError);
      assert.deepEqual(err.problems, expected);
      return true;
    });
    await assert.rejects(loadConfigInThread(join(dir, 'missing.yaml'), ENV), (err: unknown) => err instanceof ConfigError && /cannot read the configuration file/.test(err.problems[0] ?? ''));
  });

  test('a node started with V8 flags (docs/production.md, "Memory") still starts: the worker takes none of them', () => {
    const path = join(dir, 'flags.yaml');
    writeFileSync(path, stringify(fullConfig()));
    const run = spawnSync(process.execPath, ['--heap-growing-percent=50', '--max-semi-space-size=4', '--import', 'tsx', 'test/support/run-cli.ts', '--config', path, '--check-config'], {
      cwd: repo,
      env: { ...process.env, ...ENV },
      encoding: 'utf8',
    });
    assert.equal(run.stderr, '');
    assert.equal(run.status, 0);
    assert.match(run.stdout, /is valid/);
  });

  test('a module preloaded through NODE_OPTIONS (an APM agent) runs in the process only, and a handle it keeps does not hold up the start', () => {
    const path = join(dir, 'preload.yaml');
    writeFileSync(path, stringify(fullConfig()));
    // What an agent does at load: announce itself, keep a timer (or a socket to its collector) for the life of the process.
    const preload = join(dir, 'agent.cjs');
    // (Run from source, tsx's module hooks have a thread of their own, which loads it too: not the config thread.)
    writeFileSync(
      preload,
      "const { isMainThread, workerData } = require('node:worker_threads');\n" +
        "process._rawDebug(`agent started in ${isMainThread ? 'the main thread' : workerData?.loader === undefined ? 'another thread' : 'the config thread'}`);\n" +
        'setInterval(() => {}, 60_000);\n',
    );
    const run = spawnSync(process.execPath, ['--import', 'tsx', 'test/support/run-cli.ts', '--config', path, '--check-config'], {
      cwd: repo,
      env: { ...process.env, ...ENV, NODE_OPTIONS: `--require ${preload}` },
      encoding: 'utf8',
      timeout: 30_000,
    });
    assert.equal(run.signal, null, `--check-config did not end (killed by ${run.signal}):\n${run.stderr}`);
    assert.match(run.stderr, /^agent started in the main thread$/m);
    assert.doesNotMatch(run.stderr, /config thread/);
    assert.equal(run.status, 0);
    assert.match(run.stdout, /is valid/);
  });

  test('parseConfigInThread without env substitutes from process.env, NODE_OPTIONS included, as parseConfig does', async () => {
    const text = stringify({ ...fullConfig(), well_known_client: { extra: { options: '${NODE_OPTIONS}' } } });
    const variables = { ...ENV, NODE_OPTIONS: '--max-semi-space-size=4' };
    const saved = Object.keys(variables).map((name) => [name, process.env[name]] as const);
    Object.assign(process.env, variables);
    try {
      const config = await parseConfigInThread(text, { baseDir: dir });
      assert.deepEqual(config, parseConfig(text, { baseDir: dir }));
      assert.equal(config.well_known_client.extra['options'], '--max-semi-space-size=4');
    } finally {
      for (const [name, value] of saved) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
    }
  });
});

/**
 * What a serving proxy loads: main.ts and what runProxy imports, followed through every import that is not
 * type-only (dynamic imports included: what they load is loaded when they run), except the CLIs' own and the
 * thread's loader. None of it may reach the validation layer.
 */
test('a serving proxy imports neither zod nor the YAML parser nor the config loader and schema', () => {
  const src = resolve(repo, 'src');
  const OFF_PATH = new Set(['admin/admin-cli.ts', 'migrate/migrate-cli.ts', 'doctor/doctor-cli.ts']);
  const FORBIDDEN_FILES = new Set(['config/load-config.ts', 'config/schema.ts', 'config/format-issues.ts', 'config/file-references.ts', 'config/appservice-registrations.ts']);
  const FORBIDDEN_PACKAGES = new Set(['zod', 'yaml']);
  const seen = new Set<string>();
  const reached: string[] = [];
  const visit = (file: string, via: string) => {
    const name = relative(src, file);
    if (seen.has(name) || OFF_PATH.has(name)) return;
    seen.add(name);
    const text = readFileSync(file, 'utf8');
    // `import x from`, `import { a, type B } from`, `export ... from`, `import('...')`; not `import type`.
    for (const match of text.matchAll(/(?:^|\n)\s*(import|export)(?!\s+type\s)[^'"]*?from\s*'([^']+)'|import\(\s*'([^']+)'\s*\)/g)) {
      const target = match[2] ?? match[3] ?? '';
      if (!target.startsWith('.')) {
        if (FORBIDDEN_PACKAGES.has(target.split('/')[0] ?? '')) reached.push(`${target} (imported by src/${name}, via ${via})`);
        continue;
      }
      const path = resolve(dirname(file), target.replace(/\.js$/, '.ts'));
      const targetName = relative(src, path);
      // The appservice registrations' reader is loaded by a config that names registration files only.
      if (targetName === 'config/appservice-registrations.ts' && match[3] !== undefined) continue;
      if (FORBIDDEN_FILES.has(targetName)) reached.push(`src/${targetName} (imported by src/${name}, via ${via})`);
      else if (statSync(path, { throwIfNoEntry: false })?.isFile() === true) visit(path, `${via} > ${targetName}`);
    }
  };
  visit(join(src, 'main.ts'), 'main.ts');
  assert.ok(seen.has('server.ts') && seen.has('routes.ts') && seen.has('build-deps.ts') && seen.has('config/config-thread.ts'), `the walk missed the proxy: ${[...seen].join(', ')}`);
  assert.deepEqual(reached, []);
  // The walk is only as good as its pattern: it must have followed the handlers' imports (about 150 files).
  assert.ok(seen.size > 100, `the walk reached only ${seen.size} files`);
});

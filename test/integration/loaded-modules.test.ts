import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { freePort } from '../support/free-port.js';

/**
 * The OAuth server for native clients (oidc-provider: about 180 modules, some 12 MB of the proxy's resident memory)
 * is loaded only when `native_clients: serve` turns it on (build-deps.ts imports it then). Checked on the real CLI
 * (test/support/run-cli.ts, as bin/ runs it): a module hook registered before the proxy starts lists every ES
 * module the process loads.
 */

// Appends the URL of every ES module the process loads to the file in MCP_LOADED_MODULES_FILE.
const RECORDER = `data:text/javascript,${encodeURIComponent(`
import { register } from 'node:module';
register('data:text/javascript,' + encodeURIComponent(\`
import { appendFileSync } from 'node:fs';
export async function load(url, context, next) {
  appendFileSync(process.env.MCP_LOADED_MODULES_FILE, url + '\\\\n');
  return next(url, context);
}
\`));
`)}`;

async function modulesLoadedBy(extra: Record<string, unknown>): Promise<string[]> {
  const dir = await mkdtemp(join(tmpdir(), 'mcp-modules-'));
  const port = await freePort();
  const config = {
    server_name: 'example.test',
    public_baseurl: `http://127.0.0.1:${port}/`,
    listen: { host: '127.0.0.1', port },
    homeserver: { url: 'http://127.0.0.1:8008', secret: 'a-homeserver-secret-of-enough-length' },
    sessions: { encryption_key: 'an-encryption-key-for-module-tests-0123456789' },
    log: { level: 'info' },
    ...extra,
  };
  const configPath = join(dir, 'config.yaml');
  const listPath = join(dir, 'modules.txt');
  await writeFile(configPath, stringify(config));
  await writeFile(listPath, '');
  const child = spawn(process.execPath, ['--import', RECORDER, '--import', 'tsx', 'test/support/run-cli.ts', '--config', configPath], {
    env: { ...process.env, MCP_LOADED_MODULES_FILE: listPath },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  try {
    const deadline = Date.now() + 30_000;
    while (!output.includes('proxy.started')) {
      if (Date.now() > deadline || child.exitCode !== null) throw new Error(`proxy did not start:\n${output}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  } finally {
    child.kill('SIGTERM');
    await exited;
  }
  return (await readFile(listPath, 'utf8')).split('\n').filter((line) => line !== '');
}

const fromOidcProvider = (urls: readonly string[]) => urls.filter((url) => url.includes('/node_modules/oidc-provider/'));

test('native_clients: hide (the default) — the proxy runs without loading oidc-provider', async () => {
  const urls = await modulesLoadedBy({});
  assert.ok(urls.some((url) => url.endsWith('/src/build-deps.ts')), 'the hook saw the proxy load its modules');
  assert.deepEqual(fromOidcProvider(urls), []);
});

test('native_clients: serve — oidc-provider is loaded, and the OAuth server starts', async () => {
  const signingKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
  const urls = await modulesLoadedBy({
    native_clients: 'serve',
    oauth_server: { signing_key: signingKey },
    // Never contacted: the OP's discovery is fetched at the first sign-in, and this proxy only starts.
    oidc_providers: [{ idp_id: 'op', issuer: 'https://op.example.test/', client_id: 'proxy', client_secret: 'a-client-secret', user_mapping_provider: { config: { localpart_template: '{{ user.preferred_username }}' } } }],
  });
  assert.ok(fromOidcProvider(urls).length > 0);
});

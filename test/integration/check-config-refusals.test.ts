// Issue 11: `--check-config` refuses every config that start-up refuses, with the key path. Each row is one config
// start-up cannot run with; the real CLI process is run twice on it, once with --check-config and once as a start,
// and both must exit 1 with the same problem lines (never a stack trace, never "valid", never a running proxy).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';

const CLI = ['--import', 'tsx', 'test/support/run-cli.ts'];
/** A start that was not refused is a running proxy: it is stopped when it logs proxy.started, or after this long. */
const DEADLINE_MS = 90_000;

function registration(id: string, asToken: string, userRegex = '@bridge_.*:example\\.test'): string {
  return stringify({ id, url: null, as_token: asToken, hs_token: `hs-${id}`, sender_localpart: `${id}bot`, namespaces: { users: [{ exclusive: true, regex: userRegex }] } });
}

/** Every listener on port 0: a row that wrongly starts does not collide with anything. */
function validConfig(): Record<string, any> {
  return {
    server_name: 'example.test',
    public_baseurl: 'https://matrix.example.test/',
    listen: { host: '127.0.0.1', port: 0 },
    homeserver: { url: 'http://127.0.0.1:8008', secret: 'a-homeserver-secret-of-enough-length' },
    sessions: { encryption_key: 'an-encryption-key-for-cli-tests-0123456789' },
    metrics: { enabled: true, listen: { host: '127.0.0.1', port: 0 } },
    oidc_providers: [
      {
        idp_id: 'op',
        issuer: 'https://op.example.test/realms/matrix',
        client_id: 'proxy',
        client_secret: 'client-secret',
        password_grant: { enabled: true },
        user_mapping_provider: { config: { localpart_template: '{{ user.preferred_username }}', email_template: '{{ user.email | localpart_from_email }}' } },
      },
    ],
    password_login: { enabled: true, idp_id: 'op' },
    appservice_config_files: ['bridge.yaml'],
    log: { level: 'info' },
  };
}

interface Refusal {
  readonly name: string;
  readonly edit: (config: Record<string, any>) => void;
  /** Files next to the config, written before the run (bridge.yaml is always written valid first). */
  readonly files?: Readonly<Record<string, string>>;
  /** Exactly the key paths of the problem lines. */
  readonly paths: readonly string[];
  readonly says: RegExp;
}

const op = (config: Record<string, any>) => config['oidc_providers'][0];

const REFUSALS: readonly Refusal[] = [
  // Thrown by the OP provider constructor (src/oidc/openid-provider.ts) before the config layer knew the rule.
  { name: 'plain-http issuer', edit: (c) => (op(c).issuer = 'http://op.example.test/realms/matrix'), paths: ['oidc_providers[0].issuer'], says: /plain http/ },
  {
    name: 'plain-http token endpoint of an https issuer (openid-client refuses it at the first login)',
    edit: (c) => (op(c).token_endpoint = 'http://op.example.test/token'),
    paths: ['oidc_providers[0].token_endpoint'],
    says: /plain http while the issuer is https/,
  },
  { name: 'private_key_jwt without client_secret_jwt_key', edit: (c) => (op(c).client_auth_method = 'private_key_jwt'), paths: ['oidc_providers[0].client_auth_method'], says: /client_secret_jwt_key/ },
  {
    name: 'a client_secret method without a secret',
    edit: (c) => Object.assign(op(c), { client_auth_method: 'client_secret_post', client_secret: undefined }),
    paths: ['oidc_providers[0].client_auth_method'],
    says: /needs client_secret/,
  },
  // Thrown by create-upstream-providers.ts.
  {
    name: 'duplicate idp_id',
    edit: (c) => c['oidc_providers'].push({ idp_id: 'op', issuer: 'https://other.example.test/', client_id: 'x' }),
    paths: ['oidc_providers[1].idp_id'],
    says: /duplicate idp_id/,
  },
  // A 500 at the first password login (src/compat/login.ts) if it got through.
  { name: 'password_login.idp_id naming no provider', edit: (c) => (c['password_login'].idp_id = 'keycloak'), paths: ['password_login.idp_id'], says: /no provider/ },
  // Thrown by compileUserMapper in build-deps.ts; checked by main.ts outside the loader before.
  {
    name: 'a template that does not compile',
    edit: (c) => (op(c).user_mapping_provider.config.localpart_template = '{{ user.preferred_username '),
    paths: ['oidc_providers[0].user_mapping_provider.config.localpart_template'],
    says: /does not compile/,
  },
  // Compiles in nunjucks, fails at every login; Jinja refuses it when compiling.
  {
    name: 'a template naming an unknown filter',
    edit: (c) => (op(c).user_mapping_provider.config.display_name_template = '{{ user.name | titlecase }}'),
    paths: ['oidc_providers[0].user_mapping_provider.config.display_name_template'],
    says: /no filter named "titlecase"/,
  },
  // Thrown by AppserviceRegistry.load in build-deps.ts.
  { name: 'appservice registration file missing', edit: (c) => (c['appservice_config_files'] = ['absent.yaml']), paths: ['appservice_config_files[0]'], says: /no such file/ },
  {
    name: 'appservice registration without as_token',
    edit: () => undefined,
    files: { 'bridge.yaml': 'id: bridge\nurl: null\nhs_token: h\nsender_localpart: bridgebot\nnamespaces: {}\n' },
    paths: ['appservice_config_files[0]'],
    says: /as_token is required/,
  },
  {
    name: 'appservice namespace regex that does not compile',
    edit: () => undefined,
    files: { 'bridge.yaml': registration('bridge', 'as-token-1', '@bridge_(.*:example\\.test') },
    paths: ['appservice_config_files[0]'],
    says: /namespaces\.users\[0\]\.regex/,
  },
  {
    name: 'two appservices with one as_token (Synapse refuses it)',
    edit: (c) => c['appservice_config_files'].push('other.yaml'),
    files: { 'other.yaml': registration('other', 'as-token-of-the-bridge') },
    paths: ['appservice_config_files[1]'],
    says: /as_token is already the as_token of/,
  },
  // Thrown by trustedProxies() when the app is built.
  { name: 'trusted proxy that is not a CIDR', edit: (c) => (c['trusted_proxies'] = ['proxy.local']), paths: ['trusted_proxies[0]'], says: /CIDR/ },
  // EADDRINUSE from the second listen() if it got through.
  {
    name: 'two listeners on one port',
    edit: (c) => Object.assign(c, { listen: { host: '127.0.0.1', port: 18009 }, metrics: { listen: { host: '0.0.0.0', port: 18009 } } }),
    paths: ['metrics.listen.port'],
    says: /already used by listen/,
  },
  { name: 'secret file missing', edit: (c) => (c['homeserver'] = { url: 'http://127.0.0.1:8008', secret_path: 'absent-secret' }), paths: ['homeserver.secret_path'], says: /no such file/ },
];

interface Run {
  readonly status: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

function runCli(args: readonly string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      if (stdout.includes('proxy.started')) child.kill('SIGKILL');
    });
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), DEADLINE_MS);
    child.once('error', reject);
    child.once('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

/** The problem lines of a refusal: "  key.path: message" under the "is invalid:" header. */
function problemLines(run: Run): string[] {
  return run.stderr
    .split('\n')
    .filter((line) => line.startsWith('  '))
    .map((line) => line.trim());
}

const pathOf = (line: string) => line.slice(0, line.indexOf(': '));

/** Runs a few rows at a time: each row is two Node processes and the machine is shared. */
async function inBatches<T>(items: readonly T[], size: number, run: (item: T) => Promise<void>): Promise<void> {
  for (let start = 0; start < items.length; start += size) await Promise.all(items.slice(start, start + size).map(run));
}

describe('--check-config refuses every config start-up refuses', () => {
  let root: string;

  async function writeCase(name: string, config: Record<string, any>, files: Readonly<Record<string, string>> = {}): Promise<string> {
    const dir = await mkdtemp(join(root, `${name.replace(/[^a-z0-9]+/gi, '-').slice(0, 40)}-`));
    await writeFile(join(dir, 'bridge.yaml'), registration('bridge', 'as-token-of-the-bridge'));
    for (const [file, text] of Object.entries(files)) await writeFile(join(dir, file), text);
    const path = join(dir, 'config.yaml');
    await writeFile(path, stringify(config));
    return path;
  }

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'mcp-refusals-'));
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  test('the base config of the table is valid', async () => {
    const run = await runCli(['--config', await writeCase('valid', validConfig()), '--check-config']);
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /is valid/);
  });

  test(`${REFUSALS.length} refusals: --check-config and a start both exit 1 with the same key paths, no stack trace`, async () => {
    await inBatches(REFUSALS, 3, async (row) => {
      const config = validConfig();
      row.edit(config);
      const path = await writeCase(row.name, config, row.files);
      const [check, start] = await Promise.all([runCli(['--config', path, '--check-config']), runCli(['--config', path])]);

      assert.equal(check.status, 1, `${row.name}: --check-config exited ${check.status}\n${check.stdout}${check.stderr}`);
      const lines = problemLines(check);
      assert.deepEqual([...new Set(lines.map(pathOf))].sort(), [...row.paths].sort(), `${row.name}: got\n${lines.join('\n')}`);
      assert.match(lines[0] ?? '', row.says, row.name);

      assert.equal(start.status, 1, `${row.name}: the start exited ${start.status}\n${start.stdout}${start.stderr}`);
      assert.equal(start.stderr, check.stderr, `${row.name}: a start must refuse with the same lines`);
      assert.doesNotMatch(start.stderr, /^\s+at /m, `${row.name}: a stack trace`);
      assert.doesNotMatch(start.stdout, /proxy\.started/, row.name);
    });
  });

  test('every refusal of one config is listed at once, sections in order', async () => {
    const config = validConfig();
    op(config).issuer = 'http://op.example.test/';
    op(config).user_mapping_provider.config.localpart_template = '{% if %}';
    config['appservice_config_files'] = ['absent.yaml'];
    config['password_login'].idp_id = 'keycloak';
    const run = await runCli(['--config', await writeCase('all-at-once', config), '--check-config']);
    assert.equal(run.status, 1);
    const paths = problemLines(run).map(pathOf);
    // Sections in example.yaml's order; within a section, field problems before cross-field ones.
    assert.deepEqual(paths, [
      'oidc_providers[0].user_mapping_provider.config.localpart_template',
      'oidc_providers[0].issuer',
      'password_login.idp_id',
      'appservice_config_files[0]',
    ]);
  });

  test('loopback plain http, or skip_verification, is accepted as start-up accepts it', async () => {
    const config = validConfig();
    op(config).issuer = 'http://127.0.0.1:8080/realms/matrix';
    config['oidc_providers'].push({ idp_id: 'lab', issuer: 'http://op.lab.test/', client_id: 'x', skip_verification: true });
    const run = await runCli(['--config', await writeCase('loopback', config), '--check-config']);
    assert.equal(run.status, 0, run.stderr);
  });
});

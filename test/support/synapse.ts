import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { freePort } from './free-port.js';

export interface StartSynapseOptions {
  /**
   * Where Synapse reaches the auth service (`matrix_authentication_service.endpoint`); absent: no delegated auth —
   * Synapse's own password and SSO logins (the state before a migration, issue 14).
   */
  readonly masEndpoint?: string | undefined;
  /** The shared secret (`matrix_authentication_service.secret`). */
  readonly masSecret?: string;
  readonly serverName?: string;
  /** Merged over the generated homeserver.yaml (top-level keys replace). */
  readonly extraConfig?: Readonly<Record<string, unknown>>;
  /**
   * A folder to keep across starts (database, signing key, media): stop() then leaves it in place, and a second start
   * on it finds the same homeserver (migration tests switch one Synapse's auth mode). Default: a temp folder removed
   * by stop().
   */
  readonly dataDir?: string;
}

export interface RunningSynapse {
  /** Client-API base URL, e.g. http://127.0.0.1:12345 (no trailing slash). */
  readonly url: string;
  readonly serverName: string;
  /** The matrix-synapse version that runs. */
  readonly version: string;
  /** Wall time from spawn to the first healthy answer. */
  readonly startupMs: number;
  stop(): Promise<void>;
  /** Everything Synapse logged so far (the last ~1 MiB). */
  logs(): string;
}

/** Thrown when no Synapse virtualenv exists; the message says how to get one. */
export class SynapseMissingError extends Error {
  override readonly name = 'SynapseMissingError';
}

const STARTUP_TIMEOUT_MS = 90_000;
const STOP_GRACE_MS = 10_000;
const LOG_LIMIT = 1024 * 1024;
const running = new Set<ChildProcess>();

// A crashed or interrupted test run must not leave homeservers behind.
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/** The cache folder scripts/install-synapse.sh and scripts/install-keycloak.sh install into. */
export function interopCacheDir(): string {
  return process.env['MCP_CACHE'] ?? join(homedir(), '.cache', 'matrix-compat-proxy');
}

/** The Python of the Synapse virtualenv (SYNAPSE_PYTHON overrides), or a SynapseMissingError saying how to install. */
export function synapsePython(): string {
  const python = process.env['SYNAPSE_PYTHON'] ?? join(interopCacheDir(), 'synapse-venv', 'bin', 'python');
  if (!existsSync(python)) {
    throw new SynapseMissingError(
      `Synapse is not installed (no ${python}). Run scripts/install-synapse.sh, ` +
        'or set MCP_SKIP_INTEROP=1 to skip the interop suite explicitly.',
    );
  }
  return python;
}

/**
 * A real Synapse on a free loopback port with delegated auth (`matrix_authentication_service`) pointing at
 * `masEndpoint`, SQLite and a generated config in a temp dir removed by stop().
 *
 * Synapse does not contact the auth service at start-up (checked by the interop suite): it fetches
 * `{endpoint}/.well-known/openid-configuration` lazily, on the first /_matrix/client/v1/auth_metadata,
 * /.well-known/matrix/client or UIA redirect, and keeps it for the process lifetime (a failed fetch answers 500 and
 * is retried next time); it introspects each access token on first use and keeps every well-formed answer, inactive
 * ones included, for 2 minutes. So the auth service may come up after Synapse, and a metadata change needs a
 * Synapse restart.
 */
export async function startSynapse(options: StartSynapseOptions): Promise<RunningSynapse> {
  const python = synapsePython();
  let lastError: unknown;
  // The free port is found by binding and releasing it; another process may take it in between, so retry.
  for (let attempt = 0; attempt < 3; attempt += 1) {
    try {
      return await spawnSynapse(python, options);
    } catch (error) {
      lastError = error;
      if (!(error instanceof PortTakenError)) throw error;
    }
  }
  throw lastError;
}

class PortTakenError extends Error {}

async function spawnSynapse(python: string, options: StartSynapseOptions): Promise<RunningSynapse> {
  const serverName = options.serverName ?? 'example.test';
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const dir = options.dataDir ?? (await mkdtemp(join(tmpdir(), 'mcp-synapse-')));
  await mkdir(join(dir, 'media'), { recursive: true });
  if (!existsSync(join(dir, 'signing.key'))) await writeFile(join(dir, 'signing.key'), `${synapseSigningKey()}\n`, { mode: 0o600 });
  await writeFile(join(dir, 'log.yaml'), stringify(logConfig()));
  const secrets = await dataDirSecrets(dir);
  const config = { ...homeserverConfig({ dir, port, url, serverName, secrets, ...options }), ...options.extraConfig };
  await writeFile(join(dir, 'homeserver.yaml'), stringify(config), { mode: 0o600 });

  const started = performance.now();
  const child = spawn(python, ['-m', 'synapse.app.homeserver', '--config-path', join(dir, 'homeserver.yaml')], {
    cwd: dir,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: childEnv(),
  });
  running.add(child);
  let output = '';
  const collect = (chunk: Buffer) => {
    output += chunk.toString();
    if (output.length > LOG_LIMIT) output = output.slice(-LOG_LIMIT);
  };
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));

  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
      await exited;
      clearTimeout(timer);
    }
    running.delete(child);
    if (options.dataDir === undefined) await rm(dir, { recursive: true, force: true });
  };

  try {
    await Promise.race([
      waitUntilHealthy(url),
      exited.then((code) => {
        const tail = output.split('\n').slice(-40).join('\n');
        const error = /Address already in use/.test(output) ? PortTakenError : Error;
        throw new error(`Synapse exited with code ${code} before it was healthy; last log lines:\n${tail}`);
      }),
    ]);
  } catch (error) {
    await stop();
    throw error;
  }
  const startupMs = Math.round(performance.now() - started);
  const version = await serverVersion(url);
  return { url, serverName, version, startupMs, stop, logs: () => output };
}

interface ConfigInputs extends StartSynapseOptions {
  readonly secrets: { readonly macaroon: string; readonly form: string };
  readonly dir: string;
  readonly port: number;
  readonly url: string;
  readonly serverName: string;
}

function homeserverConfig(inputs: ConfigInputs): Record<string, unknown> {
  const { dir, port, url, serverName } = inputs;
  const relaxed = { per_second: 1000, burst_count: 1000 };
  return {
    server_name: serverName,
    public_baseurl: `${url}/`,
    pid_file: join(dir, 'homeserver.pid'),
    report_stats: false,
    listeners: [
      {
        port,
        bind_addresses: ['127.0.0.1'],
        type: 'http',
        tls: false,
        x_forwarded: false,
        // No federation resource: the suite never federates, and nothing should listen for it.
        resources: [{ names: ['client'], compress: false }],
      },
    ],
    database: { name: 'sqlite3', args: { database: join(dir, 'homeserver.db') } },
    log_config: join(dir, 'log.yaml'),
    media_store_path: join(dir, 'media'),
    signing_key_path: join(dir, 'signing.key'),
    // Kept per data folder: a restart on the same folder must accept the tokens it issued before.
    macaroon_secret_key: inputs.secrets.macaroon,
    form_secret: inputs.secrets.form,
    // Keep the test server off the network: no key servers, no outbound federation, no phone-home.
    trusted_key_servers: [],
    suppress_key_server_warning: true,
    federation_domain_whitelist: [],
    federation_sender_instances: [],
    enable_metrics: false,
    url_preview_enabled: false,
    ...(inputs.masEndpoint === undefined ? {} : { matrix_authentication_service: { enabled: true, endpoint: inputs.masEndpoint, secret: inputs.masSecret } }),
    // Tests fire requests in bursts that Synapse's defaults would throttle with 429s.
    rc_message: relaxed,
    rc_registration: relaxed,
    rc_joins: { local: relaxed, remote: relaxed },
    rc_joins_per_room: relaxed,
    rc_invites: { per_room: relaxed, per_user: relaxed, per_issuer: relaxed },
    rc_3pid_validation: relaxed,
    rc_presence: { per_user: relaxed },
    rc_room_creation: relaxed,
    rc_delayed_event_mgmt: relaxed,
    rc_media_create: relaxed,
    rc_profile: relaxed,
    rc_key_requests: relaxed,
    rc_admin_redaction: relaxed,
    // Without delegated auth Synapse rate-limits logins itself (appservice logins with rate_limited: false are exempt).
    rc_login: { address: relaxed, account: relaxed, failed_attempts: relaxed },
  };
}

function logConfig(): Record<string, unknown> {
  return {
    version: 1,
    formatters: { precise: { format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s' } },
    handlers: { console: { class: 'logging.StreamHandler', formatter: 'precise' } },
    loggers: { 'synapse.storage.SQL': { level: 'WARNING' }, twisted: { level: 'WARNING' } },
    root: { level: process.env['SYNAPSE_LOG_LEVEL'] ?? 'INFO', handlers: ['console'] },
    disable_existing_loggers: false,
  };
}

/** Synapse's signing key file format: `ed25519 <key id> <unpadded base64 of the 32-byte seed>`. */
function synapseSigningKey(): string {
  const { privateKey } = generateKeyPairSync('ed25519');
  // An Ed25519 PKCS#8 DER ends with the 32-byte seed.
  const seed = privateKey.export({ format: 'der', type: 'pkcs8' }).subarray(-32);
  return `ed25519 a_${randomBytes(3).toString('hex')} ${seed.toString('base64').replace(/=+$/, '')}`;
}

function childEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  // Synapse's metadata client honours proxy variables; the auth service is on loopback and must be reached directly.
  for (const name of ['http_proxy', 'HTTP_PROXY', 'https_proxy', 'HTTPS_PROXY', 'all_proxy', 'ALL_PROXY']) delete env[name];
  env['no_proxy'] = env['NO_PROXY'] = '127.0.0.1,localhost,::1';
  return env;
}

async function waitUntilHealthy(url: string): Promise<void> {
  const deadline = performance.now() + STARTUP_TIMEOUT_MS;
  for (;;) {
    try {
      const response = await fetch(`${url}/health`, { signal: AbortSignal.timeout(2_000) });
      if (response.ok) return;
    } catch {
      // not listening yet
    }
    if (performance.now() > deadline) throw new Error(`Synapse did not answer ${url}/health within ${STARTUP_TIMEOUT_MS} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function serverVersion(url: string): Promise<string> {
  // The Server header of any response says e.g. "Synapse/1.163.2".
  const response = await fetch(`${url}/health`);
  await response.body?.cancel();
  const header = response.headers.get('server') ?? '';
  return /Synapse\/(\S+)/.exec(header)?.[1] ?? 'unknown';
}

async function dataDirSecrets(dir: string): Promise<{ macaroon: string; form: string }> {
  const path = join(dir, 'secrets.json');
  if (existsSync(path)) return JSON.parse(await readFile(path, 'utf8')) as { macaroon: string; form: string };
  const secrets = { macaroon: randomBytes(32).toString('hex'), form: randomBytes(32).toString('hex') };
  await writeFile(path, JSON.stringify(secrets), { mode: 0o600 });
  return secrets;
}

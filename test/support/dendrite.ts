import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { freePort } from './free-port.js';
import { interopCacheDir } from './synapse.js';

export interface StartDendriteOptions {
  readonly serverName?: string;
  /** Appservice registration files (`app_service_api.config_files`). */
  readonly appserviceConfigFiles?: readonly string[];
  /** For `/_synapse/admin/v1/register` (Dendrite implements Synapse's shared-secret registration). */
  readonly registrationSharedSecret?: string;
}

export interface RunningDendrite {
  readonly url: string;
  readonly serverName: string;
  readonly version: string;
  readonly startupMs: number;
  stop(): Promise<void>;
  logs(): string;
}

export const DENDRITE_VERSION = process.env['DENDRITE_VERSION'] ?? 'v0.13.8';
const STARTUP_TIMEOUT_MS = 90_000;
const LOG_LIMIT = 1024 * 1024;
const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/** The binaries scripts/install-dendrite.sh builds, or an error saying how to get them. */
export function dendriteBinaries(): { dendrite: string; generateKeys: string } {
  const bin = join(interopCacheDir(), `dendrite-${DENDRITE_VERSION}`, 'bin');
  const dendrite = join(bin, 'dendrite');
  if (!existsSync(dendrite)) {
    throw new Error(`Dendrite is not installed (no ${dendrite}). Run scripts/install-dendrite.sh, or set MCP_SKIP_INTEROP=1 to skip the interop suite explicitly.`);
  }
  return { dendrite, generateKeys: join(bin, 'generate-keys') };
}

/**
 * A real Dendrite monolith on a free loopback port: SQLite per component, in-memory JetStream, no federation, no key
 * servers, rate limiting off (tests fire bursts), in a temp dir removed by stop().
 */
export async function startDendrite(options: StartDendriteOptions = {}): Promise<RunningDendrite> {
  const { dendrite, generateKeys } = dendriteBinaries();
  const serverName = options.serverName ?? 'example.test';
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const dir = await mkdtemp(join(tmpdir(), 'mcp-dendrite-'));
  await mkdir(join(dir, 'media'));
  const keys = spawnSync(generateKeys, ['--private-key', join(dir, 'matrix_key.pem')], { encoding: 'utf8' });
  if (keys.status !== 0) throw new Error(`generate-keys failed: ${keys.stderr}`);
  const database = (name: string) => ({ connection_string: `file:${join(dir, `dendrite_${name}.db`)}` });
  const config = {
    version: 2,
    global: {
      server_name: serverName,
      private_key: join(dir, 'matrix_key.pem'),
      key_validity_period: '168h0m0s',
      cache: { max_size_estimated: '64mb', max_age: '1h' },
      trusted_third_party_id_servers: [],
      disable_federation: true,
      presence: { enable_inbound: false, enable_outbound: false },
      report_stats: { enabled: false },
      jetstream: { in_memory: true, storage_path: dir, topic_prefix: 'Dendrite' },
      metrics: { enabled: false },
    },
    app_service_api: { disable_tls_validation: true, legacy_auth: false, legacy_paths: false, config_files: [...(options.appserviceConfigFiles ?? [])] },
    client_api: {
      registration_disabled: true,
      guests_disabled: true,
      registration_shared_secret: options.registrationSharedSecret ?? '',
      rate_limiting: { enabled: false, threshold: 20, cooloff_ms: 500 },
    },
    federation_api: { database: database('federationapi'), key_perspectives: [], prefer_direct_fetch: false },
    key_server: { database: database('keyserver') },
    media_api: { database: database('mediaapi'), base_path: join(dir, 'media'), max_file_size_bytes: 10485760 },
    mscs: { database: database('mscs'), mscs: [] },
    relay_api: { database: database('relayapi') },
    room_server: { database: database('roomserver') },
    sync_api: { database: database('syncapi'), search: { enabled: false, index_path: join(dir, 'searchindex'), language: 'en' } },
    user_api: { account_database: database('userapi'), bcrypt_cost: 4 },
    tracing: { enabled: false },
    logging: [{ type: 'std', level: process.env['DENDRITE_LOG_LEVEL'] ?? 'warn' }],
  };
  await writeFile(join(dir, 'dendrite.yaml'), stringify(config), { mode: 0o600 });

  const started = performance.now();
  const child = spawn(dendrite, ['-config', join(dir, 'dendrite.yaml'), '-http-bind-address', `127.0.0.1:${port}`], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
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
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    }
    running.delete(child);
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await Promise.race([
      waitUntilAnswering(url),
      exited.then((code) => {
        throw new Error(`Dendrite exited with code ${code} before it answered; last log lines:\n${output.split('\n').slice(-40).join('\n')}`);
      }),
    ]);
  } catch (error) {
    await stop();
    throw error;
  }
  const versions = await fetch(`${url}/_matrix/federation/v1/version`).then((r) => r.json() as Promise<{ server?: { version?: string } }>).catch(() => ({}) as { server?: { version?: string } });
  return { url, serverName, version: versions.server?.version ?? DENDRITE_VERSION, startupMs: Math.round(performance.now() - started), stop, logs: () => output };
}

async function waitUntilAnswering(url: string): Promise<void> {
  const deadline = performance.now() + STARTUP_TIMEOUT_MS;
  for (;;) {
    try {
      const response = await fetch(`${url}/_matrix/client/versions`, { signal: AbortSignal.timeout(2_000) });
      if (response.ok) return;
    } catch {
      // not listening yet
    }
    if (performance.now() > deadline) throw new Error(`Dendrite did not answer ${url}/_matrix/client/versions within ${STARTUP_TIMEOUT_MS} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** A random shared secret for tests. */
export const randomSecret = (): string => randomBytes(16).toString('hex');

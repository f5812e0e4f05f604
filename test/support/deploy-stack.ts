// The docker-compose demo run natively: the same docker-compose.yml service definitions and deploy/ files, with real
// PostgreSQL (Debian), Synapse (the cached venv), Redis, Keycloak (the cached distribution), the proxy started by the
// image's ENTRYPOINT + CMD, and nginx (Debian) — all on loopback, rewritten by test/support/compose-native.ts.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseDockerfile } from './dockerfile.js';
import { freePort } from './free-port.js';
import { DEPLOY_FILES, REPO_ROOT, readCompose, renderDeployFile, renderForNative, type NativePlaces } from './compose-native.js';
import { KEYCLOAK_BUILD_OPTIONS, javaHomeForKeycloak, keycloakHome, killGroup, waitForDiscovery } from './keycloak.js';
import { startRedis, type RunningRedis } from './redis-server.js';
import { synapsePython } from './synapse.js';

export type NginxLayout = 'full-proxy' | 'auth-routes-only';

export interface RunningNginx {
  readonly layout: NginxLayout;
  /** Access log lines so far (log_format "matrix": `... "<request line>" <status> ... upstream=<addr>`). */
  accessLog(): string[];
  stop(): Promise<void>;
}

export interface DeployStack {
  readonly places: NativePlaces;
  /** What clients use: nginx (public_baseurl). */
  readonly publicUrl: string;
  readonly proxyUrl: string;
  readonly synapseUrl: string;
  readonly keycloakUrl: string;
  readonly metricsUrl: string;
  /** The Dockerfile's HEALTHCHECK command and environment, as the image would run it. */
  readonly healthcheck: { command: string[]; env: Record<string, string> };
  readonly startupMs: Record<string, number>;
  /** nginx with one of the deploy/nginx layouts on the public port (one at a time). */
  startNginx(layout: NginxLayout): Promise<RunningNginx>;
  synapseLogs(): string;
  proxyLogs(): string;
  keycloakLogs(): string;
  stop(): Promise<void>;
}

const LOG_LIMIT = 2 * 1024 * 1024;
const STARTUP_TIMEOUT_MS = 180_000;
const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) {
    if (child.pid !== undefined) killGroup(child, 'SIGKILL');
  }
});

export async function startDeployStack(): Promise<DeployStack> {
  const compose = readCompose();
  const services = compose['services'] as Record<string, Record<string, any>>;
  const base = await mkdtemp(join(tmpdir(), 'mcp-deploy-'));
  const [nginxPort, proxyPort, proxyFacingPort, proxyMetricsPort, synapsePort, postgresPort, redisPort, keycloakPort, keycloakManagementPort] = await Promise.all(
    Array.from({ length: 9 }, () => freePort()),
  );
  const places: NativePlaces = {
    nginxPort: nginxPort as number,
    proxyPort: proxyPort as number,
    proxyFacingPort: proxyFacingPort as number,
    proxyMetricsPort: proxyMetricsPort as number,
    synapsePort: synapsePort as number,
    postgresPort: postgresPort as number,
    redisPort: redisPort as number,
    keycloakPort: keycloakPort as number,
    synapseDataDir: join(base, 'synapse-data'),
    synapseConfigDir: join(base, 'synapse-config'),
    nginxLogDir: join(base, 'nginx-logs'),
  };
  const startupMs: Record<string, number> = {};
  const timed = async <T>(name: string, start: () => Promise<T>): Promise<T> => {
    const started = performance.now();
    const value = await start();
    startupMs[name] = Math.round(performance.now() - started);
    return value;
  };

  const stops: (() => Promise<void>)[] = [];
  const stopAll = async () => {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
    stops.length = 0;
    await rm(base, { recursive: true, force: true });
  };
  let synapse: Service | undefined;
  let proxy: Service | undefined;
  let keycloak: Service | undefined;
  try {
    const [postgresResult, redisResult, keycloakResult] = await Promise.allSettled([
      timed('postgres', () => startPostgres(base, places.postgresPort, services['postgres'] ?? {})),
      timed('redis', () => startComposeRedis(places.redisPort, services['redis'] ?? {})),
      timed('keycloak', () => startComposeKeycloak(base, places, keycloakManagementPort as number, services['keycloak'] ?? {}, compose)),
    ]);
    for (const result of [postgresResult, redisResult, keycloakResult]) if (result.status === 'fulfilled') stops.push(() => result.value.stop());
    for (const result of [postgresResult, redisResult, keycloakResult]) if (result.status === 'rejected') throw result.reason;
    keycloak = (keycloakResult as PromiseFulfilledResult<Service>).value;

    const [synapseResult, proxyResult] = await Promise.allSettled([
      timed('synapse', () => startComposeSynapse(places, compose)),
      timed('proxy', () => startComposeProxy(base, places, compose)),
    ]);
    for (const result of [synapseResult, proxyResult]) if (result.status === 'fulfilled') stops.push(() => result.value.stop());
    for (const result of [synapseResult, proxyResult]) if (result.status === 'rejected') throw result.reason;
    synapse = (synapseResult as PromiseFulfilledResult<Service>).value;
    proxy = (proxyResult as PromiseFulfilledResult<Service>).value;
  } catch (error) {
    await stopAll();
    throw error;
  }

  const runtime = parseDockerfile(await readFile(join(REPO_ROOT, 'Dockerfile'), 'utf8')).stages.at(-1);
  const proxyService = services['proxy'] ?? {};
  const healthcheckEnv = renderForNative('docker-compose.yml#proxy.environment', JSON.stringify({ ...runtime?.env, ...proxyService['environment'] }), [
    ['http://127.0.0.1:8009', `http://127.0.0.1:${places.proxyPort}`],
  ]);
  let nginx: RunningNginx | undefined;
  return {
    places,
    publicUrl: `http://127.0.0.1:${places.nginxPort}`,
    proxyUrl: `http://127.0.0.1:${places.proxyPort}`,
    synapseUrl: `http://127.0.0.1:${places.synapsePort}`,
    keycloakUrl: `http://127.0.0.1:${places.keycloakPort}`,
    metricsUrl: `http://127.0.0.1:${places.proxyMetricsPort}/metrics`,
    healthcheck: { command: runtime?.healthcheck ?? [], env: JSON.parse(healthcheckEnv) as Record<string, string> },
    startupMs,
    async startNginx(layout) {
      await nginx?.stop();
      nginx = await startComposeNginx(base, places, layout);
      const current = nginx;
      stops.push(() => current.stop());
      return current;
    },
    synapseLogs: () => synapse?.logs() ?? '',
    proxyLogs: () => proxy?.logs() ?? '',
    keycloakLogs: () => keycloak?.logs() ?? '',
    stop: stopAll,
  };
}

export interface Service {
  logs(): string;
  stop(): Promise<void>;
}

// ------------------------------------------------------------------------------------------------------------ children

interface Child {
  readonly child: ChildProcess;
  logs(): string;
  readonly exited: Promise<number | null>;
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<void>;
}

/** A child in its own process group (so stop() reaches its children too), its output collected. */
function spawnChild(command: string, args: readonly string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; onOutput?: (chunk: string) => void } = {}): Child {
  const child = spawn(command, args, { cwd: options.cwd, env: options.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  running.add(child);
  let output = '';
  const collect = (chunk: Buffer) => {
    const text = chunk.toString();
    options.onOutput?.(text);
    output += text;
    if (output.length > LOG_LIMIT) output = output.slice(-LOG_LIMIT);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => resolve(code));
    child.once('error', (error) => {
      output += `\n${error.message}`;
      resolve(null);
    });
  });
  return {
    child,
    logs: () => output,
    exited,
    async stop(signal = 'SIGTERM', graceMs = 10_000) {
      if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
        killGroup(child, signal);
        const timer = setTimeout(() => killGroup(child, 'SIGKILL'), graceMs);
        await exited;
        clearTimeout(timer);
      }
      running.delete(child);
    },
  };
}

/** Resolves when `ready()` holds; rejects when the child exits first or the deadline passes. */
async function waitFor(name: string, child: Child, ready: () => Promise<boolean>, timeoutMs = STARTUP_TIMEOUT_MS): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  let exited = false;
  void child.exited.then(() => (exited = true));
  for (;;) {
    if (exited) throw new Error(`${name} exited with ${child.child.exitCode ?? child.child.signalCode} before it was ready; last output:\n${child.logs().slice(-4000)}`);
    if (await ready().catch(() => false)) return;
    if (performance.now() > deadline) throw new Error(`${name} was not ready within ${timeoutMs} ms; last output:\n${child.logs().slice(-4000)}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

const answersOk = async (url: string) => {
  const response = await fetch(url, { signal: AbortSignal.timeout(2_000) });
  await response.body?.cancel();
  return response.ok;
};

// ------------------------------------------------------------------------------------------------------------ postgres

/** Debian's PostgreSQL server binaries (the newest installed major version). */
function postgresBin(): string {
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root) ? readdirSync(root).filter((entry) => existsSync(join(root, entry, 'bin', 'initdb'))) : [];
  const newest = versions.sort((a, b) => Number(b) - Number(a))[0];
  if (newest === undefined) throw new Error('PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): apt-get install -y postgresql');
  return join(root, newest, 'bin');
}

/**
 * initdb refuses to run as root: as root, the server runs as Debian's `postgres` user (setpriv execs in place, so the
 * child is the server itself and signals reach it).
 */
function asPostgresUser(command: string, args: readonly string[]): [string, string[]] {
  if (process.getuid?.() !== 0) return [command, [...args]];
  return ['setpriv', ['--reuid=postgres', '--regid=postgres', '--init-groups', '--', command, ...args]];
}

/** The postgres service: the image's POSTGRES_USER/PASSWORD/DB/INITDB_ARGS applied to a fresh cluster, as its entrypoint does. */
export async function startPostgres(base: string, port: number, service: Record<string, any>): Promise<Service> {
  const env = service['environment'] as Record<string, string>;
  const bin = postgresBin();
  const dir = join(base, 'postgres');
  await mkdir(dir);
  await writeFile(join(dir, 'password'), `${env['POSTGRES_PASSWORD']}\n`);
  if (process.getuid?.() === 0) {
    const uid = Number(spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).stdout.trim());
    const gid = Number(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout.trim());
    if (!Number.isInteger(uid) || uid <= 0) throw new Error('no `postgres` system user (Debian creates it with the postgresql package)');
    // The server's user must reach its folder inside this run's (root-owned, 0700) temp folder.
    chmodSync(base, 0o711);
    chownSync(dir, uid, gid);
    chownSync(join(dir, 'password'), uid, gid);
  }
  const initdbArgs = (env['POSTGRES_INITDB_ARGS'] ?? '').split(/\s+/).filter((arg) => arg !== '');
  const [initCommand, initArgs] = asPostgresUser(join(bin, 'initdb'), ['-D', join(dir, 'data'), '-U', env['POSTGRES_USER'] ?? 'postgres', `--pwfile=${join(dir, 'password')}`, '--auth=scram-sha-256', ...initdbArgs]);
  const init = spawnSync(initCommand, initArgs, { encoding: 'utf8' });
  if (init.status !== 0) throw new Error(`initdb failed:\n${init.stdout}\n${init.stderr}`);

  const [command, args] = asPostgresUser(join(bin, 'postgres'), ['-D', join(dir, 'data'), '-p', String(port), '-c', 'listen_addresses=127.0.0.1', '-k', dir]);
  const server = spawnChild(command, args);
  const connectEnv = { ...process.env, PGPASSWORD: env['POSTGRES_PASSWORD'] };
  await waitFor('PostgreSQL', server, async () => spawnSync(join(bin, 'pg_isready'), ['-q', '-h', '127.0.0.1', '-p', String(port)]).status === 0);
  const created = spawnSync(join(bin, 'createdb'), ['-h', '127.0.0.1', '-p', String(port), '-U', env['POSTGRES_USER'] ?? 'postgres', env['POSTGRES_DB'] ?? 'postgres'], {
    encoding: 'utf8',
    env: connectEnv,
  });
  if (created.status !== 0) {
    await server.stop('SIGINT');
    throw new Error(`createdb failed:\n${created.stderr}`);
  }
  // SIGINT: PostgreSQL's "fast" shutdown.
  return { logs: server.logs, stop: () => server.stop('SIGINT') };
}

// --------------------------------------------------------------------------------------------------------------- redis

/** The redis service's command line, on a loopback port and a per-run folder (its later arguments win). */
async function startComposeRedis(port: number, service: Record<string, any>): Promise<Service> {
  const command = service['command'] as string[];
  if (command[0] !== 'redis-server') throw new Error(`unexpected redis command: ${command.join(' ')}`);
  const redis: RunningRedis = await startRedis({ ignoreEnv: true, port, extraArgs: command.slice(1) });
  return { logs: () => '', stop: () => redis.stop() };
}

// ------------------------------------------------------------------------------------------------------------ keycloak

/**
 * The keycloak service: its command and KC_* environment, the realm file mounted into data/import. Keycloak reads the
 * import folder from its home (kc.home.dir), so this run gets a home of its own whose data/ is per run and whose
 * program folders link to the cached distribution.
 */
async function startComposeKeycloak(base: string, places: NativePlaces, managementPort: number, service: Record<string, any>, compose: Record<string, any>): Promise<Service> {
  const distribution = keycloakHome();
  const javaHome = javaHomeForKeycloak();
  const home = join(base, 'keycloak-home');
  await mkdir(join(home, 'data', 'import'), { recursive: true });
  for (const entry of readdirSync(distribution)) {
    if (entry !== 'data') await symlink(join(distribution, entry), join(home, entry));
  }
  const mount = (service['volumes'] as string[]).find((volume) => volume.endsWith(':/opt/keycloak/data/import:ro'));
  if (mount !== `./${DEPLOY_FILES.realm.replace(/\/[^/]+$/, '')}:/opt/keycloak/data/import:ro`) throw new Error(`keycloak: unexpected import mount ${mount}`);
  await writeFile(join(home, 'data', 'import', 'matrix-realm.json'), renderDeployFile('realm', places, compose));

  const environment = JSON.parse(
    renderForNative('docker-compose.yml#keycloak.environment', JSON.stringify(service['environment']), [['http://localhost:8081', `http://127.0.0.1:${places.keycloakPort}`]]),
  ) as Record<string, string>;
  const args = [
    `-Dkc.home.dir=${home}`,
    ...(service['command'] as string[]),
    // Native only: where to listen (the container listens on 8080 of its own address), and the suite's build options.
    `--http-port=${places.keycloakPort}`,
    '--http-host=127.0.0.1',
    `--http-management-port=${managementPort}`,
    ...KEYCLOAK_BUILD_OPTIONS,
  ];
  const child = spawnChild(join(distribution, 'bin', 'kc.sh'), args, {
    cwd: home,
    env: { ...process.env, ...environment, JAVA_HOME: javaHome, PATH: `${join(javaHome, 'bin')}:${process.env['PATH'] ?? ''}`, JAVA_OPTS_KC_HEAP: '-Xms64m -Xmx768m' },
  });
  try {
    await Promise.race([
      waitForDiscovery(`http://127.0.0.1:${places.keycloakPort}/realms/matrix`),
      child.exited.then((code) => Promise.reject(new Error(`Keycloak exited with ${code}:\n${child.logs().slice(-4000)}`))),
    ]);
  } catch (error) {
    await child.stop('SIGTERM', 15_000);
    throw error;
  }
  return { logs: child.logs, stop: () => child.stop('SIGTERM', 15_000) };
}

// ------------------------------------------------------------------------------------------------------------- synapse

/** The synapse-keys service (--generate-keys), then the synapse service, on the rendered homeserver.yaml. */
async function startComposeSynapse(places: NativePlaces, compose: Record<string, any>): Promise<Service> {
  const python = synapsePython();
  await mkdir(places.synapseDataDir, { recursive: true });
  await mkdir(places.synapseConfigDir, { recursive: true });
  const config = join(places.synapseConfigDir, 'homeserver.yaml');
  await writeFile(config, renderDeployFile('homeserver', places, compose));
  await writeFile(join(places.synapseConfigDir, 'log.yaml'), renderDeployFile('synapseLog', places, compose));
  const env = { ...process.env };
  // Synapse's HTTP clients honour proxy variables; the proxy it calls is on loopback.
  for (const name of ['http_proxy', 'HTTP_PROXY', 'https_proxy', 'HTTPS_PROXY', 'all_proxy', 'ALL_PROXY']) delete env[name];
  env['no_proxy'] = env['NO_PROXY'] = '127.0.0.1,localhost,::1';

  const keys = spawnSync(python, ['-m', 'synapse.app.homeserver', '--config-path', config, '--generate-keys'], { encoding: 'utf8', env });
  if (keys.status !== 0) throw new Error(`synapse --generate-keys failed:\n${keys.stdout}\n${keys.stderr}`);
  const child = spawnChild(python, ['-m', 'synapse.app.homeserver', '--config-path', config], { cwd: places.synapseDataDir, env });
  try {
    await waitFor('Synapse', child, () => answersOk(`http://127.0.0.1:${places.synapsePort}/health`));
  } catch (error) {
    await child.stop();
    throw error;
  }
  return { logs: child.logs, stop: () => child.stop() };
}

// --------------------------------------------------------------------------------------------------------------- proxy

/** The proxy service: the image's ENTRYPOINT + CMD with the config path mapped to the rendered file. */
async function startComposeProxy(base: string, places: NativePlaces, compose: Record<string, any>): Promise<Service> {
  ensureBuilt();
  const runtime = parseDockerfile(await readFile(join(REPO_ROOT, 'Dockerfile'), 'utf8')).stages.at(-1);
  if (runtime?.entrypoint === undefined || runtime.cmd === undefined) throw new Error('the Dockerfile has no ENTRYPOINT/CMD');
  const configDir = join(base, 'etc-matrix-compat-proxy');
  await mkdir(configDir);
  const configPath = join(configDir, 'config.yaml');
  await writeFile(configPath, renderDeployFile('proxy', places, compose));
  const [command, ...args] = [...runtime.entrypoint, ...runtime.cmd].map((arg) => (arg === '/etc/matrix-compat-proxy/config.yaml' ? configPath : arg));
  if (command !== 'node') throw new Error(`unexpected ENTRYPOINT ${runtime.entrypoint.join(' ')}`);
  const child = spawnChild(process.execPath, args, { cwd: REPO_ROOT, env: { ...process.env, ...runtime.env } });
  try {
    await waitFor('matrix-compat-proxy', child, () => answersOk(`http://127.0.0.1:${places.proxyPort}/health`), 30_000);
  } catch (error) {
    await child.stop();
    throw error;
  }
  return { logs: child.logs, stop: () => child.stop() };
}

/** bin/matrix-compat-proxy.js runs dist/: compile when dist/ is missing or older than a source file. */
function ensureBuilt(): void {
  const entry = join(REPO_ROOT, 'dist', 'main.js');
  const newestSource = (dir: string): number =>
    readdirSync(dir, { withFileTypes: true }).reduce((newest, item) => {
      const path = join(dir, item.name);
      return Math.max(newest, item.isDirectory() ? newestSource(path) : statSync(path).mtimeMs);
    }, 0);
  if (existsSync(entry) && statSync(entry).mtimeMs >= newestSource(join(REPO_ROOT, 'src'))) return;
  const build = spawnSync('npm', ['run', 'build'], { cwd: REPO_ROOT, encoding: 'utf8' });
  if (build.status !== 0) throw new Error(`npm run build failed:\n${build.stdout}\n${build.stderr}`);
}

// --------------------------------------------------------------------------------------------------------------- nginx

const NGINX = process.env['NGINX_BIN'] ?? '/usr/sbin/nginx';

/** One of deploy/nginx/*.conf, as docker-compose.yml mounts it, on the public port. */
async function startComposeNginx(base: string, places: NativePlaces, layout: NginxLayout): Promise<RunningNginx> {
  const dir = join(base, `nginx-${layout}-${Date.now()}`);
  await mkdir(dir);
  const configPath = join(dir, 'nginx.conf');
  await writeFile(configPath, renderDeployFile(layout === 'full-proxy' ? 'nginxFull' : 'nginxAuthOnly', places, readCompose()));
  await mkdir(places.nginxLogDir, { recursive: true });
  // The nginx image runs `nginx -g 'daemon off;'`; the pid file goes to this run's folder.
  const child = spawnChild(NGINX, ['-p', dir, '-c', configPath, '-e', join(places.nginxLogDir, 'error.log'), '-g', `daemon off; pid ${join(dir, 'nginx.pid')};`]);
  const stop = () => child.stop('SIGTERM', 5_000);
  try {
    await waitFor(`nginx (${layout})`, child, () => portOpen(places.nginxPort), 10_000);
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    layout,
    accessLog: () => readLines(join(places.nginxLogDir, 'access.log')),
    stop,
  };
}

function readLines(path: string): string[] {
  return existsSync(path) ? readFileSync(path, 'utf8').split('\n').filter((line) => line !== '') : [];
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

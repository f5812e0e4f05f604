import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, rename, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from './free-port.js';
import { interopCacheDir } from './synapse.js';

/** What test/fixtures/keycloak-realm.json sets up; tests read names and secrets from here, not from literals. */
export const KEYCLOAK_REALM = {
  realm: 'matrix',
  /** Confidential client of the proxy: password grant, code + PKCE, introspection. */
  client: { clientId: 'matrix-compat-proxy', clientSecret: 'matrix-compat-proxy-test-secret' },
  /** Public client standing for a native OIDC Matrix client (staged rollout). */
  nativeClient: { clientId: 'native-matrix-client' },
  users: {
    alice: { username: 'alice', password: 'alice-password', email: 'alice@example.test', name: 'Alice Liddell', groups: ['matrix-users', 'staff'] },
    bob: { username: 'bob', password: 'bob-password', email: 'bob@example.test', name: 'Bob Builder', groups: ['matrix-users'] },
  },
} as const;

export const KEYCLOAK_DEFAULT_VERSION = '26.5.6';

export interface RunningKeycloak {
  /** e.g. http://127.0.0.1:12345 */
  readonly url: string;
  /** The realm's issuer, e.g. http://127.0.0.1:12345/realms/matrix */
  readonly issuer: string;
  readonly version: string;
  /** Wall time from spawn to the realm's discovery document answering. */
  readonly startupMs: number;
  /** A fresh admin access token (master realm, bootstrap admin). */
  adminToken(): Promise<string>;
  /** Disables the user: password grants fail, refresh tokens are refused, introspection answers inactive. */
  disableUser(username: string): Promise<void>;
  enableUser(username: string): Promise<void>;
  /**
   * The admin console's "Sign out": ends the user's online sessions (with a back-channel logout to clients that
   * registered a URL). Offline sessions stay and get no back-channel logout; Keycloak sets the user's not-before
   * time (whole seconds) instead, so their refresh tokens issued in an earlier second are refused as "Stale token".
   */
  logoutUser(username: string): Promise<void>;
  stop(): Promise<void>;
  logs(): string;
}

/** Thrown when Keycloak or a Java 21+ is missing; the message says how to get them. */
export class KeycloakMissingError extends Error {
  override readonly name = 'KeycloakMissingError';
}

const STARTUP_TIMEOUT_MS = 180_000;
const STOP_GRACE_MS = 15_000;
const LOG_LIMIT = 1024 * 1024;
const REALM_FIXTURE = fileURLToPath(new URL('../fixtures/keycloak-realm.json', import.meta.url));
const running = new Set<ChildProcess>();

// A crashed or interrupted test run must not leave a JVM behind (kc.sh and java share the process group).
process.once('exit', () => {
  for (const child of running) killGroup(child, 'SIGKILL');
});

/** The unpacked distribution scripts/install-keycloak.sh made (KEYCLOAK_HOME overrides). */
export function keycloakHome(): string {
  const home = process.env['KEYCLOAK_HOME'] ?? join(interopCacheDir(), `keycloak-${process.env['KEYCLOAK_VERSION'] ?? KEYCLOAK_DEFAULT_VERSION}`);
  if (!existsSync(join(home, 'bin', 'kc.sh'))) {
    throw new KeycloakMissingError(
      `Keycloak is not installed (no ${home}/bin/kc.sh). Run scripts/install-keycloak.sh, ` +
        'or set MCP_SKIP_INTEROP=1 to skip the interop suite explicitly.',
    );
  }
  return home;
}

/** JAVA_HOME when it is Java 21+, else the newest JDK under /usr/lib/jvm that is (Keycloak 26 needs 21+). */
export function javaHomeForKeycloak(): string {
  const fromEnv = process.env['JAVA_HOME'];
  if (fromEnv !== undefined && fromEnv !== '' && (javaMajor(fromEnv) ?? 0) >= 21) return fromEnv;
  let best: { home: string; major: number } | undefined;
  let entries: string[] = [];
  try {
    entries = readdirSync('/usr/lib/jvm');
  } catch {
    // no /usr/lib/jvm
  }
  for (const entry of entries) {
    const home = join('/usr/lib/jvm', entry);
    const major = javaMajor(home);
    if (major !== undefined && major >= 21 && (best === undefined || major > best.major)) best = { home, major };
  }
  if (best === undefined) {
    throw new KeycloakMissingError(
      `Keycloak needs Java 21 or newer; JAVA_HOME=${fromEnv ?? '(unset)'} is not, and /usr/lib/jvm has none. Install a JDK 21+ (e.g. Temurin 25).`,
    );
  }
  return best.home;
}

/**
 * A real Keycloak in dev mode on a free loopback port with the realm of test/fixtures/keycloak-realm.json, its H2
 * database in a temp dir of its own (removed by stop(); parallel runs share nothing). Started with the
 * `dynamic-scopes` feature so `urn:matrix:client:device:<id>` can be requested as MSC2967 wants.
 *
 * Creating the schema and importing the realm take most of a cold start (40 of 65 s on a busy 2-CPU machine), so
 * the first start saves the freshly imported database as a template in the cache folder (keyed by Keycloak
 * version and realm file) and later starts begin from a copy of it.
 */
export async function startKeycloak(): Promise<RunningKeycloak> {
  const home = keycloakHome();
  const javaHome = javaHomeForKeycloak();
  const template = join(interopCacheDir(), 'keycloak-db-templates', templateKey(home), DB_FILE);
  if (!existsSync(template)) await buildTemplate(home, javaHome, template);

  let lastError: unknown;
  // The free ports are found by binding and releasing them; another process may take one in between, so retry.
  for (let attempt = 0; attempt < 3; attempt += 1) {
    const dbDir = await mkdtemp(join(tmpdir(), 'mcp-keycloak-'));
    try {
      await copyFile(template, join(dbDir, DB_FILE));
      const keycloak = await spawnKeycloak(home, javaHome, dbDir, false);
      return {
        ...keycloak,
        stop: async () => {
          await keycloak.stop();
          await rm(dbDir, { recursive: true, force: true });
        },
      };
    } catch (error) {
      await rm(dbDir, { recursive: true, force: true });
      lastError = error;
      if (!(error instanceof PortTakenError)) throw error;
    }
  }
  throw lastError;
}

const DB_FILE = 'keycloakdb.mv.db';
// The template's admin exists before the run starts, so its password cannot be per run. Keycloak only listens on
// loopback, and the database is a throwaway copy.
const ADMIN_PASSWORD = 'admin-password-for-tests-only';

function templateKey(home: string): string {
  const hash = createHash('sha256').update(readFileSync(REALM_FIXTURE)).update(keycloakVersion(home)).update(ADMIN_PASSWORD);
  return `${keycloakVersion(home)}-${hash.digest('hex').slice(0, 16)}`;
}

/** Starts Keycloak once on an empty database with --import-realm, stops it cleanly and keeps the database file. */
async function buildTemplate(home: string, javaHome: string, template: string): Promise<void> {
  // --import-realm reads <home>/data/import; the fixture is copied there atomically (same content for every run).
  const importDir = join(home, 'data', 'import');
  await mkdir(importDir, { recursive: true });
  const staged = join(importDir, `.matrix-realm.${process.pid}.tmp`);
  await copyFile(REALM_FIXTURE, staged);
  await rename(staged, join(importDir, 'matrix-realm.json'));

  const dbDir = await mkdtemp(join(tmpdir(), 'mcp-keycloak-template-'));
  try {
    let keycloak: RunningKeycloak | undefined;
    for (let attempt = 0; keycloak === undefined; attempt += 1) {
      try {
        keycloak = await spawnKeycloak(home, javaHome, dbDir, true);
      } catch (error) {
        if (!(error instanceof PortTakenError) || attempt >= 2) throw error;
      }
    }
    await keycloak.stop();
    // Only a clean shutdown leaves a consistent H2 file; after a SIGKILL there is no template rather than a bad one.
    if (!/stopped in/.test(keycloak.logs())) throw new Error(`Keycloak did not shut down cleanly:\n${keycloak.logs().slice(-3000)}`);
    await mkdir(join(template, '..'), { recursive: true });
    // Renamed into place only when complete; concurrent builders each write a whole file, the last one wins.
    const partial = `${template}.${process.pid}.partial`;
    await copyFile(join(dbDir, DB_FILE), partial);
    await rename(partial, template);
  } finally {
    await rm(dbDir, { recursive: true, force: true });
  }
}

class PortTakenError extends Error {}

/**
 * Build-time options of every Keycloak the suites start. Keycloak re-augments its distribution (about a minute on a
 * busy 2-CPU machine, rewriting lib/quarkus of the shared install) whenever these differ from the last start, so every
 * start uses the same ones. `--cache=local`: no JGroups discovery traffic.
 */
export const KEYCLOAK_BUILD_OPTIONS: readonly string[] = ['--db=dev-file', '--cache=local', '--features=dynamic-scopes', '--health-enabled=false', '--metrics-enabled=false'];

async function spawnKeycloak(home: string, javaHome: string, dbDir: string, importRealm: boolean): Promise<RunningKeycloak> {
  const port = await freePort();
  const managementPort = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const issuer = `${url}/realms/${KEYCLOAK_REALM.realm}`;
  const adminPassword = ADMIN_PASSWORD;
  const args = [
    'start-dev',
    `--http-port=${port}`,
    '--http-host=127.0.0.1',
    `--http-management-port=${managementPort}`,
    '--hostname-strict=false',
    ...(importRealm ? ['--import-realm'] : []),
    // Keycloak's dev-file URL, pointed at a directory of this run (the flags are those Keycloak adds for H2 2.x).
    `--db-url=jdbc:h2:file:${join(dbDir, 'keycloakdb')};NON_KEYWORDS=VALUE;DB_CLOSE_ON_EXIT=FALSE;DB_CLOSE_DELAY=0`,
    ...KEYCLOAK_BUILD_OPTIONS,
  ];
  const started = performance.now();
  const child = spawn(join(home, 'bin', 'kc.sh'), args, {
    cwd: home,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
    env: {
      ...process.env,
      JAVA_HOME: javaHome,
      PATH: `${join(javaHome, 'bin')}:${process.env['PATH'] ?? ''}`,
      JAVA_OPTS_KC_HEAP: '-Xms64m -Xmx768m',
      KC_BOOTSTRAP_ADMIN_USERNAME: 'admin',
      KC_BOOTSTRAP_ADMIN_PASSWORD: adminPassword,
    },
  });
  running.add(child);
  let output = '';
  const collect = (chunk: Buffer) => {
    output += chunk.toString();
    if (output.length > LOG_LIMIT) output = output.slice(-LOG_LIMIT);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));

  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      killGroup(child, 'SIGTERM');
      const timer = setTimeout(() => killGroup(child, 'SIGKILL'), STOP_GRACE_MS);
      await exited;
      clearTimeout(timer);
    }
    running.delete(child);
  };

  try {
    await Promise.race([
      waitForDiscovery(issuer),
      exited.then((code) => {
        const tail = output.split('\n').slice(-40).join('\n');
        const error = /Address already in use|Port\(s\) already bound/.test(output) ? PortTakenError : Error;
        throw new error(`Keycloak exited with code ${code} before the realm was ready; last log lines:\n${tail}`);
      }),
    ]);
  } catch (error) {
    await stop();
    throw error;
  }
  const startupMs = Math.round(performance.now() - started);

  const adminToken = async (): Promise<string> => {
    const response = await fetch(`${url}/realms/master/protocol/openid-connect/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'password', client_id: 'admin-cli', username: 'admin', password: adminPassword }),
    });
    const body = (await response.json()) as Record<string, unknown>;
    if (!response.ok || typeof body['access_token'] !== 'string') throw new Error(`Keycloak admin login failed: ${response.status} ${JSON.stringify(body)}`);
    return body['access_token'];
  };
  const admin = async (method: string, path: string, body?: unknown): Promise<unknown> => {
    const response = await fetch(`${url}/admin/realms/${KEYCLOAK_REALM.realm}${path}`, {
      method,
      headers: { authorization: `Bearer ${await adminToken()}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`Keycloak admin ${method} ${path} failed: ${response.status} ${text}`);
    return text === '' ? undefined : JSON.parse(text);
  };
  const userId = async (username: string): Promise<string> => {
    const found = (await admin('GET', `/users?exact=true&username=${encodeURIComponent(username)}`)) as { id: string }[];
    const id = found[0]?.id;
    if (id === undefined) throw new Error(`Keycloak has no user ${username}`);
    return id;
  };
  const setEnabled = async (username: string, enabled: boolean) => {
    const id = await userId(username);
    const user = (await admin('GET', `/users/${id}`)) as Record<string, unknown>;
    await admin('PUT', `/users/${id}`, { ...user, enabled });
  };

  return {
    url,
    issuer,
    version: keycloakVersion(home),
    startupMs,
    adminToken,
    disableUser: (username) => setEnabled(username, false),
    enableUser: (username) => setEnabled(username, true),
    logoutUser: async (username) => {
      await admin('POST', `/users/${await userId(username)}/logout`);
    },
    stop,
    logs: () => output,
  };
}

export async function waitForDiscovery(issuer: string): Promise<void> {
  const deadline = performance.now() + STARTUP_TIMEOUT_MS;
  for (;;) {
    try {
      const response = await fetch(`${issuer}/.well-known/openid-configuration`, { signal: AbortSignal.timeout(5_000) });
      await response.body?.cancel();
      if (response.ok) return;
    } catch {
      // not listening yet
    }
    if (performance.now() > deadline) throw new Error(`Keycloak did not serve ${issuer} within ${STARTUP_TIMEOUT_MS} ms`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

export function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // already gone
  }
}

export function keycloakVersion(home: string): string {
  try {
    return /Version\s+(\S+)/.exec(readFileSync(join(home, 'version.txt'), 'utf8'))?.[1] ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

function javaMajor(home: string): number | undefined {
  if (!existsSync(join(home, 'bin', 'java'))) return undefined;
  try {
    // The JDK's `release` file: JAVA_VERSION="25.0.3" (or "1.8.0_392" for Java 8).
    const match = /^JAVA_VERSION="(?:1\.)?(\d+)/m.exec(readFileSync(join(home, 'release'), 'utf8'));
    if (match !== null) return Number(match[1]);
  } catch {
    // no release file: ask the binary
  }
  const output = spawnSync(join(home, 'bin', 'java'), ['-version'], { encoding: 'utf8' }).stderr ?? '';
  const match = /version "(?:1\.)?(\d+)/.exec(output);
  return match === null ? undefined : Number(match[1]);
}

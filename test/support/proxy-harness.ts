import { Writable } from 'node:stream';
import { stringify } from 'yaml';
import type { Clock } from '../../src/clock.js';
import type { AppDeps } from '../../src/app-deps.js';
import { buildDeps } from '../../src/build-deps.js';
import { parseConfig } from '../../src/config/load-config.js';
import type { Config } from '../../src/config/schema.js';
import { createLogger } from '../../src/observability/logger.js';
import { createMetrics } from '../../src/observability/metrics.js';
import { startProxy, type RunningProxy } from '../../src/server.js';
import { createStore } from '../../src/store/index.js';
import { MemoryStore } from '../../src/store/memory-store.js';
import type { Store } from '../../src/store/store.js';
import { reservePort } from './free-port.js';
import { jsonRequest } from './json-request.js';
import { testOpProviderBlock } from './test-op-provider.js';
import { startHomeserverDouble } from './homeserver-double.js';
import { startRedis, type RunningRedis } from './redis-server.js';
import { startTestOp, type TestOp } from './test-op.js';

export const SERVER_NAME = 'example.test';
export const HOMESERVER_SECRET = 'homeserver-shared-secret-for-tests-0123456789';
export const ADMIN_TOKEN = 'admin-token-for-tests-0123456789abcdef0123456789';
export const IDP_ID = 'testop';

export interface HarnessOptions {
  /** 'redis' starts (or uses REDIS_URL) a real Redis with a fresh key prefix. Default memory. */
  readonly store?: 'memory' | 'redis';
  readonly clock?: Clock;
  /** Options for the in-process OP. */
  readonly op?: Parameters<typeof startTestOp>[0];
  /** Start a private redis-server even when REDIS_URL is set (tests that stop it). */
  readonly privateRedis?: boolean;
  /** The proxy's logger (e.g. a captured one); default: the configured level on stdout. */
  readonly logger?: import('pino').Logger;
  /** Edits the proxy config (as plain YAML-shaped data) before it is validated. */
  readonly configure?: (config: Record<string, any>) => void;
  /** Keep the proxy's log lines (JSON, at `log.level`) for the test to read with `logs()`. */
  readonly captureLogs?: boolean;
}

export interface Harness {
  /** The client-facing URL of the proxy (what a Matrix client uses). */
  readonly url: string;
  readonly homeserverFacingUrl: string;
  readonly op: TestOp;
  readonly homeserver: Awaited<ReturnType<typeof startHomeserverDouble>>;
  readonly deps: AppDeps;
  readonly config: Config;
  /** The configuration as YAML-shaped data, before validation (a copy: edit it to make variants). */
  rawConfig(): Record<string, any>;
  readonly store: Store;
  /** Set when the harness runs on Redis. */
  readonly redisUrl: string | undefined;
  /** The harness's key prefix on that Redis (a second replica shares it). */
  readonly redisKeyPrefix: string | undefined;
  /** Stops the harness's own redis-server (an outage); only with `store: 'redis'` and no REDIS_URL. */
  stopRedis(): Promise<void>;
  /** SIGSTOP / SIGCONT the harness's own redis-server (a hung store); same conditions as stopRedis. */
  freezeRedis(): void;
  thawRedis(): void;
  readonly proxy: RunningProxy;
  /** The proxy's log lines, parsed (only with `captureLogs`). */
  logs(): Array<Record<string, any>>;
  /** POST /login m.login.password through the proxy; returns status and JSON body. */
  passwordLogin(user: string, password: string, extra?: Record<string, unknown>): Promise<{ status: number; body: any; headers: Headers }>;
  /** Any JSON request through the proxy. */
  request(method: string, path: string, options?: { token?: string; body?: unknown; headers?: Record<string, string> }): Promise<{ status: number; body: any; headers: Headers }>;
  stop(): Promise<void>;
}

/**
 * The whole proxy on loopback with real neighbours: the in-process OP (oidc-provider), the homeserver double
 * (which calls the proxy's introspection like Synapse does), and a memory or real Redis store.
 */
export async function startProxyHarness(options: HarnessOptions = {}): Promise<Harness> {
  // The proxy's port is picked before the OP and the homeserver double (they are told its URL) and bound last: another
  // process may take it in between. Then the whole harness starts again on a new port.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startHarnessOnce(options);
    } catch (err: unknown) {
      if (attempt >= 3 || (err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
    }
  }
}

async function startHarnessOnce(options: HarnessOptions): Promise<Harness> {
  // What started before a failure is stopped again: a server left listening would keep the test process alive.
  const started: (() => Promise<unknown>)[] = [];
  try {
    return await startHarnessParts(options, started);
  } catch (err: unknown) {
    for (const stop of started.reverse()) await stop().catch(() => undefined);
    throw err;
  }
}

async function startHarnessParts(options: HarnessOptions, started: (() => Promise<unknown>)[]): Promise<Harness> {
  // Held until the proxy listens: the OP and the homeserver double below listen on port 0 meanwhile.
  const reserved = await step('reserving the proxy port', reservePort());
  started.push(reserved.release);
  const proxyPort = reserved.port;
  const proxyUrl = `http://127.0.0.1:${proxyPort}`;
  const op = await step('starting the test OP', startTestOp({ ...options.op, proxyBaseUrl: proxyUrl, idpId: IDP_ID }));
  started.push(() => op.stop());
  const homeserver = await step('starting the homeserver double', startHomeserverDouble({ masEndpoint: `${proxyUrl}/`, secret: HOMESERVER_SECRET, serverName: SERVER_NAME }));
  started.push(() => homeserver.stop());

  const raw: Record<string, any> = {
    server_name: SERVER_NAME,
    public_baseurl: `${proxyUrl}/`,
    listen: { host: '127.0.0.1', port: proxyPort },
    homeserver: { url: homeserver.url, mode: 'synapse', secret: HOMESERVER_SECRET, upstream_timeout: '10s' },
    oidc_providers: [testOpProviderBlock(op, IDP_ID, 'Test OP')],
    password_login: { enabled: true, idp_id: IDP_ID },
    sessions: { encryption_key: 'an-encryption-key-for-tests-only-0123456789abcdef' },
    rate_limits: { login_per_ip: { burst: 1000, per_second: 100 }, login_per_account: { burst: 1000, per_second: 100 }, sso_per_ip: { burst: 1000, per_second: 100 } },
    admin: { token: ADMIN_TOKEN },
    metrics: { enabled: false },
    log: { level: process.env['MCP_TEST_LOG'] === '1' ? 'debug' : 'silent' },
  };
  options.configure?.(raw);
  const config = parseConfig(stringify(raw), { env: {} });

  let redis: RunningRedis | undefined;
  let store: Store;
  const keyPrefix = `harness-${Math.random().toString(36).slice(2)}:`;
  if (options.store === 'redis') {
    const running = await step('starting Redis', startRedis({ ignoreEnv: options.privateRedis === true }));
    redis = running;
    started.push(() => running.stop());
    store = await step('connecting to Redis', createStore({ redis: { url: running.url, keyPrefix } }));
  } else {
    store = new MemoryStore(options.clock === undefined ? {} : { clock: options.clock });
  }
  const startedStore = store;
  started.push(() => startedStore.close());
  let logText = '';
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      logText += chunk.toString();
      done();
    },
  });
  const logger = options.logger ?? (options.captureLogs === true ? createLogger(config.log.level, sink) : createLogger(config.log.level));
  const deps = await step('building the dependencies (OP discovery)', buildDeps(config, store, logger, createMetrics({ collectDefaults: false }), options.clock === undefined ? {} : { clock: options.clock }));
  await step('releasing the reserved port', reserved.release());
  const proxy = await step('starting the proxy', startProxy(deps));

  const request: Harness['request'] = (method, path, requestOptions = {}) => jsonRequest(`${proxy.clientUrl}${path}`, method, requestOptions);


  return {
    url: proxy.clientUrl,
    homeserverFacingUrl: proxy.homeserverFacingUrl,
    op,
    homeserver,
    deps,
    config,
    rawConfig: () => structuredClone(raw),
    store,
    redisUrl: redis?.url,
    redisKeyPrefix: redis === undefined ? undefined : keyPrefix,
    async stopRedis() {
      if (redis === undefined) throw new Error('the harness runs on the memory store');
      await redis.stop();
    },
    freezeRedis() {
      if (redis === undefined) throw new Error('the harness runs on the memory store');
      redis.freeze();
    },
    thawRedis() {
      if (redis === undefined) throw new Error('the harness runs on the memory store');
      redis.thaw();
    },
    proxy,
    logs: () =>
      logText
        .split('\n')
        .filter((line) => line.trim() !== '')
        .map((line) => JSON.parse(line) as Record<string, any>),
    request,
    passwordLogin: (user, password, extra = {}) =>
      request('POST', '/_matrix/client/v3/login', { body: { type: 'm.login.password', identifier: { type: 'm.id.user', user }, password, ...extra } }),
    async stop() {
      await step('stopping the proxy', proxy.stop(1000));
      await store.close().catch(() => undefined);
      await step('stopping the homeserver double', homeserver.stop());
      await step('stopping the test OP', op.stop());
      await step('stopping Redis', redis?.stop() ?? Promise.resolve());
    },
  };
}

/**
 * `promise`, with a line on stderr if it has not settled after 30 s: a start that hangs (seen twice in the fast suite,
 * killed by the runner's bound with nothing in its output) then says where it stopped.
 */
async function step<T>(label: string, promise: Promise<T>): Promise<T> {
  const timer = setTimeout(() => process.stderr.write(`proxy-harness: ${label} has not finished after 30 s\n`), 30_000);
  timer.unref();
  try {
    return await promise;
  } finally {
    clearTimeout(timer);
  }
}

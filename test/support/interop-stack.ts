import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { stringify } from 'yaml';
import type { AppDeps } from '../../src/app-deps.js';
import { buildDeps } from '../../src/build-deps.js';
import { parseConfig } from '../../src/config/load-config.js';
import type { Config } from '../../src/config/schema.js';
import { createLogger } from '../../src/observability/logger.js';
import { createMetrics } from '../../src/observability/metrics.js';
import { OWN_PREFIX } from '../../src/http/own-prefix.js';
import { startProxy, type RunningProxy } from '../../src/server.js';
import { createStore } from '../../src/store/index.js';
import type { Store } from '../../src/store/store.js';
import { freePort } from './free-port.js';
import { KEYCLOAK_REALM, startKeycloak, type RunningKeycloak } from './keycloak.js';
import { startRedis, type RunningRedis } from './redis-server.js';
import { startSynapse, type RunningSynapse } from './synapse.js';
import { jsonRequest, type JsonResponse, type RequestOptions } from './json-request.js';

export { jsonRequest, type JsonResponse, type RequestOptions };

export const INTEROP_SERVER_NAME = 'example.test';
export const INTEROP_IDP_ID = 'keycloak';
export const HOMESERVER_SECRET = 'interop-homeserver-shared-secret-0123456789';
const ADMIN_TOKEN = 'interop-admin-token-0123456789abcdef0123456789';
const PROXY_LOG_LIMIT = 2 * 1024 * 1024;

/** The interop suite runs unless MCP_SKIP_INTEROP=1 says otherwise; a missing Synapse or Keycloak is a failure. */
export function interopSkipReason(): string | false {
  return process.env['MCP_SKIP_INTEROP'] === '1' ? 'MCP_SKIP_INTEROP=1' : false;
}

export interface InteropProxy {
  /** Client-facing URL: what a Matrix client is given as its homeserver. */
  readonly url: string;
  readonly homeserverFacingUrl: string;
  readonly config: Config;
  readonly deps: AppDeps;
  readonly store: Store;
  /** Any JSON request to the client-facing listener. */
  request(method: string, path: string, options?: RequestOptions): Promise<JsonResponse>;
  /** POST /_matrix/client/v3/login with m.login.password. */
  passwordLogin(user: string, password: string, extra?: Record<string, unknown>): Promise<JsonResponse>;
  /** The proxy's own log lines (debug level), for failure messages. */
  logs(): string;
  stop(): Promise<void>;
}

export interface InteropStack extends InteropProxy {
  readonly keycloak: RunningKeycloak;
  readonly synapse: RunningSynapse;
  readonly redis: RunningRedis;
  /** Where Keycloak sends back-channel logout tokens, when the stack registered it with Keycloak. */
  readonly backchannelLogoutUrl: string | undefined;
  /**
   * A second proxy on the same Synapse and Redis (own key prefix), no homeserver-facing listener, with the provider
   * block edited by `editProvider` — e.g. pointed at a dead OP without disturbing the shared Keycloak.
   */
  startSecondProxy(editProvider: (provider: Record<string, any>) => void): Promise<InteropProxy>;
}

export interface InteropStackOptions {
  /**
   * The Keycloak to use, running or still starting (start it once per file, and stop it yourself); without one the
   * stack starts and stops its own.
   */
  readonly keycloak?: RunningKeycloak | Promise<RunningKeycloak>;
  /** sessions.revalidate_interval (default 2s, so that OP-side changes show within a test). */
  readonly revalidateInterval?: string;
  /**
   * Register the proxy's back-channel logout URL at Keycloak's proxy client (default false). The URL is one per
   * client, so only one stack per Keycloak should ask for it.
   */
  readonly backchannelLogout?: boolean;
  /**
   * Ask Keycloak for `offline_access` (default true): the proxy's OP grants then outlive Keycloak's SSO session
   * timeouts, but Keycloak's "Sign out" sends no back-channel logout for offline sessions (only a refresh finds out).
   */
  readonly offlineAccess?: boolean;
  /** Edits the proxy's config (YAML-shaped) before it is validated, e.g. `native_clients: serve`. */
  readonly configure?: (config: Record<string, any>) => void;
}

/**
 * Real Synapse (delegated auth pointing at the proxy's homeserver-facing listener), real Keycloak as the OP with
 * password grant, the proxy on a real Redis: the whole production path on loopback. Synapse, Keycloak and Redis start
 * in parallel; the proxy's ports are chosen first because Synapse must know its auth service's address.
 */
export async function startInteropStack(options: InteropStackOptions = {}): Promise<InteropStack> {
  const clientPort = await freePort();
  const facingPort = await freePort();
  const proxyUrl = `http://127.0.0.1:${clientPort}`;
  const facingUrl = `http://127.0.0.1:${facingPort}`;

  const started = await Promise.allSettled([
    options.keycloak ?? startKeycloak(),
    startSynapse({ masEndpoint: `${facingUrl}/`, masSecret: HOMESERVER_SECRET, serverName: INTEROP_SERVER_NAME }),
    startRedis(),
  ] as const);
  const [keycloakResult, synapseResult, redisResult] = started;
  const ownKeycloak = options.keycloak === undefined && keycloakResult.status === 'fulfilled' ? keycloakResult.value : undefined;
  const cleanups: (() => Promise<void>)[] = [];
  if (redisResult.status === 'fulfilled') cleanups.push(() => redisResult.value.stop());
  if (synapseResult.status === 'fulfilled') cleanups.push(() => synapseResult.value.stop());
  if (ownKeycloak !== undefined) cleanups.push(() => ownKeycloak.stop());
  const cleanUp = async () => {
    for (const cleanup of [...cleanups].reverse()) await cleanup().catch(() => undefined);
    cleanups.length = 0;
  };
  const failure = started.find((result) => result.status === 'rejected');
  if (failure !== undefined) {
    await cleanUp();
    throw failure.reason;
  }
  const keycloak = (keycloakResult as PromiseFulfilledResult<RunningKeycloak>).value;
  const synapse = (synapseResult as PromiseFulfilledResult<RunningSynapse>).value;
  const redis = (redisResult as PromiseFulfilledResult<RunningRedis>).value;

  try {
    const inputs = { synapse, keycloak, revalidateInterval: options.revalidateInterval ?? '2s', offlineAccess: options.offlineAccess ?? true };
    const raw = proxyConfig({ ...inputs, proxyUrl, clientPort });
    raw['homeserver'].listen = { host: '127.0.0.1', port: facingPort };
    options.configure?.(raw);
    const proxy = await startConfiguredProxy(raw, redis);
    cleanups.push(() => proxy.stop());

    let backchannelLogoutUrl: string | undefined;
    if (options.backchannelLogout ?? false) {
      backchannelLogoutUrl = `${proxy.url}${OWN_PREFIX}/backchannel-logout/${INTEROP_IDP_ID}`;
      await setKeycloakClientAttributes(keycloak, KEYCLOAK_REALM.client.clientId, {
        'backchannel.logout.url': backchannelLogoutUrl,
        'backchannel.logout.session.required': 'true',
      });
    }

    return {
      ...proxy,
      keycloak,
      synapse,
      redis,
      backchannelLogoutUrl,
      async startSecondProxy(editProvider) {
        const secondPort = await freePort();
        const secondUrl = `http://127.0.0.1:${secondPort}`;
        const secondRaw = proxyConfig({ ...inputs, proxyUrl: secondUrl, clientPort: secondPort });
        editProvider(secondRaw['oidc_providers'][0]);
        return startConfiguredProxy(secondRaw, redis);
      },
      stop: cleanUp,
    };
  } catch (error) {
    await cleanUp();
    throw error;
  }
}

interface ProxyConfigInputs {
  readonly proxyUrl: string;
  readonly clientPort: number;
  readonly synapse: RunningSynapse;
  readonly keycloak: RunningKeycloak;
  readonly revalidateInterval: string;
  readonly offlineAccess: boolean;
}

/** The proxy config an admin would write for Keycloak in front of Synapse (as YAML-shaped data). */
function proxyConfig(inputs: ProxyConfigInputs): Record<string, any> {
  return {
    server_name: inputs.synapse.serverName,
    public_baseurl: `${inputs.proxyUrl}/`,
    listen: { host: '127.0.0.1', port: inputs.clientPort },
    homeserver: { url: inputs.synapse.url, mode: 'synapse', secret: HOMESERVER_SECRET, upstream_timeout: '30s' },
    oidc_providers: [
      {
        idp_id: INTEROP_IDP_ID,
        idp_name: 'Keycloak',
        discover: true,
        issuer: inputs.keycloak.issuer,
        client_id: KEYCLOAK_REALM.client.clientId,
        client_secret: KEYCLOAK_REALM.client.clientSecret,
        scopes: ['openid', 'profile', 'email', ...(inputs.offlineAccess ? ['offline_access'] : [])],
        password_grant: { enabled: true },
        backchannel_logout_enabled: true,
        user_mapping_provider: {
          config: { localpart_template: '{{ user.preferred_username }}', display_name_template: '{{ user.name }}', email_template: '{{ user.email }}' },
        },
      },
    ],
    password_login: { enabled: true, idp_id: INTEROP_IDP_ID },
    sessions: { encryption_key: 'interop-encryption-key-for-tests-only-0123456789', revalidate_interval: inputs.revalidateInterval },
    rate_limits: { login_per_ip: { burst: 1000, per_second: 100 }, login_per_account: { burst: 1000, per_second: 100 } },
    admin: { token: ADMIN_TOKEN },
    metrics: { enabled: false },
    log: { level: 'debug' },
  };
}

export async function startConfiguredProxy(raw: Record<string, any>, redis: RunningRedis): Promise<InteropProxy> {
  const config = parseConfig(stringify(raw), { env: {} });
  const store = await createStore({ redis: { url: redis.url, keyPrefix: `interop-${randomBytes(4).toString('hex')}:` } });
  let logText = '';
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      if (process.env['MCP_TEST_LOG'] === '1') process.stderr.write(chunk);
      logText += chunk.toString();
      if (logText.length > PROXY_LOG_LIMIT) logText = logText.slice(-PROXY_LOG_LIMIT);
      done();
    },
  });
  const deps = await buildDeps(config, store, createLogger(config.log.level, sink), createMetrics({ collectDefaults: false }));
  let proxy: RunningProxy;
  try {
    proxy = await startProxy(deps);
  } catch (error) {
    await store.close();
    throw error;
  }
  const request: InteropProxy['request'] = (method, path, requestOptions = {}) => jsonRequest(`${proxy.clientUrl}${path}`, method, requestOptions);
  return {
    url: proxy.clientUrl,
    homeserverFacingUrl: proxy.homeserverFacingUrl,
    config,
    deps,
    store,
    request,
    passwordLogin: (user, password, extra = {}) =>
      request('POST', '/_matrix/client/v3/login', { body: { type: 'm.login.password', identifier: { type: 'm.id.user', user }, password, ...extra } }),
    logs: () => logText,
    async stop() {
      await proxy.stop(1000);
      await store.close();
    },
  };
}


// ---------------------------------------------------------------------------------------------------- Keycloak admin

/** One call to Keycloak's admin REST API for the test realm, as the bootstrap admin. */
export async function keycloakAdmin(keycloak: RunningKeycloak, method: string, path: string, body?: unknown): Promise<unknown> {
  const response = await jsonRequest(`${keycloak.url}/admin/realms/${KEYCLOAK_REALM.realm}${path}`, method, {
    token: await keycloak.adminToken(),
    ...(body === undefined ? {} : { body }),
  });
  if (response.status >= 300) throw new Error(`Keycloak admin ${method} ${path} failed: ${response.status} ${JSON.stringify(response.body)}`);
  return response.body;
}

/** Merges `attributes` into a client's attributes (e.g. the back-channel logout URL, known only once the proxy runs). */
export async function setKeycloakClientAttributes(keycloak: RunningKeycloak, clientId: string, attributes: Record<string, string>): Promise<void> {
  const found = (await keycloakAdmin(keycloak, 'GET', `/clients?clientId=${encodeURIComponent(clientId)}`)) as { id: string }[];
  const id = found[0]?.id;
  if (id === undefined) throw new Error(`Keycloak has no client ${clientId}`);
  const client = (await keycloakAdmin(keycloak, 'GET', `/clients/${id}`)) as Record<string, any>;
  await keycloakAdmin(keycloak, 'PUT', `/clients/${id}`, { ...client, attributes: { ...client['attributes'], ...attributes } });
}

export interface KeycloakTestUser {
  readonly username: string;
  readonly password: string;
  readonly email: string;
  readonly firstName: string;
  readonly lastName: string;
}

/**
 * A fresh enabled user with a password, so a test that disables or signs out its user does not disturb tests that
 * run alongside it with the fixture's alice and bob. The realm database is a per-run copy, so nothing leaks.
 */
export async function createKeycloakUser(keycloak: RunningKeycloak, username: string): Promise<KeycloakTestUser> {
  const user = { username, password: `${username}-password-${randomBytes(4).toString('hex')}`, email: `${username}@example.test`, firstName: username, lastName: 'Tester' };
  await keycloakAdmin(keycloak, 'POST', '/users', {
    username: user.username,
    enabled: true,
    email: user.email,
    emailVerified: true,
    firstName: user.firstName,
    lastName: user.lastName,
    credentials: [{ type: 'password', value: user.password, temporary: false }],
  });
  // The realm file declares its roles itself, so new users get no default roles; without offline_access Keycloak
  // refuses the proxy's `offline_access` scope with `not_allowed` and the login fails.
  const found = (await keycloakAdmin(keycloak, 'GET', `/users?exact=true&username=${encodeURIComponent(username)}`)) as { id: string }[];
  const role = await keycloakAdmin(keycloak, 'GET', '/roles/offline_access');
  await keycloakAdmin(keycloak, 'POST', `/users/${found[0]?.id ?? ''}/role-mappings/realm`, [role]);
  return user;
}

/**
 * Tokens a native OIDC Matrix client would hold: a password grant of the realm's public client, asking for the
 * MSC2967 scopes directly at Keycloak (no proxy involved).
 */
export async function nativeClientTokens(keycloak: RunningKeycloak, username: string, password: string, scope: string): Promise<{ accessToken: string; refreshToken: string | undefined; scope: string }> {
  const response = await fetch(`${keycloak.issuer}/protocol/openid-connect/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'password', client_id: KEYCLOAK_REALM.nativeClient.clientId, username, password, scope }),
  });
  const body = (await response.json()) as Record<string, unknown>;
  if (!response.ok || typeof body['access_token'] !== 'string') throw new Error(`native client password grant failed: ${response.status} ${JSON.stringify(body)}`);
  return {
    accessToken: body['access_token'],
    refreshToken: typeof body['refresh_token'] === 'string' ? body['refresh_token'] : undefined,
    scope: typeof body['scope'] === 'string' ? body['scope'] : '',
  };
}

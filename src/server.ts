import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { createApp } from './app.js';
import type { Readiness } from './ops/health.js';
import type { AppDeps } from './app-deps.js';
import { createHomeserverProxy } from './proxy/homeserver-proxy.js';

export interface RunningProxy {
  /** Base URL of the public (client-facing) listener. */
  readonly clientUrl: string;
  /** Base URL Synapse's `matrix_authentication_service.endpoint` should point at. */
  readonly homeserverFacingUrl: string;
  readonly opsUrl: string | undefined;
  /** Stops accepting, lets in-flight requests finish (bounded), closes upstream sockets. Does not close the store. */
  stop(graceMs?: number): Promise<void>;
}

/** Starts the listeners for an already-built set of dependencies. */
export async function startProxy(deps: AppDeps): Promise<RunningProxy> {
  const { config, logger } = deps;
  const proxy = createHomeserverProxy({
    target: config.homeserver.url,
    trustedProxies: config.trusted_proxies,
    upstreamTimeoutMs: config.homeserver.upstream_timeout,
    syncTimeoutMs: config.homeserver.sync_timeout,
    logger,
    onUpstreamError: (kind) => deps.metrics.upstreamErrors.inc({ upstream: 'homeserver', kind }),
    bodyIdleTimeoutMs: config.passthrough_body_idle_timeout,
  });
  const readiness = createReadiness(deps);
  const handlers = createApp(deps, proxy, readiness);

  const servers: Server[] = [];
  try {
    return await listenAll(config, handlers, logger, servers, proxy);
  } catch (err: unknown) {
    // A listener that cannot bind (address in use, no permission) ends the start: the ones already listening close
    // too, so the process does not stay half up, holding ports. No grace: a start that failed owes no client a
    // finished answer.
    await Promise.all(servers.map((server) => closeGracefully(server, 0)));
    proxy.close();
    throw err;
  }
}

async function listenAll(config: AppDeps['config'], handlers: ReturnType<typeof createApp>, logger: Logger, servers: Server[], proxy: ReturnType<typeof createHomeserverProxy>): Promise<RunningProxy> {
  const client = await listen(createServer(handlers.client), config.listen.host, config.listen.port, logger, 'client');
  servers.push(client);
  // /sync long-polls: the server must not cut requests that the upstream keeps open for minutes.
  client.requestTimeout = 0;
  client.headersTimeout = 60_000;
  client.keepAliveTimeout = 65_000;
  // Beyond this many open client connections new ones are closed at once (a flood must not exhaust file descriptors).
  client.maxConnections = config.max_client_connections;

  let homeserverFacingUrl = urlOf(client);
  if (config.homeserver.listen !== undefined) {
    const facing = await listen(createServer(handlers.homeserverFacing), config.homeserver.listen.host, config.homeserver.listen.port, logger, 'homeserver');
    servers.push(facing);
    homeserverFacingUrl = urlOf(facing);
  }
  let opsUrl: string | undefined;
  if (config.metrics.enabled) {
    const ops = await listen(createServer(handlers.ops), config.metrics.listen.host, config.metrics.listen.port, logger, 'ops');
    servers.push(ops);
    opsUrl = urlOf(ops);
  }

  return {
    clientUrl: urlOf(client),
    homeserverFacingUrl,
    opsUrl,
    async stop(graceMs = 10_000) {
      await Promise.all(servers.map((server) => closeGracefully(server, graceMs)));
      proxy.close();
    },
  };
}

function createReadiness(deps: AppDeps): Readiness {
  return {
    async check() {
      const checks: Record<string, string> = {};
      try {
        await deps.store.ping();
        checks['store'] = 'ok';
      } catch (err: unknown) {
        checks['store'] = `unreachable: ${err instanceof Error ? err.message : String(err)}`;
      }
      try {
        const response = await fetch(new URL('/_matrix/client/versions', deps.config.homeserver.url), { signal: AbortSignal.timeout(3000) });
        checks['homeserver'] = response.ok ? 'ok' : `status ${response.status}`;
      } catch (err: unknown) {
        checks['homeserver'] = `unreachable: ${err instanceof Error ? err.message : String(err)}`;
      }
      return { ok: Object.values(checks).every((value) => value === 'ok'), checks };
    },
  };
}

async function listen(server: Server, host: string, port: number, logger: Logger, face: string): Promise<Server> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  logger.info({ face, url: urlOf(server) }, 'listener.started');
  return server;
}

function urlOf(server: Server): string {
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return `http://${host}:${address.port}`;
}

/**
 * Stop accepting, close idle keep-alive sockets now and each busy one as soon as its response is done, and give
 * the rest `graceMs` before cutting them.
 */
async function closeGracefully(server: Server, graceMs: number): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeIdleConnections();
  // A keep-alive socket becomes idle when its in-flight response ends; it would otherwise linger until keepAliveTimeout.
  const sweeper = setInterval(() => server.closeIdleConnections(), 50);
  const deadline = setTimeout(() => server.closeAllConnections(), graceMs);
  sweeper.unref();
  deadline.unref();
  await closed;
  clearInterval(sweeper);
  clearTimeout(deadline);
}

import { OWN_PREFIX } from '../../src/http/own-prefix.js';
import { freePort } from './free-port.js';
import { HOMESERVER_SECRET, INTEROP_SERVER_NAME, startConfiguredProxy, type InteropProxy } from './interop-stack.js';
import { startRedis, type RunningRedis } from './redis-server.js';
import { startSynapse, type RunningSynapse } from './synapse.js';

/** The URLs of the proxy an OP must know before it starts (to register them for the client). */
export interface ProxyUrls {
  readonly proxyUrl: string;
  readonly callbackUri: string;
  readonly backchannelLogoutUri: string;
}

export interface StartedOp {
  /** The `oidc_providers` entry an admin would write for this OP (without idp_id, which the stack sets). */
  readonly providerBlock: Record<string, unknown>;
  stop(): Promise<void>;
}

export interface OpInteropStack<Op extends StartedOp> extends InteropProxy {
  readonly op: Op;
  readonly synapse: RunningSynapse;
  readonly redis: RunningRedis;
  readonly idpId: string;
}

/**
 * Real Synapse (delegated auth to the proxy), a real OP other than Keycloak (started by `startOp` once the proxy's
 * URLs are known), the proxy on a real Redis — the production path on loopback, for any OP.
 */
export async function startOpInteropStack<Op extends StartedOp>(options: {
  readonly idpId: string;
  readonly startOp: (urls: ProxyUrls) => Promise<Op>;
  readonly passwordLogin: boolean;
  readonly revalidateInterval?: string;
}): Promise<OpInteropStack<Op>> {
  const clientPort = await freePort();
  const facingPort = await freePort();
  const proxyUrl = `http://127.0.0.1:${clientPort}`;
  const urls: ProxyUrls = {
    proxyUrl,
    callbackUri: `${proxyUrl}${OWN_PREFIX}/sso/callback/${options.idpId}`,
    backchannelLogoutUri: `${proxyUrl}${OWN_PREFIX}/backchannel-logout/${options.idpId}`,
  };
  const started = await Promise.allSettled([
    options.startOp(urls),
    startSynapse({ masEndpoint: `http://127.0.0.1:${facingPort}/`, masSecret: HOMESERVER_SECRET, serverName: INTEROP_SERVER_NAME }),
    startRedis(),
  ] as const);
  const cleanups: (() => Promise<void>)[] = [];
  for (const result of started) if (result.status === 'fulfilled') cleanups.push(() => result.value.stop());
  const cleanUp = async () => {
    for (const cleanup of [...cleanups].reverse()) await cleanup().catch(() => undefined);
    cleanups.length = 0;
  };
  const failure = started.find((result) => result.status === 'rejected');
  if (failure !== undefined) {
    await cleanUp();
    throw failure.reason;
  }
  const [op, synapse, redis] = started.map((result) => (result as PromiseFulfilledResult<unknown>).value) as [Op, RunningSynapse, RunningRedis];
  try {
    const raw: Record<string, any> = {
      server_name: synapse.serverName,
      public_baseurl: `${proxyUrl}/`,
      listen: { host: '127.0.0.1', port: clientPort },
      homeserver: { url: synapse.url, mode: 'synapse', secret: HOMESERVER_SECRET, upstream_timeout: '30s', listen: { host: '127.0.0.1', port: facingPort } },
      oidc_providers: [{ idp_id: options.idpId, ...op.providerBlock }],
      password_login: options.passwordLogin ? { enabled: true, idp_id: options.idpId } : { enabled: false },
      sessions: { encryption_key: 'interop-encryption-key-for-tests-only-0123456789', revalidate_interval: options.revalidateInterval ?? '2s' },
      rate_limits: { login_per_ip: { burst: 1000, per_second: 100 }, login_per_account: { burst: 1000, per_second: 100 }, sso_per_ip: { burst: 1000, per_second: 100 } },
      metrics: { enabled: false },
      log: { level: 'debug' },
    };
    const proxy = await startConfiguredProxy(raw, redis);
    cleanups.push(() => proxy.stop());
    return { ...proxy, op, synapse, redis, idpId: options.idpId, stop: cleanUp };
  } catch (error) {
    await cleanUp();
    throw error;
  }
}

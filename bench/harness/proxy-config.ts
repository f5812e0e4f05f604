import type { TestOp } from '../../test/support/test-op.js';

export const SERVER_NAME = 'bench.test';
export const HOMESERVER_SECRET = 'homeserver-shared-secret-for-benchmarks-0123456789';
export const ENCRYPTION_KEY = 'an-encryption-key-for-benchmarks-only-0123456789abcdef';
export const IDP_ID = 'testop';
// The production default (store.key_prefix), so the memory figures are what a deployment pays.
export const SESSION_KEY_PREFIX = 'mcp:';

export interface ProxyConfigOptions {
  readonly homeserverUrl: string;
  /** The client listener's port; known in advance when the OP must register redirect URIs for it. Default any. */
  readonly clientPort?: number;
  /** Port of the homeserver-facing listener (introspection), as in production; default any. */
  readonly homeserverPort?: number;
  readonly redisUrl?: string;
  /** Each scenario keeps its own keys: bindings of one scenario's OP must not meet another's. */
  readonly keyPrefix?: string;
  readonly op?: TestOp;
  /** Log level; default info, as in production. */
  readonly logLevel?: string;
}

/**
 * A production-like configuration: separate homeserver-facing listener, metrics enabled, info logs, Redis when
 * given. Rate limits are raised so that hundreds of logins from one address are measured rather than refused.
 */
export function proxyConfig(options: ProxyConfigOptions): Record<string, unknown> {
  const clientPort = options.clientPort ?? 0;
  return {
    server_name: SERVER_NAME,
    public_baseurl: `http://127.0.0.1:${clientPort === 0 ? 8009 : clientPort}/`,
    listen: { host: '127.0.0.1', port: clientPort },
    homeserver: {
      url: options.homeserverUrl,
      mode: 'synapse',
      secret: HOMESERVER_SECRET,
      listen: { host: '127.0.0.1', port: options.homeserverPort ?? 0 },
    },
    // The format a fresh deployment writes (store.session_format: auto on an empty store): the bench proxies build
    // their dependencies without main.ts's start-up decision, which would otherwise leave them on `compatible`.
    ...(options.redisUrl === undefined ? {} : { store: { redis_url: options.redisUrl, key_prefix: options.keyPrefix ?? SESSION_KEY_PREFIX, session_format: 'compact' } }),
    ...(options.op === undefined
      ? {}
      : {
          oidc_providers: [
            {
              idp_id: IDP_ID,
              idp_name: 'Test OP',
              issuer: options.op.issuer,
              client_id: options.op.clientId,
              client_secret: options.op.clientSecret,
              scopes: ['openid', 'profile', 'email', 'offline_access'],
              password_grant: { enabled: true },
              user_mapping_provider: {
                config: { localpart_template: '{{ user.preferred_username }}', display_name_template: '{{ user.name }}', email_template: '{{ user.email }}' },
              },
            },
          ],
          password_login: { enabled: true, idp_id: IDP_ID },
        }),
    sessions: { encryption_key: ENCRYPTION_KEY },
    rate_limits: {
      login_per_ip: { burst: 1_000_000, per_second: 100_000 },
      login_per_account: { burst: 1_000_000, per_second: 100_000 },
      sso_per_ip: { burst: 1_000_000, per_second: 100_000 },
    },
    metrics: { enabled: true, listen: { host: '127.0.0.1', port: 0 } },
    log: { level: options.logLevel ?? 'info' },
  };
}

import type { Logger } from 'pino';
import type { AppDeps } from './app-deps.js';
import { systemClock, type Clock } from './clock.js';
import type { Config } from './config/schema.js';
import type { HomeserverAdapter } from './provisioning/homeserver-adapter.js';
import { SynapseProvisioning } from './provisioning/synapse.js';
import type { ProviderPolicy } from './identity/account-resolver.js';
import { AppserviceRegistry } from './identity/appservice-registry.js';
import { BindingStore } from './identity/bindings.js';
import { compileUserMapper } from './identity/user-mapping.js';
import type { Metrics } from './observability/metrics.js';
import { createUpstreamProviders } from './oidc/create-upstream-providers.js';
import type { UpstreamProvider } from './oidc/upstream.js';
import { LoginTokenStore } from './sessions/login-tokens.js';
import { deriveSessionKeys } from './sessions/secret-box.js';
import { SessionLifecycle } from './sessions/session-lifecycle.js';
import { SessionStore } from './sessions/session-store.js';
import type { Store } from './store/store.js';
import { LoginThrottle } from './security/login-throttle.js';
import { secretDigest } from './security/shared-secret.js';
import { SsoLoginState } from './sessions/pending-sso-logins.js';
import { createAuthorizationServer } from './oauth/authorization-server.js';

export interface DepsOverrides {
  readonly clock?: Clock;
  readonly homeserver?: HomeserverAdapter;
  readonly providers?: ReadonlyMap<string, UpstreamProvider>;
}

/** Wires every dependency from the validated config. Tests call this too, overriding only what they must. */
export function buildDeps(config: Config, store: Store, logger: Logger, metrics: Metrics, overrides: DepsOverrides = {}): AppDeps {
  const clock = overrides.clock ?? systemClock;
  const keys = deriveSessionKeys(config.sessions.encryption_key);
  const providers = overrides.providers ?? createUpstreamProviders(config.oidc_providers, { logger, clock });
  const homeserver = overrides.homeserver ?? homeserverBackend(config, logger);
  const policies = new Map<string, ProviderPolicy>(
    config.oidc_providers.map((provider) => [
      provider.idp_id,
      {
        idpId: provider.idp_id,
        issuer: provider.issuer,
        mapper: compileUserMapper(provider.idp_id, provider.user_mapping_provider.config, config.server_name),
        attributeRequirements: provider.attribute_requirements,
        allowExistingUsers: provider.allow_existing_users,
        enableRegistration: provider.enable_registration,
      },
    ]),
  );
  const sessions = new SessionStore(store, clock, keys.tokenDerivationKey, logger);
  const lifecycle = new SessionLifecycle({ sessions, homeserver, providers, keys, logger, metrics });
  const oauth =
    config.native_clients === 'serve' ? createAuthorizationServer({ config, clock, store, sessions, lifecycle, providers, keys, logger, metrics }) : undefined;
  return {
    oauth,
    config,
    clock,
    logger,
    metrics,
    store,
    sessions,
    lifecycle,
    loginTokens: new LoginTokenStore(store, logger),
    bindings: new BindingStore(store, clock, logger),
    providers,
    policies,
    homeserver,
    keys,
    appservices: config.appservice_config_files.length === 0 ? AppserviceRegistry.empty() : AppserviceRegistry.load(config.appservice_config_files),
    ssoLogins: new SsoLoginState(store, clock, logger),
    homeserverSecretDigest: secretDigest(config.homeserver.secret),
    adminTokenDigest: config.admin.token === undefined || config.admin.token === '' ? undefined : secretDigest(config.admin.token),
    throttle: new LoginThrottle(store, clock, {
      perIp: { burst: config.rate_limits.login_per_ip.burst, perSecond: config.rate_limits.login_per_ip.per_second },
      perAccount: { burst: config.rate_limits.login_per_account.burst, perSecond: config.rate_limits.login_per_account.per_second },
      ssoPerIp: { burst: config.rate_limits.sso_per_ip.burst, perSecond: config.rate_limits.sso_per_ip.per_second },
    }),
  };
}

/** The one switch over homeserver backends (`homeserver.mode`); the next backend is one more case here. */
function homeserverBackend(config: Config, logger: Logger): HomeserverAdapter {
  switch (config.homeserver.mode) {
    case 'synapse':
      return new SynapseProvisioning({ baseUrl: config.homeserver.url, secret: config.homeserver.secret, timeoutMs: config.homeserver.provisioning_timeout, logger });
  }
}

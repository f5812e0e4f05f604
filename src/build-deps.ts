import type { Logger } from 'pino';
import type { AppDeps } from './app-deps.js';
import { systemClock, type Clock } from './clock.js';
import type { Config } from './config/schema.js';
import type { HomeserverAdapter } from './provisioning/homeserver-adapter.js';
import { SynapseProvisioning } from './provisioning/synapse.js';
import { AppserviceBackend } from './provisioning/appservice.js';
import { JwtLoginBackend } from './provisioning/jwt-login.js';
import { UserPolicy, wholeUserId } from './provisioning/user-policy.js';
import type { AppserviceRegistration, RegistrationResult } from './config/appservice-registrations.js';
import { readRegistrationFiles } from './config/read-registrations.js';
import { ConfigError } from './config/config-error.js';
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
import { SessionStore, type SessionWriteFormat } from './sessions/session-store.js';
import type { Store } from './store/store.js';
import { LoginThrottle } from './security/login-throttle.js';
import { AccountAliases } from './security/account-name.js';
import { secretDigest } from './security/shared-secret.js';
import { SsoLoginState } from './sessions/pending-sso-logins.js';
import { UiaSessions } from './sessions/uia-sessions.js';
import { AccountSessions } from './sessions/account-sessions.js';
import { AppPasswords } from './sessions/app-passwords.js';

export interface DepsOverrides {
  readonly clock?: Clock;
  readonly homeserver?: HomeserverAdapter;
  readonly providers?: ReadonlyMap<string, UpstreamProvider>;
  /**
   * The session format decided at start-up (`decideSessionFormat`). Absent: the configured one, with `auto` taken as
   * compact on the in-memory store (always fresh) and compatible on Redis (safe without the store's decision).
   */
  readonly sessionFormat?: SessionWriteFormat;
}

/**
 * Wires every dependency from the validated config. Tests call this too, overriding only what they must. Async
 * because the OAuth server for native clients (oidc-provider: about 180 modules, some 12 MB of resident memory) is
 * loaded only when the config turns it on.
 */
export async function buildDeps(config: Config, store: Store, logger: Logger, metrics: Metrics, overrides: DepsOverrides = {}): Promise<AppDeps> {
  const clock = overrides.clock ?? systemClock;
  const keys = deriveSessionKeys(
    config.sessions.encryption_key,
    config.sessions.previous_encryption_keys.map((entry) => entry.key),
    () => metrics.sealedOpenedWithPreviousKey.inc(),
  );
  const providers = overrides.providers ?? createUpstreamProviders(config.oidc_providers, { logger, clock });
  // The bridges' registration files, read once: the homeserver backend's user policy and the registry take them.
  const registrations = await readRegistrationFiles(config.appservice_config_files);
  const backend = await homeserverBackend(config, registrations, logger);
  const homeserver = overrides.homeserver ?? backend.adapter;
  const policies = new Map<string, ProviderPolicy>(
    config.oidc_providers.map((provider) => [
      provider.idp_id,
      {
        idpId: provider.idp_id,
        issuer: provider.issuer,
        mapper: compileUserMapper(provider.idp_id, provider.user_mapping_provider.config, config.server_name, { caseFolding: provider.localpart_case_folding }),
        attributeRequirements: provider.attribute_requirements,
        allowExistingUsers: provider.allow_existing_users,
        enableRegistration: provider.enable_registration,
      },
    ]),
  );
  const setting = config.store.session_format;
  const writeFormat = overrides.sessionFormat ?? (setting !== 'auto' ? setting : store.kind === 'memory' ? 'compact' : 'compatible');
  const sessions = new SessionStore(store, clock, keys.tokenDerivationKeys, logger, { writeFormat });
  const lifecycle = new SessionLifecycle({ sessions, store, homeserver, providers, keys, logger, metrics });
  const appPasswords = new AppPasswords(store, clock, logger);
  const bindings = new BindingStore(store, clock, logger);
  const oauth =
    config.native_clients === 'serve'
      ? (await loadAuthorizationServer()).createAuthorizationServer({ config, clock, store, sessions, lifecycle, providers, keys, logger, metrics, appPasswords, bindings, homeserver })
      : undefined;
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
    bindings,
    providers,
    policies,
    homeserver,
    keys,
    appservices: AppserviceRegistry.fromRegistrations(registrations),
    ssoLogins: new SsoLoginState(store, clock, logger),
    homeserverSecretDigests:
      config.homeserver.secret === undefined ? [] : [config.homeserver.secret, ...config.homeserver.previous_secrets.map((entry) => entry.secret)].map(secretDigest),
    ownAsTokenDigest: backend.ownAsToken === undefined ? undefined : secretDigest(backend.ownAsToken),
    uia: new UiaSessions(store, clock, logger),
    accountSessions: new AccountSessions(store, clock, logger),
    appPasswords,
    adminTokenDigest: config.admin.token === undefined || config.admin.token === '' ? undefined : secretDigest(config.admin.token),
    // An e-mail → account alias lives as long as a month without a login that confirms it.
    accountAliases: new AccountAliases(store, 30 * 24 * 3600_000),
    throttle: new LoginThrottle(store, clock, {
      perIp: { burst: config.rate_limits.login_per_ip.burst, perSecond: config.rate_limits.login_per_ip.per_second },
      perAccount: { burst: config.rate_limits.login_per_account.burst, perSecond: config.rate_limits.login_per_account.per_second },
      ssoPerIp: { burst: config.rate_limits.sso_per_ip.burst, perSecond: config.rate_limits.sso_per_ip.per_second },
      deviceUserCodePerIp: { burst: config.rate_limits.device_user_code_per_ip.burst, perSecond: config.rate_limits.device_user_code_per_ip.per_second },
      ipv6PrefixLength: config.rate_limits.ipv6_prefix_length,
    }),
  };
}

/** The one switch over homeserver backends (`homeserver.mode`); the next backend is one more case here. */
async function homeserverBackend(config: Config, registrations: readonly RegistrationResult[], logger: Logger): Promise<{ adapter: HomeserverAdapter; ownAsToken?: string }> {
  const hs = config.homeserver;
  switch (hs.mode) {
    case 'delegated':
      return {
        adapter: new SynapseProvisioning({
          baseUrl: hs.url,
          secret: hs.secret ?? '',
          previousSecrets: hs.previous_secrets.map((entry) => entry.secret),
          timeoutMs: hs.provisioning_timeout,
          logger,
        }),
      };
    case 'appservice': {
      const own = await readOne(hs.appservice?.registration_file ?? '', 'homeserver.appservice.registration_file');
      const policy = userPolicy(registrations, hs.appservice?.deny_users ?? [], hs.appservice?.allow_users, own.senderLocalpart);
      const adapter = new AppserviceBackend({
        baseUrl: hs.url,
        serverName: config.server_name,
        flavour: hs.flavour,
        asToken: own.asToken,
        policy,
        ...(hs.admin_token === undefined ? {} : { adminToken: hs.admin_token }),
        timeoutMs: hs.provisioning_timeout,
        logger,
      });
      return { adapter, ownAsToken: own.asToken };
    }
    case 'jwt': {
      const jwt = hs.jwt;
      if (jwt === undefined) throw new ConfigError(['homeserver.jwt: is required with mode: jwt']);
      const adapter = new JwtLoginBackend({
        baseUrl: hs.url,
        serverName: config.server_name,
        flavour: hs.flavour,
        jwt,
        policy: userPolicy(registrations, jwt.deny_users, jwt.allow_users, undefined),
        ...(hs.admin_token === undefined ? {} : { adminToken: hs.admin_token }),
        timeoutMs: hs.provisioning_timeout,
        logger,
      });
      return { adapter };
    }
  }
}

/** The registration file was checked by the config loader; one changed since is refused in the same words. */
async function readOne(path: string, key: string): Promise<AppserviceRegistration> {
  const [result] = await readRegistrationFiles([path]);
  if (result === undefined || !result.ok) throw new ConfigError((result?.problems ?? ['missing']).map((problem) => `${key}: ${problem}`));
  return result.registration;
}

/** Deny every namespace and sender of the other registrations (bridges), then the configured rules. */
function userPolicy(registrations: readonly RegistrationResult[], deny: readonly string[], allow: readonly string[] | undefined, ownSender: string | undefined): UserPolicy {
  const others = registrations.flatMap((result) => (result.ok ? [result.registration] : []));
  return new UserPolicy({
    appserviceNamespaces: others.flatMap((other) => other.userNamespaces),
    appserviceSenders: others.map((other) => other.senderLocalpart),
    ...(ownSender === undefined ? {} : { ownSender }),
    deny: deny.map(wholeUserId),
    ...(allow === undefined ? {} : { allow: allow.map(wholeUserId) }),
  });
}

/** The OAuth server (oidc-provider) is loaded only for `native_clients: serve`; an install without it is named. */
async function loadAuthorizationServer(): Promise<typeof import('./oauth/authorization-server.js')> {
  try {
    return await import('./oauth/authorization-server.js');
  } catch (err: unknown) {
    throw new Error(`native_clients: serve needs the proxy's OAuth server (the oidc-provider package), which could not be loaded: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
}

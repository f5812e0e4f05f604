import type { Logger } from 'pino';
import type { Clock } from './clock.js';
import type { Config } from './config/schema.js';
import type { HomeserverAdapter } from './provisioning/homeserver-adapter.js';
import type { ProviderPolicy } from './identity/account-resolver.js';
import type { AppserviceRegistry } from './identity/appservice-registry.js';
import type { BindingStore } from './identity/bindings.js';
import type { Metrics } from './observability/metrics.js';
import type { UpstreamProvider } from './oidc/upstream.js';
import type { LoginTokenStore } from './sessions/login-tokens.js';
import type { SessionKeys } from './sessions/secret-box.js';
import type { SessionLifecycle } from './sessions/session-lifecycle.js';
import type { SessionStore } from './sessions/session-store.js';
import type { Store } from './store/store.js';
import type { LoginThrottle } from './security/login-throttle.js';
import type { AccountAliases } from './security/account-name.js';
import type { SsoLoginState } from './sessions/pending-sso-logins.js';
import type { Context } from 'koa';
import type Provider from 'oidc-provider';
import type { SignInStore } from './sessions/oauth-sign-ins.js';
import type { UiaSessions } from './sessions/uia-sessions.js';
import type { AccountSessions } from './sessions/account-sessions.js';
import type { AppPasswords } from './sessions/app-passwords.js';

/**
 * Everything a FACE (a route handler) may use, built once by build-deps.ts (or by a test) and passed in: no module
 * singletons. Model modules never take this: each declares the narrow deps it needs (LifecycleDeps,
 * RevalidationDeps, OpLogoutDeps), which this satisfies.
 */
export interface AppDeps {
  readonly config: Config;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly store: Store;
  readonly sessions: SessionStore;
  readonly lifecycle: SessionLifecycle;
  readonly loginTokens: LoginTokenStore;
  readonly bindings: BindingStore;
  readonly providers: ReadonlyMap<string, UpstreamProvider>;
  readonly policies: ReadonlyMap<string, ProviderPolicy>;
  readonly homeserver: HomeserverAdapter;
  readonly keys: SessionKeys;
  readonly appservices: AppserviceRegistry;
  readonly throttle: LoginThrottle;
  /** E-mail → account, learnt at login, so the throttle counts an account once whatever name it is typed by. */
  readonly accountAliases: AccountAliases;
  readonly ssoLogins: SsoLoginState;
  /** The OAuth 2.0 server for native clients; only with `native_clients: serve`. */
  readonly oauth: AuthorizationServer | undefined;
  /**
   * Digests of `homeserver.secret` and `homeserver.previous_secrets` (introspection callers), computed once; empty
   * outside delegated mode.
   */
  readonly homeserverSecretDigests: readonly Buffer[];
  /**
   * Digest of the proxy's own as_token (appservice mode): a client presenting it is refused, so it can never be
   * used through the proxy even if it leaked.
   */
  readonly ownAsTokenDigest: Buffer | undefined;
  /** User-Interactive Auth sessions of the proxy's own device deletion. */
  readonly uia: UiaSessions;
  /** Signed-in visits of the account page. */
  readonly accountSessions: AccountSessions;
  /** App passwords of the account page (issue 15). */
  readonly appPasswords: AppPasswords;
  /** Digest of `admin.token`; undefined when no admin token is set (then no admin route exists). */
  readonly adminTokenDigest: Buffer | undefined;
}

/** The OAuth 2.0 server for native clients (src/oauth/authorization-server.ts builds it). */
export interface AuthorizationServer {
  readonly provider: Provider;
  readonly issuer: string;
  readonly publicBaseUrl: string;
  readonly signIns: SignInStore;
  /** Hands the request to oidc-provider (the path is under OAUTH_PREFIX). */
  handle(ctx: Context): Promise<void>;
}

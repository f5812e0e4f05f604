import type { AppDeps } from './app-deps.js';
import type { NativeClientMode } from './config/schema.js';
import { getAccountPage } from './account/account-page.js';
import { accountPaths } from './account/account-paths.js';
import { postAccountSignOut } from './account/account-sign-out.js';
import { getAccountSignIn } from './account/account-sign-in.js';
import { postCrossSigningReset } from './account/cross-signing-reset.js';
import { postDeviceSignOut } from './account/device-sign-out.js';
import { postAppPasswordCreate } from './account/app-password-create.js';
import { postAppPasswordRevoke } from './account/app-password-revoke.js';
import { adminEndpoints, requireAdminToken } from './admin/admin-routes.js';
import { postBackchannelLogout } from './backchannel/backchannel-logout.js';
import { postAccountDeactivate } from './compat/account-deactivate.js';
import { postAccountPassword } from './compat/account-password.js';
import { deleteDevice } from './compat/delete-device.js';
import { postDeleteDevices } from './compat/delete-devices.js';
import { getLoginFlows } from './compat/login-flows.js';
import { postLogin } from './compat/login.js';
import { postLogout } from './compat/logout.js';
import { postLogoutAll } from './compat/logout-all.js';
import { postRefresh } from './compat/refresh.js';
import { getSsoCallback } from './compat/sso-callback.js';
import { getSsoConfirm, postSsoConfirm } from './compat/sso-confirm.js';
import { getSsoRedirect } from './compat/sso-redirect.js';
import { getUiaSsoFallback } from './compat/uia-sso-fallback.js';
import { getClientWellKnown } from './compat/well-known-client.js';
import { postIntrospect } from './homeserver/introspect.js';
import { getMetadata } from './homeserver/metadata.js';
import { AUTH_DISCOVERY_PATHS, getHiddenAuthMetadata } from './oauth/hidden-auth-metadata.js';
import { OAUTH_PREFIX, OWN_PREFIX } from './http/own-prefix.js';
import { OAUTH_ROUTES } from './oauth/oauth-routes.js';
import { getOAuthInteraction, getOAuthInteractionSsoDone, postOAuthInteraction } from './oauth/interaction.js';
import { postOAuthInteractionPassword } from './oauth/interaction-password.js';
import { getOAuthServerMetadata, getServedAuthMetadata } from './oauth/discovery.js';
import { atOAuthProvider } from './oauth/provider-endpoint.js';
import { postOAuthRevoke } from './oauth/revoke.js';
import { postDeviceVerification } from './oauth/device-verification.js';
import type { Listener, OwnedRoute } from './http/owned-routes.js';
import { paramOf } from './http/request-state.js';
import { getHealth, getMetrics, getReady, type Readiness } from './ops/health.js';

export type Route = OwnedRoute<AppDeps>;

/** What decides which routes exist and where: a separate homeserver-facing listener, and an admin token. */
export interface ListenerShape {
  readonly separateHomeserverListener: boolean;
  readonly adminApi: boolean;
  /** `hide` adds the auth-metadata routes to the client listener (answered with 404). */
  readonly nativeClients: NativeClientMode;
  /** `well_known_client.serve`: the proxy answers client discovery itself. */
  readonly wellKnownClient: boolean;
}

export function listenerShapeOf(deps: Pick<AppDeps, 'config' | 'adminTokenDigest'>): ListenerShape {
  return {
    separateHomeserverListener: deps.config.homeserver.listen !== undefined,
    adminApi: deps.adminTokenDigest !== undefined,
    nativeClients: deps.config.native_clients,
    wellKnownClient: deps.config.well_known_client.serve,
  };
}

/** Legacy clients use r0, current ones v3 (Matrix C-S spec, "API standards"). */
const CLIENT_VERSIONS = ['v3', 'r0'] as const;

/**
 * THE table of what the proxy answers itself, on which listener, in which style. app.ts builds every router and the
 * client listener's pass-through decision from it; test/unit/owned-routes.test.ts checks that every path here is
 * answered by the proxy and none reaches the homeserver.
 *
 * Listeners follow the config: without `homeserver.listen`, what the homeserver calls is served on the client
 * listener and the admin API moves to the operators' listener (loopback by default), never the public one.
 */
export function ownedRoutes(shape: ListenerShape, readiness: Readiness): Route[] {
  const { separateHomeserverListener } = shape;
  // The homeserver-facing app always has them (server.ts only listens with it when homeserver.listen is set).
  const homeserverFacing: readonly Listener[] = separateHomeserverListener ? ['homeserver'] : ['homeserver', 'client'];
  const adminListeners: readonly Listener[] = separateHomeserverListener ? ['homeserver'] : ['homeserver', 'ops'];

  const routes: Route[] = [];
  for (const version of CLIENT_VERSIONS) {
    const base = `/_matrix/client/${version}`;
    routes.push(
      { method: 'GET', path: `${base}/login`, listener: 'client', style: 'matrix', metric: 'login', handler: getLoginFlows },
      { method: 'POST', path: `${base}/login`, listener: 'client', style: 'matrix', metric: 'login', handler: postLogin },
      { method: 'POST', path: `${base}/logout`, listener: 'client', style: 'matrix', metric: 'logout', handler: postLogout },
      { method: 'POST', path: `${base}/logout/all`, listener: 'client', style: 'matrix', metric: 'logout', handler: postLogoutAll },
      { method: 'POST', path: `${base}/refresh`, listener: 'client', style: 'matrix', metric: 'refresh', handler: postRefresh },
      // The trailing-slash form Element iOS sends arrives here too: the dispatcher routes on the normalised path.
      { method: 'GET', path: `${base}/login/sso/redirect`, listener: 'client', style: 'page', metric: 'sso', handler: (ctx, d) => getSsoRedirect(ctx, d, version, undefined) },
      { method: 'GET', path: `${base}/login/sso/redirect/:idpId`, listener: 'client', style: 'page', metric: 'sso', handler: (ctx, d) => getSsoRedirect(ctx, d, version, paramOf(ctx, 'idpId')) },
      // Device deletion with User-Interactive Auth at the proxy; GET and PUT of a device stay the homeserver's.
      { method: 'DELETE', path: `${base}/devices/:deviceId`, listener: 'client', style: 'matrix', metric: 'devices', handler: deleteDevice, methodOnly: true },
      { method: 'POST', path: `${base}/delete_devices`, listener: 'client', style: 'matrix', metric: 'devices', handler: postDeleteDevices },
      { method: 'GET', path: `${base}/auth/m.login.sso/fallback/web`, listener: 'client', style: 'page', metric: 'devices', handler: getUiaSsoFallback },
      { method: 'POST', path: `${base}/account/password`, listener: 'client', style: 'matrix', metric: 'account', handler: postAccountPassword },
      { method: 'POST', path: `${base}/account/deactivate`, listener: 'client', style: 'matrix', metric: 'account', handler: postAccountDeactivate },
    );
  }
  routes.push(
    // matrix-js-sdk falls back to the v1 path of /refresh.
    { method: 'POST', path: '/_matrix/client/v1/refresh', listener: 'client', style: 'matrix', metric: 'refresh', handler: postRefresh },
    { method: 'GET', path: `${OWN_PREFIX}/sso/callback/:idpId`, listener: 'client', style: 'page', metric: 'sso', handler: getSsoCallback },
    { method: 'GET', path: `${OWN_PREFIX}/sso/confirm/:id`, listener: 'client', style: 'page', metric: 'sso', handler: getSsoConfirm },
    { method: 'POST', path: `${OWN_PREFIX}/sso/confirm/:id`, listener: 'client', style: 'page', metric: 'sso', handler: postSsoConfirm },
    // The account page (src/account/): HTML, a cookie session of its own, CSRF-checked forms.
    { method: 'GET', path: accountPaths.page, listener: 'client', style: 'page', metric: 'account', handler: getAccountPage },
    { method: 'GET', path: accountPaths.signIn, listener: 'client', style: 'page', metric: 'account', handler: getAccountSignIn },
    { method: 'POST', path: accountPaths.deviceSignOut, listener: 'client', style: 'page', metric: 'account', handler: postDeviceSignOut },
    { method: 'POST', path: accountPaths.crossSigningReset, listener: 'client', style: 'page', metric: 'account', handler: postCrossSigningReset },
    { method: 'POST', path: accountPaths.appPasswordCreate, listener: 'client', style: 'page', metric: 'account', handler: postAppPasswordCreate },
    { method: 'POST', path: accountPaths.appPasswordRevoke, listener: 'client', style: 'page', metric: 'account', handler: postAppPasswordRevoke },
    { method: 'POST', path: accountPaths.signOut, listener: 'client', style: 'page', metric: 'account', handler: postAccountSignOut },
    { method: 'POST', path: `${OWN_PREFIX}/backchannel-logout/:idpId`, listener: 'client', style: 'oauth', metric: 'backchannel_logout', handler: postBackchannelLogout },
  );
  if (shape.nativeClients === 'hide') {
    for (const path of AUTH_DISCOVERY_PATHS) {
      routes.push({ method: 'GET', path, listener: 'client', style: 'matrix', metric: 'oauth', handler: getHiddenAuthMetadata });
    }
  }
  if (shape.nativeClients === 'serve') {
    routes.push(...oauthServerRoutes());
    for (const path of AUTH_DISCOVERY_PATHS) {
      routes.push({ method: 'GET', path, listener: 'client', style: 'matrix', metric: 'oauth', handler: getServedAuthMetadata });
    }
  }
  if (shape.wellKnownClient) {
    routes.push({ method: 'GET', path: '/.well-known/matrix/client', listener: 'client', style: 'matrix', metric: 'discovery', handler: getClientWellKnown });
  }
  for (const listener of homeserverFacing) {
    routes.push(
      { method: 'GET', path: '/.well-known/openid-configuration', listener, style: 'oauth', metric: 'introspection', handler: getMetadata },
      { method: 'POST', path: '/oauth2/introspect', listener, style: 'oauth', metric: 'introspection', handler: postIntrospect },
    );
  }
  for (const listener of ['client', 'homeserver', 'ops'] as const) {
    routes.push(
      { method: 'GET', path: '/health', listener, style: 'matrix', metric: 'ops', handler: getHealth },
      { method: 'GET', path: '/ready', listener, style: 'matrix', metric: 'ops', handler: (ctx) => getReady(ctx, readiness, listener !== 'client') },
    );
  }
  routes.push({ method: 'GET', path: '/metrics', listener: 'ops', style: 'matrix', metric: 'ops', handler: getMetrics });
  if (shape.adminApi) {
    for (const endpoint of adminEndpoints) {
      for (const listener of adminListeners) {
        routes.push({
        method: endpoint.method,
        path: endpoint.path,
        listener,
        style: 'matrix',
        metric: 'admin',
        handler: async (ctx, d) => {
          requireAdminToken(ctx, d);
          await endpoint.handler(ctx, d);
        },
      });
      }
    }
  }
  return routes;
}

/**
 * native_clients: serve — the OAuth 2.0 server under the issuer (public_baseurl + OAUTH_PREFIX), on the client
 * listener. oidc-provider answers the protocol endpoints; discovery, revocation and the browser steps are the proxy's.
 */
function oauthServerRoutes(): Route[] {
  const at = (path: string) => `${OAUTH_PREFIX}${path}`;
  const oauth = (method: Route['method'], path: string, handler: Route['handler']): Route => ({ method, path: at(path), listener: 'client', style: 'oauth', metric: 'oauth', handler });
  const page = (method: Route['method'], path: string, handler: Route['handler']): Route => ({ method, path: at(path), listener: 'client', style: 'page', metric: 'oauth', handler });
  return [
    oauth('GET', '/.well-known/openid-configuration', getOAuthServerMetadata),
    oauth('GET', '/.well-known/oauth-authorization-server', getOAuthServerMetadata),
    page('GET', OAUTH_ROUTES.authorization, atOAuthProvider),
    page('POST', OAUTH_ROUTES.authorization, atOAuthProvider),
    page('GET', `${OAUTH_ROUTES.authorization}/:uid`, atOAuthProvider),
    oauth('POST', OAUTH_ROUTES.token, atOAuthProvider),
    oauth('POST', OAUTH_ROUTES.registration, atOAuthProvider),
    oauth('GET', OAUTH_ROUTES.jwks, atOAuthProvider),
    oauth('POST', OAUTH_ROUTES.revocation, postOAuthRevoke),
    // RFC 8628: the device asks for codes (oidc-provider); the user types one on the proxy's pages, then signs in
    // through the interaction below and comes back to /device/:uid.
    oauth('POST', OAUTH_ROUTES.deviceAuthorization, atOAuthProvider),
    page('GET', OAUTH_ROUTES.codeVerification, atOAuthProvider),
    page('POST', OAUTH_ROUTES.codeVerification, postDeviceVerification),
    page('GET', `${OAUTH_ROUTES.codeVerification}/:uid`, atOAuthProvider),
    page('GET', `${OAUTH_ROUTES.interaction}/:uid`, getOAuthInteraction),
    page('POST', `${OAUTH_ROUTES.interaction}/:uid`, postOAuthInteraction),
    page('GET', `${OAUTH_ROUTES.interaction}/:uid/sso-done`, getOAuthInteractionSsoDone),
    page('POST', `${OAUTH_ROUTES.interaction}/:uid/password`, postOAuthInteractionPassword),
  ];
}

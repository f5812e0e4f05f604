import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { MatrixError } from '../errors/matrix-error.js';
import { bearerTokenOf } from '../http/access-token.js';
import { bodyLimitsOf, readJsonBody } from '../http/body.js';
import { clientAddress, logOf } from '../http/request-state.js';
import { provisionUser } from '../identity/account-provisioning.js';
import { AppserviceRegistry } from '../identity/appservice-registry.js';
import { redeemLoginToken, signInChecks } from '../sessions/op-logouts.js';
import { SessionStartRefused, startRefusalText } from '../sessions/session-lifecycle.js';
import type { Binding } from '../identity/bindings.js';
import type { SessionOrigin } from '../sessions/session.js';
import type { IssuedTokens } from '../sessions/session-store.js';
import { randomString } from '../sessions/tokens.js';
import { parseLoginRequest, type AppserviceLogin, type LoginRequest, type PasswordLogin, type TokenLogin } from './login-request.js';
import { relayAppserviceLogin } from './appservice-login-relay.js';
import { appPasswordSignIn } from './app-password-login.js';
import { admitPasswordAttempt, invalidCredentials, opPasswordSignIn } from './password-sign-in.js';
import { isAppPasswordFormat } from '../sessions/app-passwords.js';

/**
 * POST /login: m.login.password checked at the OP (password grant), m.login.token from the SSO bridge, and
 * m.login.application_service for bridges; every branch ends in the same session start.
 */
export async function postLogin(ctx: Context, deps: AppDeps): Promise<void> {
  const body = await readJsonBody(ctx, bodyLimitsOf(deps.config));
  const homeserverIssuesTokens = deps.homeserver.tokens !== undefined;
  const request = parseLoginRequest(body, {
    serverName: deps.config.server_name,
    passwordLogin: deps.config.password_login.enabled || deps.config.app_passwords.enabled,
    appserviceLogin: deps.appservices.enabled || homeserverIssuesTokens,
  });
  if (request.type === 'm.login.application_service' && homeserverIssuesTokens) return relayAppserviceLogin(ctx, deps, body);
  switch (request.type) {
    case 'm.login.password':
      return passwordLogin(ctx, deps, request);
    case 'm.login.token':
      return tokenLogin(ctx, deps, request);
    case 'm.login.application_service':
      return appserviceLogin(ctx, deps, request);
  }
}

async function passwordLogin(ctx: Context, deps: AppDeps, request: PasswordLogin): Promise<void> {
  const { account: who, admit } = await admitPasswordAttempt(ctx, deps, request.identifier, request.password);

  // An app password is recognised by its prefix and checked here, BEFORE (and instead of) the OP's password grant.
  if (deps.config.app_passwords.enabled && isAppPasswordFormat(request.password)) {
    let signedIn;
    try {
      signedIn = await appPasswordSignIn(deps, who, request.password, invalidCredentials);
    } catch (err: unknown) {
      deps.metrics.logins.inc({ type: 'app_password', outcome: err instanceof MatrixError && err.status === 403 ? 'rejected' : 'error' });
      throw err;
    }
    await completeLogin(ctx, deps, request, signedIn.localpart, signedIn.origin);
    deps.metrics.logins.inc({ type: 'app_password', outcome: 'ok' });
    return;
  }
  // App passwords alone enabled: any other password has nowhere to be checked.
  if (!deps.config.password_login.enabled) throw invalidCredentials();

  await opPasswordSignIn(ctx, deps, who, request.password, admit, (signedIn) => completeLogin(ctx, deps, request, signedIn.localpart, signedIn.origin, signedIn.binding), {
    bindingCheckedAtWrite: true,
  });
  deps.metrics.logins.inc({ type: 'password', outcome: 'ok' });
}

async function tokenLogin(ctx: Context, deps: AppDeps, request: TokenLogin): Promise<void> {
  const redeemed = await redeemLoginToken(deps, request.token);
  if (!redeemed.ok && redeemed.reason === 'deactivated') throw new MatrixError(403, 'M_USER_DEACTIVATED', 'This account has been deactivated');
  if (!redeemed.ok) {
    deps.metrics.logins.inc({ type: 'token', outcome: 'rejected' });
    throw new MatrixError(403, 'M_FORBIDDEN', 'Invalid login token');
  }
  const { grant, binding } = redeemed;
  await completeLogin(ctx, deps, request, grant.localpart, grant.origin, binding);
  deps.metrics.logins.inc({ type: 'token', outcome: 'ok' });
}

async function appserviceLogin(ctx: Context, deps: AppDeps, request: AppserviceLogin): Promise<void> {
  const asToken = bearerTokenOf(ctx);
  const appservice = asToken === undefined ? undefined : deps.appservices.byToken(asToken);
  if (appservice === undefined) throw new MatrixError(403, 'M_FORBIDDEN', 'Invalid application service token');
  const who = request.identifier;
  const notInNamespace = () => new MatrixError(400, 'M_EXCLUSIVE', 'The user is not in the namespace of this application service');
  if (who.kind !== 'localpart') throw notInNamespace();
  if (!AppserviceRegistry.mayActAs(appservice, `@${who.name}:${deps.config.server_name}`, who.name)) throw notInNamespace();
  await provisionUser(deps.homeserver, who.name, undefined);
  await completeLogin(ctx, deps, request, who.name, { kind: 'appservice', appserviceId: appservice.id });
  deps.metrics.logins.inc({ type: 'appservice', outcome: 'ok' });
}

/** Device, session, tokens, response: the part every login type shares. */
async function completeLogin(ctx: Context, deps: AppDeps, request: LoginRequest, localpart: string, origin: SessionOrigin, binding?: Binding): Promise<void> {
  const deviceId = request.deviceId ?? randomDeviceId();
  const lifetime = request.refreshToken ? deps.config.sessions.refreshable_access_token_lifetime : undefined;
  let issued: IssuedTokens;
  try {
    issued = await deps.lifecycle.start(
      {
        localpart,
        deviceId,
        ...(request.initialDeviceDisplayName === undefined ? {} : { deviceDisplayName: request.initialDeviceDisplayName }),
        origin,
        ip: clientAddress(ctx),
        ...(ctx.get('user-agent') === '' ? {} : { userAgent: ctx.get('user-agent') }),
        ...(lifetime === undefined ? {} : { refreshableLifetimeMs: lifetime }),
      },
      {
        freshDevice: request.deviceId === undefined,
        check: signInChecks(deps.bindings, origin, binding),
      },
    );
  } catch (err: unknown) {
    if (err instanceof SessionStartRefused) {
      throw new MatrixError(403, 'M_FORBIDDEN', startRefusalText(err.reason), {}, err);
    }
    throw err;
  }
  logOf(ctx, deps.logger).info({ event: 'login.ok', localpart, device_id: deviceId, kind: origin.kind }, 'login.ok');
  ctx.set('Cache-Control', 'no-store');
  ctx.body = {
    user_id: `@${localpart}:${deps.config.server_name}`,
    access_token: issued.accessToken,
    device_id: deviceId,
    ...(issued.refreshToken === undefined || lifetime === undefined ? {} : { refresh_token: issued.refreshToken, expires_in_ms: lifetime }),
    home_server: deps.config.server_name,
    well_known: { 'm.homeserver': { base_url: deps.config.public_baseurl } },
  };
}

const DEVICE_ID_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ';

/** Ten upper-case letters, like Synapse's generated device ids. */
function randomDeviceId(): string {
  return randomString(DEVICE_ID_ALPHABET, 10);
}

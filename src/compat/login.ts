import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { MatrixError } from '../errors/matrix-error.js';
import { bearerTokenOf } from '../http/access-token.js';
import { bodyLimitsOf, readJsonBody } from '../http/body.js';
import { clientAddress, logOf } from '../http/request-state.js';
import { resolveAccount } from '../identity/account-resolver.js';
import { provisionAccount, provisionUser } from '../identity/account-provisioning.js';
import { AppserviceRegistry } from '../identity/appservice-registry.js';
import { UpstreamError, type UpstreamGrant, type UpstreamProvider } from '../oidc/upstream.js';
import { loggedOutAtOpSince, loginGrantStillValid } from '../sessions/op-logouts.js';
import type { SessionOrigin } from '../sessions/session.js';
import { randomString } from '../sessions/tokens.js';
import { isPlausiblePassword } from '../security/account-name.js';
import { parseLoginRequest, type AppserviceLogin, type LoginRequest, type PasswordLogin, type TokenLogin } from './login-request.js';
import { accountRefusal, resolveOrRefuse } from './sign-in.js';
import { relayAppserviceLogin } from './appservice-login-relay.js';
import { appPasswordSignIn } from './app-password-login.js';
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

/** One body for every credential failure: no user enumeration. */
function invalidCredentials(cause?: unknown): MatrixError {
  return new MatrixError(403, 'M_FORBIDDEN', 'Invalid username/password', {}, cause);
}

async function passwordLogin(ctx: Context, deps: AppDeps, request: PasswordLogin): Promise<void> {
  const who = request.identifier;
  // Names that are no account and passwords no OP would take still cost a per-IP attempt, then get the one 403 every
  // credential failure gets: never a request to the OP, never a 5xx (issue 12 #4).
  if (who.kind === 'foreign_server' || who.kind === 'malformed' || !isPlausiblePassword(request.password)) {
    await deps.throttle.check(clientAddress(ctx), undefined);
    deps.metrics.logins.inc({ type: 'password', outcome: 'rejected' });
    throw invalidCredentials();
  }

  // One bucket per account, whatever the spelling (security/account-name.ts); every OP call takes one attempt.
  const accountKey = await deps.accountAliases.throttleKey(who);
  const admit = () => deps.throttle.check(clientAddress(ctx), accountKey);
  await admit();

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

  const idpId = deps.config.password_login.idp_id;
  const provider = idpId === undefined ? undefined : deps.providers.get(idpId);
  const policy = idpId === undefined ? undefined : deps.policies.get(idpId);
  // The config loader refuses a password_login.idp_id that names no provider; this is a bug if it happens.
  if (provider === undefined || policy === undefined) throw new Error('password_login.idp_id names no provider');

  const typed = who.kind === 'localpart' ? who.name : who.address;
  let grant: UpstreamGrant;
  let opUsername: string;
  try {
    ({ grant, opUsername } = await passwordGrant(deps, provider, policy.issuer, who, typed, request.password, admit));
  } catch (err: unknown) {
    const refused = err instanceof UpstreamError && credentialsRefused(err);
    deps.metrics.logins.inc({ type: 'password', outcome: refused ? 'rejected' : 'error' });
    if (refused) throw invalidCredentials(err);
    throw err;
  }

  const account = await resolveOrRefuse(ctx, deps, policy.idpId, () => resolveAccount(policy, grant, deps, opUsername), accountRefusal, grant);
  await provisionAccount(deps.homeserver, account, deps.bindings);
  await deps.accountAliases.remember(verifiedAddresses(who, grant), account.localpart);

  const origin: SessionOrigin = {
    kind: 'password',
    idpId: policy.idpId,
    issuer: policy.issuer,
    sub: grant.sub,
    ...(grant.sid === undefined ? {} : { sid: grant.sid }),
    ...(grant.refreshToken === undefined ? {} : { sealedOpRefreshToken: deps.keys.seal(grant.refreshToken) }),
    lastValidatedAt: deps.clock.now(),
  };
  await completeLogin(ctx, deps, request, account.localpart, origin);
  deps.metrics.logins.inc({ type: 'password', outcome: 'ok' });
}

/**
 * The OP is asked about the name the user typed, never first about another subject's OP user name: a localpart
 * squatted by someone else must not send the rightful user's password to the squatter's account (issue 12 #2). Only
 * when the OP refuses the typed name, and the typed localpart's binding remembers a different OP user name (a
 * localpart made from another claim, e.g. the e-mail), is that name — the one of the account the user named — tried.
 */
async function passwordGrant(
  deps: AppDeps,
  provider: UpstreamProvider,
  issuer: string,
  who: PasswordLogin['identifier'],
  typed: string,
  password: string,
  admit: () => Promise<void>,
): Promise<{ grant: UpstreamGrant; opUsername: string }> {
  try {
    return { grant: await provider.passwordGrant(typed, password), opUsername: typed };
  } catch (err: unknown) {
    if (!(err instanceof UpstreamError && credentialsRefused(err)) || who.kind !== 'localpart') throw err;
    const bound = await deps.bindings.findByLocalpart(who.name);
    if (bound?.opUsername === undefined || bound.issuer !== issuer || bound.opUsername === typed) throw err;
    // A second password attempt at the OP: it takes its own token from the throttle, like any other.
    await admit();
    return { grant: await provider.passwordGrant(bound.opUsername, password), opUsername: bound.opUsername };
  }
}

/**
 * Which OP answers to the password grant mean "these credentials are refused" (403, not 503): RFC 6749 §5.2
 * invalid_grant, and invalid_request with a 4xx — the proxy always sends a complete grant request, so what an OP
 * objects to is what the user typed (an empty or over-long user name or password). Decided here, at the route, from
 * the OAuth code oidc/ records (which maps such an answer to `unavailable` for the other grants). Client-registration
 * errors (invalid_client, unauthorized_client) and outages stay 503.
 */
function credentialsRefused(err: UpstreamError): boolean {
  if (err.kind === 'invalid_grant') return true;
  return err.oauthError === 'invalid_request' && err.status !== undefined && err.status >= 400 && err.status < 500;
}

/** The addresses that now provably lead to this account: the one typed (the OP took it), and a verified `email` claim. */
function verifiedAddresses(who: PasswordLogin['identifier'], grant: UpstreamGrant): string[] {
  const addresses: string[] = [];
  if (who.kind === 'email') addresses.push(who.address);
  const claimed = grant.claims['email'];
  if (typeof claimed === 'string' && grant.claims['email_verified'] === true) addresses.push(claimed);
  return addresses;
}

async function tokenLogin(ctx: Context, deps: AppDeps, request: TokenLogin): Promise<void> {
  const grant = await deps.loginTokens.redeem(request.token);
  if (grant === undefined || !(await loginGrantStillValid(deps, grant))) {
    deps.metrics.logins.inc({ type: 'token', outcome: 'rejected' });
    throw new MatrixError(403, 'M_FORBIDDEN', 'Invalid login token');
  }
  // The account may have been deactivated between the SSO confirmation and now (no side path: CVE-2023-32682).
  const user = await deps.homeserver.queryUser(grant.localpart);
  if (user?.deactivated === true) throw new MatrixError(403, 'M_USER_DEACTIVATED', 'This account has been deactivated');
  await completeLogin(ctx, deps, request, grant.localpart, grant.origin);
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
async function completeLogin(ctx: Context, deps: AppDeps, request: LoginRequest, localpart: string, origin: SessionOrigin): Promise<void> {
  const deviceId = request.deviceId ?? randomDeviceId();
  const lifetime = request.refreshToken ? deps.config.sessions.refreshable_access_token_lifetime : undefined;
  const issued = await deps.lifecycle.start({
    localpart,
    deviceId,
    ...(request.initialDeviceDisplayName === undefined ? {} : { deviceDisplayName: request.initialDeviceDisplayName }),
    origin,
    ip: clientAddress(ctx),
    ...(ctx.get('user-agent') === '' ? {} : { userAgent: ctx.get('user-agent') }),
    ...(lifetime === undefined ? {} : { refreshableLifetimeMs: lifetime }),
  });
  // A back-channel logout that arrived between the OP's answer and the session write found no session to end:
  // look again now that the session exists.
  if (origin.kind !== 'appservice' && origin.kind !== 'imported' && (await loggedOutAtOpSince(deps.store, origin, origin.lastValidatedAt))) {
    await deps.lifecycle.end(issued.session.id, 'backchannel_logout').catch(() => undefined);
    throw new MatrixError(403, 'M_FORBIDDEN', 'The sign-in was ended at the identity provider');
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

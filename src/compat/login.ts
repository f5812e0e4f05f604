import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { AppserviceRegistry } from '../identity/appservice-registry.js';
import { resolveAccount, type AccountRefusal, type AccountResult, type ResolvedAccount } from '../identity/account-resolver.js';
import { MappingError } from '../identity/user-mapping.js';
import { HomeserverError } from '../homeserver/adapter.js';
import { MatrixError, matrixErrors } from '../errors/matrix-error.js';
import { expectObject, optionalBoolean, optionalString, readJsonBody } from '../errors/json-body.js';
import { missingClaimsAdvice } from '../oidc/missing-claims.js';
import { UpstreamError, type UpstreamGrant } from '../oidc/upstream.js';
import type { SessionOrigin } from '../sessions/session.js';
import { randomString } from '../sessions/tokens.js';

const DEVICE_ID_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ';
import { clientAddress } from './client-address.js';
import { bearerTokenOf } from '../security/shared-secret.js';
import { loggedOutAtOpSince, loginGrantStillValid } from './backchannel-logout.js';

/** POST /login body fields shared by every login type (Matrix C-S spec, "POST /_matrix/client/v3/login"). */
interface LoginRequest {
  readonly type: string;
  readonly deviceId?: string;
  readonly initialDeviceDisplayName?: string;
  readonly refreshToken: boolean;
  readonly body: Record<string, unknown>;
}

/** Why a password login failed; mapped to Matrix errors in one place so unknown user and wrong password are identical. */
type PasswordFailure = 'invalid_credentials' | 'foreign_server' | 'op_unavailable' | AccountRefusal;

const INVALID_CREDENTIALS = 'Invalid username/password';

export async function postLogin(ctx: Context, deps: AppDeps): Promise<void> {
  const request = parseLoginRequest(await readJsonBody(ctx, deps.config.max_request_body));
  switch (request.type) {
    case 'm.login.password':
      if (!deps.config.password_login.enabled) throw invalidLoginType();
      return passwordLogin(ctx, deps, request);
    case 'm.login.token':
      return tokenLogin(ctx, deps, request);
    case 'm.login.application_service':
      return appserviceLogin(ctx, deps, request);
    default:
      throw invalidLoginType();
  }
}

function parseLoginRequest(raw: unknown): LoginRequest {
  const body = expectObject(raw);
  const type = optionalString(body, 'type');
  if (type === undefined) throw matrixErrors.badJson("Missing property 'type'");
  const deviceId = optionalString(body, 'device_id');
  if (deviceId !== undefined && (deviceId.length === 0 || deviceId.length > 255)) {
    throw new MatrixError(400, 'M_INVALID_PARAM', 'device_id must be between 1 and 255 characters');
  }
  const initialDeviceDisplayName = optionalString(body, 'initial_device_display_name');
  return {
    type,
    ...(deviceId === undefined ? {} : { deviceId }),
    ...(initialDeviceDisplayName === undefined ? {} : { initialDeviceDisplayName }),
    refreshToken: optionalBoolean(body, 'refresh_token') ?? false,
    body,
  };
}

async function passwordLogin(ctx: Context, deps: AppDeps, request: LoginRequest): Promise<void> {
  const password = optionalString(request.body, 'password');
  if (password === undefined) throw matrixErrors.badJson("Missing property 'password'");
  const who = identifierOf(request.body, deps.config.server_name);
  if (who.kind === 'foreign_server') throw passwordError('foreign_server');

  await deps.throttle.check(clientAddress(ctx), who.username);

  const idpId = deps.config.password_login.idp_id;
  const provider = idpId === undefined ? undefined : deps.providers.get(idpId);
  const policy = idpId === undefined ? undefined : deps.policies.get(idpId);
  if (provider === undefined || policy === undefined) throw matrixErrors.internal(new Error('password_login.idp_id names no provider'));

  // A Matrix localpart may differ from the OP username (e.g. a localpart made from the email): use the username
  // the OP accepted for that account before.
  let opUsername = who.username;
  if (who.kind === 'localpart') {
    const bound = await deps.bindings.findByLocalpart(who.username);
    if (bound?.opUsername !== undefined && bound.issuer === policy.issuer) opUsername = bound.opUsername;
  }

  let grant: UpstreamGrant;
  try {
    grant = await provider.passwordGrant(opUsername, password);
  } catch (err: unknown) {
    deps.metrics.logins.inc({ type: 'password', outcome: err instanceof UpstreamError && err.kind === 'invalid_grant' ? 'rejected' : 'error' });
    if (err instanceof UpstreamError && err.kind === 'invalid_grant') throw passwordError('invalid_credentials', err);
    throw passwordError('op_unavailable', err);
  }

  const account = await resolveOrFail(deps, policy.idpId, () => resolveAccount(policy, grant, deps, opUsername), passwordError, grant);
  await provisionAccount(deps, account);

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

async function tokenLogin(ctx: Context, deps: AppDeps, request: LoginRequest): Promise<void> {
  const token = optionalString(request.body, 'token');
  if (token === undefined) throw matrixErrors.badJson("Missing property 'token'");
  const grant = await deps.loginTokens.redeem(token);
  if (grant === undefined || !(await loginGrantStillValid(deps, grant))) {
    deps.metrics.logins.inc({ type: 'token', outcome: 'rejected' });
    throw new MatrixError(403, 'M_FORBIDDEN', 'Invalid login token');
  }
  // The account may have been deactivated between the SSO confirmation and now (no side path: CVE-2023-32682).
  const user = await queryOrFail(deps, grant.localpart);
  if (user?.deactivated === true) throw new MatrixError(403, 'M_USER_DEACTIVATED', 'This account has been deactivated');
  await completeLogin(ctx, deps, request, grant.localpart, { ...grant.origin, lastValidatedAt: grant.origin.lastValidatedAt });
  deps.metrics.logins.inc({ type: 'token', outcome: 'ok' });
}

async function appserviceLogin(ctx: Context, deps: AppDeps, request: LoginRequest): Promise<void> {
  if (!deps.appservices.enabled) {
    throw new MatrixError(400, 'M_APPSERVICE_LOGIN_UNSUPPORTED', 'Application service login is not configured on this server');
  }
  const asToken = bearerTokenOf(ctx);
  const appservice = asToken === undefined ? undefined : deps.appservices.byToken(asToken);
  if (appservice === undefined) throw new MatrixError(403, 'M_FORBIDDEN', 'Invalid application service token');
  const who = identifierOf(request.body, deps.config.server_name);
  if (who.kind !== 'localpart') throw new MatrixError(400, 'M_EXCLUSIVE', 'The user is not in the namespace of this application service');
  const userId = `@${who.username}:${deps.config.server_name}`;
  if (!AppserviceRegistry.mayActAs(appservice, userId, who.username)) {
    throw new MatrixError(400, 'M_EXCLUSIVE', 'The user is not in the namespace of this application service');
  }
  await provisionOrFail(deps, who.username, undefined);
  await completeLogin(ctx, deps, request, who.username, { kind: 'appservice', appserviceId: appservice.id });
  deps.metrics.logins.inc({ type: 'appservice', outcome: 'ok' });
}

/** Device, session, tokens, response: the part every login type shares. */
async function completeLogin(ctx: Context, deps: AppDeps, request: LoginRequest, localpart: string, origin: SessionOrigin): Promise<void> {
  const deviceId = request.deviceId ?? randomDeviceId();
  const lifetime = request.refreshToken ? deps.config.sessions.refreshable_access_token_lifetime : undefined;
  let issued;
  try {
    issued = await deps.lifecycle.start({
      localpart,
      deviceId,
      ...(request.initialDeviceDisplayName === undefined ? {} : { deviceDisplayName: request.initialDeviceDisplayName }),
      origin,
      ip: clientAddress(ctx),
      ...(ctx.get('user-agent') === '' ? {} : { userAgent: ctx.get('user-agent') }),
      ...(lifetime === undefined ? {} : { refreshableLifetimeMs: lifetime }),
    });
  } catch (err: unknown) {
    if (err instanceof HomeserverError) throw matrixErrors.unavailable('The homeserver', err);
    throw err;
  }
  // A back-channel logout that arrived between the OP's answer and the session write found no session to end:
  // look again now that the session exists.
  if (origin.kind !== 'appservice' && (await loggedOutAtOpSince(deps.store, origin, origin.lastValidatedAt))) {
    await deps.lifecycle.end(issued.session.id, 'backchannel_logout').catch(() => undefined);
    throw new MatrixError(403, 'M_FORBIDDEN', 'The sign-in was ended at the identity provider');
  }
  ctx.state['log']?.info?.({ event: 'login.ok', localpart, device_id: deviceId, kind: origin.kind }, 'login.ok');
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

type Identifier =
  | { readonly kind: 'localpart'; readonly username: string }
  | { readonly kind: 'email'; readonly username: string }
  | { readonly kind: 'foreign_server' };

/**
 * Who the client says it is. The deprecated top-level `user` wins over `identifier` (as in Synapse and MAS);
 * `m.id.thirdparty` email (and the deprecated top-level medium/address) is passed to the OP as the username.
 */
function identifierOf(body: Record<string, unknown>, serverName: string): Identifier {
  const legacyUser = optionalString(body, 'user');
  if (legacyUser !== undefined) return fromUser(legacyUser, serverName);

  const medium = optionalString(body, 'medium');
  const address = optionalString(body, 'address');
  if (medium !== undefined || address !== undefined) return fromThirdParty(medium, address);

  const raw = body['identifier'];
  if (raw === undefined || raw === null) throw matrixErrors.badJson("Missing property 'identifier'");
  const identifier = expectObject(raw, "'identifier'");
  switch (optionalString(identifier, 'type')) {
    case 'm.id.user': {
      const user = optionalString(identifier, 'user');
      if (user === undefined) throw matrixErrors.badJson("Missing property 'identifier.user'");
      return fromUser(user, serverName);
    }
    case 'm.id.thirdparty':
      return fromThirdParty(optionalString(identifier, 'medium'), optionalString(identifier, 'address'));
    default:
      throw new MatrixError(400, 'M_UNKNOWN', 'Unsupported login identifier');
  }
}

function fromUser(user: string, serverName: string): Identifier {
  if (!user.startsWith('@')) return { kind: 'localpart', username: user.toLowerCase() };
  const separator = user.indexOf(':');
  if (separator < 0) return { kind: 'localpart', username: user.slice(1).toLowerCase() };
  if (user.slice(separator + 1).toLowerCase() !== serverName.toLowerCase()) return { kind: 'foreign_server' };
  return { kind: 'localpart', username: user.slice(1, separator).toLowerCase() };
}

function fromThirdParty(medium: string | undefined, address: string | undefined): Identifier {
  if (medium !== 'email' || address === undefined || address === '') {
    throw new MatrixError(400, 'M_UNKNOWN', 'Unsupported login identifier');
  }
  return { kind: 'email', username: address.trim() };
}

function passwordError(failure: PasswordFailure, cause?: unknown): MatrixError {
  switch (failure) {
    case 'invalid_credentials':
    case 'foreign_server':
      // One body for every credential failure: no user enumeration.
      return new MatrixError(403, 'M_FORBIDDEN', INVALID_CREDENTIALS, {}, cause);
    case 'op_unavailable':
      return matrixErrors.unavailable('The identity provider', cause);
    case 'deactivated':
      return new MatrixError(403, 'M_USER_DEACTIVATED', 'This account has been deactivated', {}, cause);
    case 'requirements_not_met':
      return new MatrixError(403, 'M_FORBIDDEN', 'This account is not allowed to log in to this server', {}, cause);
    case 'registration_disabled':
      return new MatrixError(403, 'M_FORBIDDEN', 'This account has no Matrix user yet and registration is disabled', {}, cause);
    case 'no_localpart':
    case 'localpart_taken':
      return new MatrixError(403, 'M_FORBIDDEN', 'No Matrix user can be assigned to this account; contact the server administrator', {}, cause);
  }
}

/** Account resolution with its infrastructure failures turned into client-safe errors. */
export async function resolveOrFail(
  deps: AppDeps,
  idpId: string,
  resolve: () => Promise<AccountResult>,
  toError: (failure: AccountRefusal, cause?: unknown) => MatrixError,
  grant?: Pick<UpstreamGrant, 'claims' | 'userinfoSkipped'>,
): Promise<ResolvedAccount> {
  let result: AccountResult;
  try {
    result = await resolve();
  } catch (err: unknown) {
    if (err instanceof HomeserverError) throw matrixErrors.unavailable('The homeserver', err);
    if (err instanceof MappingError) {
      deps.logger.error({ err, idp_id: idpId, ...missingClaimsOf(deps, idpId, grant) }, 'mapping.failed');
      throw new MatrixError(403, 'M_FORBIDDEN', 'No Matrix user can be assigned to this account; contact the server administrator', {}, err);
    }
    throw err;
  }
  if (!result.ok) {
    const missing = result.reason === 'no_localpart' ? missingClaimsOf(deps, idpId, grant) : {};
    if (missing.hint !== undefined) deps.logger.warn({ idp_id: idpId, reason: result.reason, ...missing }, `login.refused: ${missing.hint}`);
    else deps.logger.info({ idp_id: idpId, reason: result.reason }, 'login.refused');
    throw toError(result.reason);
  }
  return result;
}

/** Issue 13: when the templates lack claims, the log names them and what to change. */
function missingClaimsOf(deps: AppDeps, idpId: string, grant: Pick<UpstreamGrant, 'claims' | 'userinfoSkipped'> | undefined): { missing_claims?: string[]; hint?: string } {
  const mapper = deps.policies.get(idpId)?.mapper;
  if (grant === undefined || mapper === undefined) return {};
  const missing = mapper.missingClaims(grant.claims);
  return missing.length === 0 ? {} : { missing_claims: missing, hint: missingClaimsAdvice(idpId, missing, grant) };
}

/**
 * Creates the homeserver account on the first login of a subject (with display name and email from the templates),
 * or when the homeserver lost it; later logins skip the round trip.
 */
export async function provisionAccount(deps: AppDeps, account: ResolvedAccount): Promise<void> {
  if (account.firstLogin) return provisionOrFail(deps, account.localpart, account.identity);
  if (!account.existsAtHomeserver) return provisionOrFail(deps, account.localpart, undefined);
}

export async function provisionOrFail(deps: AppDeps, localpart: string, identity: { displayName?: string; email?: string } | undefined): Promise<void> {
  try {
    await deps.homeserver.provisionUser({
      localpart,
      ...(identity?.displayName === undefined ? {} : { displayName: identity.displayName }),
      ...(identity?.email === undefined ? {} : { emails: [identity.email] }),
    });
  } catch (err: unknown) {
    if (err instanceof HomeserverError) throw matrixErrors.unavailable('The homeserver', err);
    throw err;
  }
}

async function queryOrFail(deps: AppDeps, localpart: string) {
  try {
    return await deps.homeserver.queryUser(localpart);
  } catch (err: unknown) {
    if (err instanceof HomeserverError) throw matrixErrors.unavailable('The homeserver', err);
    throw err;
  }
}

function invalidLoginType(): MatrixError {
  return new MatrixError(400, 'M_UNKNOWN', 'Invalid login type');
}

/** Ten upper-case letters, like Synapse's generated device ids. */
function randomDeviceId(): string {
  return randomString(DEVICE_ID_ALPHABET, 10);
}

import type { Context } from 'koa';
import type { AppDeps } from '../../app-deps.js';
import { MatrixError } from '../../errors/matrix-error.js';
import { expectObject, optionalString } from '../../http/body.js';
import { clientAddress, logOf } from '../../http/request-state.js';
import { appPasswordSignIn } from '../app-password-login.js';
import { isAppPasswordFormat } from '../../sessions/app-passwords.js';
import { UpstreamError } from '../../oidc/upstream.js';
import { opOriginOf, type Session } from '../../sessions/session.js';
import { sameOperation, type UiaOperation, type UiaSession, type UiaStage } from '../../sessions/uia-sessions.js';
import { identifierOf } from '../login-request.js';
import { isPlausiblePassword } from '../../security/account-name.js';

/**
 * User-Interactive Authentication terminated at the proxy (Matrix C-S spec, "User-interactive authentication API"),
 * for the operations the homeserver no longer authenticates under delegated auth (device deletion). Each flow has
 * one stage:
 * - `m.login.password`: the password of the OP account the session signed in with, checked by the OP's password
 *   grant (when password login goes to that provider);
 * - `m.login.sso`: a fresh sign-in at that OP through the spec's fallback page
 *   (`/_matrix/client/v3/auth/m.login.sso/fallback/web?session=…`, compat/uia-sso-fallback.ts).
 * The proof must come from the same OP subject the requesting session belongs to.
 */

/** The `auth` dict of the request, parsed once. */
export type AuthDict =
  | { readonly type: 'm.login.password'; readonly session?: string; readonly body: Record<string, unknown>; readonly password: string }
  | { readonly type: 'm.login.sso' | undefined; readonly session?: string }
  | { readonly type: 'other'; readonly session?: string };

export function parseAuthDict(raw: unknown): AuthDict | undefined {
  if (raw === undefined || raw === null) return undefined;
  const body = expectObject(raw, "'auth'");
  const type = optionalString(body, 'type');
  const session = optionalString(body, 'session');
  const withSession = session === undefined ? {} : { session };
  switch (type) {
    case 'm.login.password': {
      const password = optionalString(body, 'password');
      if (password === undefined) throw new MatrixError(400, 'M_MISSING_PARAM', "Missing property 'auth.password'");
      return { type, ...withSession, body, password };
    }
    case 'm.login.sso':
    case undefined:
      return { type, ...withSession };
    default:
      return { type: 'other', ...withSession };
  }
}

/** The stages this session's user can pass: password only where the OP checks passwords for that provider. */
function stagesFor(deps: AppDeps, origin: OpOrigin): UiaStage[] {
  const stages: UiaStage[] = [];
  // An app password is a password this proxy checks itself (issue 15): offered whenever they are enabled.
  if (passwordProviderFor(deps, origin) !== undefined || deps.config.app_passwords.enabled) stages.push('m.login.password');
  if (deps.providers.has(origin.idpId)) stages.push('m.login.sso');
  return stages;
}

type OpOrigin = Extract<Session['origin'], { kind: 'password' | 'sso' | 'token' }>;

/**
 * Admits the request when the user proved who they are for `operation`, else throws the 401 that asks for it.
 * `description` names the operation in the server's own words (Synapse: "remove device(s) from your account").
 */
export async function requireUserInteractiveAuth(ctx: Context, deps: AppDeps, session: Session, auth: AuthDict | undefined, operation: UiaOperation): Promise<void> {
  const origin = session.origin;
  if (origin.kind === 'appservice') {
    // No OP identity to re-authenticate: the application service manages its users' devices itself (MSC4190).
    throw new MatrixError(403, 'M_FORBIDDEN', "This user's devices are managed by its application service");
  }
  if (origin.kind === 'imported') {
    // A session carried over from Synapse (issue 14) has no OP grant to confirm against: signing in through the OP
    // on this device (which upgrades the session) makes the operation possible.
    throw new MatrixError(403, 'M_FORBIDDEN', 'Sign in again to confirm your identity for this');
  }
  // Synapse's ui_auth.session_timeout: a token that passed UIA a moment ago is not asked again.
  if (await deps.uia.recentlyValidated(session.id)) return;

  const stages = stagesFor(deps, origin);
  if (stages.length === 0) throw new MatrixError(403, 'M_FORBIDDEN', 'This server cannot confirm your identity for this; use your account page');

  let id = auth?.session;
  let record: UiaSession | undefined;
  if (id === undefined) {
    const started = await deps.uia.begin(
      { localpart: session.localpart, proxySessionId: session.id, idpId: origin.idpId, sub: origin.sub, operation },
      deps.config.sessions.uia_session_lifetime,
    );
    id = started.id;
    record = started.session;
    // A client may answer the password stage in its very first request (spec: `session` may then be left out).
    if (auth?.type !== 'm.login.password') throw challenge(stages, id, record);
  } else {
    record = await deps.uia.get(id);
    if (record === undefined) throw new MatrixError(400, 'M_UNKNOWN', 'Unknown session ID');
    if (record.proxySessionId !== session.id || record.localpart !== session.localpart) {
      throw new MatrixError(403, 'M_FORBIDDEN', 'This authentication session belongs to another sign-in');
    }
    if (!sameOperation(record.operation, operation)) {
      // Synapse's wording (synapse/handlers/auth.py check_ui_auth).
      throw new MatrixError(403, 'M_FORBIDDEN', 'Requested operation has changed during the UI authentication session.');
    }
  }

  if (auth?.type === 'other') throw new MatrixError(400, 'M_UNRECOGNIZED', 'Unrecognised login type', { fields: challengeFields(stages, id, record) });
  if (auth?.type === 'm.login.password') {
    if (!stages.includes('m.login.password')) throw new MatrixError(400, 'M_UNRECOGNIZED', 'Password authentication is not available for this account', { fields: challengeFields(stages, id, record) });
    await checkPassword(ctx, deps, session, origin, auth, () => challengeFields(stages, id, record));
    await deps.uia.complete(id, 'm.login.password');
  }

  const current = await deps.uia.get(id);
  if (current === undefined || !current.completed.some((stage) => stages.includes(stage))) throw challenge(stages, id, current ?? record);
  // Used up by this operation: the same session id presented again authorises nothing.
  if ((await deps.uia.take(id)) === undefined) throw new MatrixError(400, 'M_UNKNOWN', 'Unknown session ID');
  await deps.uia.markValidated(session.id, deps.config.sessions.uia_reuse_window);
  logOf(ctx, deps.logger).info({ event: 'uia.ok', localpart: session.localpart, stages: current.completed }, 'uia.ok');
}

function challengeFields(stages: readonly UiaStage[], id: string, record: UiaSession): Record<string, unknown> {
  return {
    flows: stages.map((stage) => ({ stages: [stage] })),
    params: {},
    session: id,
    ...(record.completed.length === 0 ? {} : { completed: [...record.completed] }),
  };
}

function challenge(stages: readonly UiaStage[], id: string, record: UiaSession): MatrixError {
  return new MatrixError(401, 'M_FORBIDDEN', 'Authentication required', { fields: challengeFields(stages, id, record), fieldsOnly: true });
}

/** The provider that checks passwords for this origin: only password login's own provider, and only for its subjects. */
function passwordProviderFor(deps: AppDeps, origin: OpOrigin) {
  const { password_login: passwordLogin } = deps.config;
  if (!passwordLogin.enabled || passwordLogin.idp_id !== origin.idpId) return undefined;
  return deps.providers.get(origin.idpId);
}

async function checkPassword(
  ctx: Context,
  deps: AppDeps,
  session: Session,
  origin: OpOrigin,
  auth: Extract<AuthDict, { type: 'm.login.password' }>,
  fields: () => Record<string, unknown>,
): Promise<void> {
  // Spec: a failed stage answers 401 with the flows again plus errcode and error.
  const invalid = (cause?: unknown) => new MatrixError(401, 'M_FORBIDDEN', 'Invalid password', { fields: fields() }, cause);
  const who = identifierOf(auth.body, deps.config.server_name);
  if (who.kind === 'foreign_server' || who.kind === 'malformed' || (who.kind === 'localpart' && who.name !== session.localpart)) throw invalid();
  // Throttled like /login, in the same per-account bucket: UIA must not be a side door for guessing passwords at the OP.
  await deps.throttle.check(clientAddress(ctx), await deps.accountAliases.throttleKey({ kind: 'localpart', name: session.localpart }));
  if (deps.config.app_passwords.enabled && isAppPasswordFormat(auth.password)) {
    // Checked here, never sent to the OP; it must open this very account (the same OP subject).
    const signedIn = await appPasswordSignIn(deps, who, auth.password, invalid);
    if (signedIn.localpart !== session.localpart || opOriginOf(signedIn)?.sub !== origin.sub) throw invalid();
    return;
  }
  if (!isPlausiblePassword(auth.password)) throw invalid();
  const provider = passwordProviderFor(deps, origin);
  if (provider === undefined) throw invalid();
  // The session's own subject is checked after the grant, so its remembered OP user name may be used here.
  let opUsername = who.kind === 'localpart' ? who.name : who.address;
  if (who.kind === 'localpart') {
    const bound = await deps.bindings.findByLocalpart(session.localpart);
    if (bound?.opUsername !== undefined && bound.issuer === origin.issuer) opUsername = bound.opUsername;
  }
  let sub: string;
  let refreshToken: string | undefined;
  try {
    const grant = await provider.passwordGrant(opUsername, auth.password);
    sub = grant.sub;
    refreshToken = grant.refreshToken;
  } catch (err: unknown) {
    if (err instanceof UpstreamError && err.kind === 'invalid_grant') throw invalid(err);
    throw err;
  }
  // The grant only proved the password; nothing keeps it.
  if (refreshToken !== undefined) await provider.revoke(refreshToken, 'refresh_token').catch(() => undefined);
  if (sub !== origin.sub) throw invalid();
}

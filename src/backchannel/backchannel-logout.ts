import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { UpstreamError, type LogoutTokenClaims, type UpstreamProvider } from '../oidc/upstream.js';
import type { LoginGrant } from '../sessions/login-tokens.js';
import type { Session, SessionOrigin } from '../sessions/session.js';
import type { Store } from '../store/store.js';

/** Why a logout request was refused; collapsed into OAuth error bodies in one place. */
type LogoutFailure = 'not_form' | 'missing_token' | 'invalid_token' | 'replayed' | 'processing_failed';

/**
 * How long a `jti` is remembered beyond the token's `exp` (or, without `exp`, at all): longer than any token is
 * accepted (oidc/logout-token.ts: iat up to 5 minutes ahead, and without exp at most 5 minutes old).
 */
const DEFAULT_JTI_MEMORY_MS = 15 * 60_000;
/** Logout markers outlive every login token and pending SSO login that could have been issued before them. */
const OP_LOGOUT_MARKER_TTL_MS = 60 * 60_000;

const keys = {
  jti: (idpId: string, jti: string) => `backchannel-jti:${idpId}:${jti}`,
  loggedOutSid: (idpId: string, sid: string) => `op-logout-sid:${idpId}:${sid}`,
  loggedOutSub: (idpId: string, sub: string) => `op-logout-sub:${idpId}:${sub}`,
  /** A logout by sid and sub also ends what we cannot place: authentications of that sub that came without a sid. */
  loggedOutSidlessOfSub: (idpId: string, sub: string) => `op-logout-sidless:${idpId}:${sub}`,
  pendingSsoBySid: (idpId: string, sid: string) => `pending-sso-by-sid:${idpId}:${sid}`,
  pendingSsoBySub: (idpId: string, sub: string) => `pending-sso-by-sub:${idpId}:${sub}`,
};

class LogoutRefused extends Error {
  constructor(
    readonly failure: LogoutFailure,
    cause?: unknown,
  ) {
    super(failure, cause === undefined ? undefined : { cause });
  }
}

/**
 * POST /_matrix-compat-proxy/backchannel-logout/:idpId — the OpenID Connect Back-Channel Logout 1.0 receiver, one
 * URL per provider. This endpoint speaks OAuth, not Matrix: 200 with `Cache-Control: no-store` when the logout was
 * processed (also when it matched no session), 400 with an RFC 6749 §5.2-style body otherwise (spec §2.8).
 */
export async function postBackchannelLogout(ctx: Context, deps: AppDeps): Promise<void> {
  const idpId = ctx.params['idpId'] ?? '';
  const provider = deps.providers.get(idpId);
  const providerConfig = deps.config.oidc_providers.find((candidate) => candidate.idp_id === idpId);
  ctx.set('Cache-Control', 'no-store');
  if (provider === undefined || providerConfig?.backchannel_logout_enabled !== true) {
    ctx.status = 404;
    ctx.body = { error: 'invalid_request', error_description: 'Back-channel logout is not enabled for this provider' };
    return;
  }
  const log = (ctx.state['log'] as AppDeps['logger'] | undefined) ?? deps.logger;
  try {
    const logoutToken = await readLogoutToken(ctx, deps.config.max_request_body);
    const claims = await verify(provider, logoutToken);
    await rememberJti(deps, idpId, claims);
    try {
      const effect = await applyLogout(deps, idpId, claims, {
        mode: providerConfig.backchannel_logout_mode,
        ignoreSub: providerConfig.backchannel_logout_ignore_sub,
      });
      log.info({ event: 'backchannel_logout.ok', idp_id: idpId, by: claims.sid === undefined ? 'sub' : 'sid', ...effect }, 'backchannel_logout.ok');
    } catch (err: unknown) {
      // Not processed: forget the jti so the OP's retry of this very token is not refused as a replay.
      await deps.store.delete(keys.jti(idpId, claims.jti)).catch(() => undefined);
      throw new LogoutRefused('processing_failed', err);
    }
  } catch (err: unknown) {
    if (!(err instanceof LogoutRefused)) throw err;
    if (err.failure === 'processing_failed') log.error({ err: err.cause, idp_id: idpId }, 'backchannel_logout.failed');
    else log.info({ idp_id: idpId, reason: err.failure, detail: err.cause instanceof Error ? err.cause.message : undefined }, 'backchannel_logout.rejected');
    ctx.status = 400;
    ctx.body = errorBody(err.failure);
    return;
  }
  ctx.body = '';
  ctx.status = 200;
}

async function readLogoutToken(ctx: Context, limitBytes: number): Promise<string> {
  const type = ctx.get('content-type').split(';')[0]?.trim().toLowerCase() ?? '';
  if (type !== '' && type !== 'application/x-www-form-urlencoded') throw new LogoutRefused('not_form');
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of ctx.req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limitBytes) throw new LogoutRefused('not_form');
    chunks.push(chunk);
  }
  const form = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
  const tokens = form.getAll('logout_token');
  if (tokens.length !== 1 || tokens[0] === '') throw new LogoutRefused('missing_token');
  return tokens[0] as string;
}

/** Signature, iss, aud, iat/exp, sub and/or sid, events, no nonce: all of §2.6, checked in oidc/. */
async function verify(provider: UpstreamProvider, logoutToken: string): Promise<LogoutTokenClaims> {
  try {
    return await provider.verifyLogoutToken(logoutToken);
  } catch (err: unknown) {
    if (err instanceof UpstreamError && err.kind === 'invalid_token') throw new LogoutRefused('invalid_token', err);
    // JWKS unreachable and the like: we could not decide, the OP may send the token again.
    throw new LogoutRefused('processing_failed', err);
  }
}

/** §2.6 step 7 (optional in the spec, required here): a jti is accepted once per token lifetime. */
async function rememberJti(deps: AppDeps, idpId: string, claims: LogoutTokenClaims): Promise<void> {
  const untilExp = claims.exp === undefined ? 0 : claims.exp * 1000 - deps.clock.now();
  const ttlMs = Math.max(DEFAULT_JTI_MEMORY_MS, untilExp + DEFAULT_JTI_MEMORY_MS);
  let first: boolean;
  try {
    first = await deps.store.set(keys.jti(idpId, claims.jti), '1', { onlyIfAbsent: true, ttlMs });
  } catch (err: unknown) {
    throw new LogoutRefused('processing_failed', err);
  }
  if (!first) throw new LogoutRefused('replayed');
}

interface LogoutEffect {
  readonly sessions: number;
  readonly loginTokensVoided: number;
  readonly pendingSsoVoided: number;
  readonly mode: 'hard' | 'soft';
}

/**
 * Every legacy session of that OP session (`sid`), or without `sid` every session of that subject, ends; login
 * tokens and SSO logins not yet completed die with them. Sessions of the subject for which the OP never told us a
 * `sid` could belong to the OP session that ended, so they end too. Markers catch logins already past the checks.
 */
async function applyLogout(deps: AppDeps, idpId: string, claims: LogoutTokenClaims, options: { mode: 'hard' | 'soft'; ignoreSub: boolean }): Promise<LogoutEffect> {
  const now = deps.clock.now();
  const { sid } = claims;
  // backchannel_logout_ignore_sub (as in Synapse): the OP's logout `sub` may differ from the login's; trust the sid.
  const sub = options.ignoreSub && sid !== undefined ? undefined : claims.sub;
  const markers = [
    ...(sid === undefined ? [] : [keys.loggedOutSid(idpId, sid)]),
    ...(sub === undefined ? [] : [sid === undefined ? keys.loggedOutSub(idpId, sub) : keys.loggedOutSidlessOfSub(idpId, sub)]),
  ];
  // Separate writes, not one setMany: the keys live in different Redis Cluster slots (MULTI would fail CROSSSLOT),
  // and each marker is meaningful on its own.
  await Promise.all(markers.map((key) => deps.store.set(key, String(now), { ttlMs: OP_LOGOUT_MARKER_TTL_MS })));

  const selector = sid === undefined ? { sub: sub as string } : { sid };
  const loginTokensVoided = await deps.loginTokens.voidFor(idpId, selector);
  const pendingSsoVoided = await voidPendingSsoLogins(deps.store, idpId, selector);

  const candidateIds = new Set(sid === undefined ? [] : await deps.sessions.idsOfSid(idpId, sid));
  if (sub !== undefined) for (const id of await deps.sessions.idsOfSub(idpId, sub)) candidateIds.add(id);
  const ids: string[] = [];
  for (const id of candidateIds) {
    const session = await deps.sessions.get(id);
    if (session === undefined || session.origin.kind === 'appservice') continue;
    // With both sid and sub, a session of that sid under another subject is not the one meant.
    if (sub !== undefined && session.origin.sub !== sub) continue;
    if (sid !== undefined && session.origin.sid !== undefined && session.origin.sid !== sid) continue;
    ids.push(id);
  }
  const ended = options.mode === 'hard' ? (await deps.lifecycle.endMany(ids, 'backchannel_logout')).length : await softLogout(deps, ids, now);
  return { sessions: ended, loginTokensVoided, pendingSsoVoided, mode: options.mode };
}

/**
 * Soft logout (Synapse #15976): the tokens die now — the access token reads as expired, so clients get
 * `M_UNKNOWN_TOKEN` with `soft_logout: true`, and the refresh family is dropped — but the device stays at the
 * homeserver, so a new login on the same device id keeps its E2EE keys.
 */
async function softLogout(deps: AppDeps, ids: readonly string[], now: number): Promise<number> {
  let count = 0;
  for (const id of ids) {
    let sealedOpRefreshToken: string | undefined;
    const updated = await deps.sessions.update(id, (current) => {
      sealedOpRefreshToken = current.origin.kind === 'appservice' ? undefined : current.origin.sealedOpRefreshToken;
      return withSoftLogout(current, now);
    });
    if (updated === undefined) continue;
    count++;
    deps.metrics.sessionsEnded.inc({ reason: 'backchannel_soft_logout' });
    deps.logger.info({ event: 'session.soft_logged_out', session_id: id, localpart: updated.localpart, device_id: updated.deviceId }, 'session.soft_logged_out');
    if (sealedOpRefreshToken !== undefined && updated.origin.kind !== 'appservice') {
      const provider = deps.providers.get(updated.origin.idpId);
      await provider?.revoke(deps.keys.open(sealedOpRefreshToken), 'refresh_token').catch((err: unknown) => deps.logger.warn({ err }, 'op.revoke.failed'));
    }
  }
  return count;
}

function withSoftLogout(session: Session, now: number): Session {
  const { refresh: _droppedRefreshFamily, ...rest } = session;
  let origin: SessionOrigin = session.origin;
  if (origin.kind !== 'appservice') {
    const { sealedOpRefreshToken: _droppedOpToken, ...originRest } = origin;
    origin = originRest;
  }
  return { ...rest, origin, accessExpiresAt: Math.min(now, session.accessExpiresAt ?? now), softLoggedOut: session.softLoggedOut ?? { at: now, reason: 'backchannel_logout' } };
}

function errorBody(failure: LogoutFailure): { error: string; error_description: string } {
  switch (failure) {
    case 'not_form':
      return { error: 'invalid_request', error_description: 'Expected an application/x-www-form-urlencoded body' };
    case 'missing_token':
      return { error: 'invalid_request', error_description: 'logout_token is required' };
    case 'invalid_token':
      return { error: 'invalid_request', error_description: 'The logout token is not valid' };
    case 'replayed':
      return { error: 'invalid_request', error_description: 'The logout token was already used' };
    case 'processing_failed':
      return { error: 'temporarily_unavailable', error_description: 'The logout could not be processed; send it again later' };
  }
}

/**
 * For the SSO flow: records a login waiting on its confirmation page (stored by the SSO code under `pendingKey`)
 * so that a back-channel logout of its OP session or subject deletes it.
 */
export async function indexPendingSsoLogin(store: Store, origin: { idpId: string; sub: string; sid?: string }, pendingKey: string, ttlMs: number): Promise<void> {
  await store.addToSet(keys.pendingSsoBySub(origin.idpId, origin.sub), pendingKey, ttlMs);
  if (origin.sid !== undefined) await store.addToSet(keys.pendingSsoBySid(origin.idpId, origin.sid), pendingKey, ttlMs);
}

async function voidPendingSsoLogins(store: Store, idpId: string, selector: { sid?: string; sub?: string }): Promise<number> {
  const index = selector.sid !== undefined ? keys.pendingSsoBySid(idpId, selector.sid) : keys.pendingSsoBySub(idpId, selector.sub ?? '');
  const pending = await store.setMembers(index);
  if (pending.length === 0) return 0;
  const voided = await store.delete(...pending);
  await store.delete(index);
  return voided;
}

/**
 * Whether the OP logged out (back-channel) the OP session or subject an authentication came from, after that
 * authentication happened (`authenticatedAt`, the proxy's clock). A later login of the same subject is not affected.
 */
export async function loggedOutAtOpSince(store: Store, origin: { idpId: string; sub: string; sid?: string }, authenticatedAt: number): Promise<boolean> {
  const markers = await store.getMany([
    keys.loggedOutSub(origin.idpId, origin.sub),
    origin.sid === undefined ? keys.loggedOutSidlessOfSub(origin.idpId, origin.sub) : keys.loggedOutSid(origin.idpId, origin.sid),
  ]);
  return markers.some((at) => at !== undefined && Number(at) >= authenticatedAt);
}

/**
 * No side path through `m.login.token` (CVE-2023-32682): the binding the grant was made for must still exist, and
 * the OP must not have logged out its session since. Unredeemed tokens are voided at logout already; this catches a
 * token minted from a grant that was in flight when the logout arrived.
 */
/** Whether bindings of this provider are keyed by the OP's `sub` itself (no subject_claim/subject_template). */
function usesOpSubject(deps: Pick<AppDeps, 'config'>, idpId: string): boolean {
  const mapping = deps.config.oidc_providers.find((provider) => provider.idp_id === idpId)?.user_mapping_provider.config;
  return mapping !== undefined && mapping.subject_claim === 'sub' && mapping.subject_template === undefined;
}

export async function loginGrantStillValid(deps: Pick<AppDeps, 'store' | 'bindings' | 'config'>, grant: LoginGrant): Promise<boolean> {
  const binding = await deps.bindings.findByLocalpart(grant.localpart);
  if (binding === undefined || binding.issuer !== grant.origin.issuer) return false;
  // The localpart may have been re-bound to another subject (admin delete + import) since this grant was made.
  if (usesOpSubject(deps, grant.origin.idpId) && binding.sub !== grant.origin.sub) return false;
  return !(await loggedOutAtOpSince(deps.store, grant.origin, grant.origin.lastValidatedAt));
}

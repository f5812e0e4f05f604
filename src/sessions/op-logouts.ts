import type { Logger } from 'pino';
import type { Clock } from '../clock.js';
import type { Config } from '../config/schema.js';
import type { Binding, BindingStore } from '../identity/bindings.js';
import type { Metrics } from '../observability/metrics.js';
import type { HomeserverAdapter } from '../provisioning/homeserver-adapter.js';
import type { LogoutTokenClaims, UpstreamProvider } from '../oidc/upstream.js';
import type { Store } from '../store/store.js';
import type { LoginGrant, LoginTokenStore } from './login-tokens.js';
import type { SessionKeys } from './secret-box.js';
import { opOriginOf, opSubjectOf, type Session, type SessionOrigin } from './session.js';
import { allChecks, type SessionLifecycle, type StartCheck, type StartRefusal } from './session-lifecycle.js';
import type { SessionStore } from './session-store.js';

/**
 * What an OP-side logout (OIDC Back-Channel Logout) leaves behind: the sessions it ends, the login tokens and
 * pending SSO confirmations it voids, and markers that catch logins already past their checks when it arrived.
 */

/**
 * Logout markers outlive every login token and pending SSO login that could have been issued before them, and every
 * account-page session (which has no index of its own: it checks the markers on each read, see account-sessions.ts).
 */
const OP_LOGOUT_MARKER_TTL_MS = 60 * 60_000;

function markerTtlMs(config: Pick<Config, 'account'>): number {
  return Math.max(OP_LOGOUT_MARKER_TTL_MS, config.account.session_lifetime);
}

const keys = {
  loggedOutSid: (idpId: string, sid: string) => `op-logout-sid:${idpId}:${sid}`,
  loggedOutSub: (idpId: string, sub: string) => `op-logout-sub:${idpId}:${sub}`,
  /** A logout by sid and sub also ends what we cannot place: authentications of that sub that came without a sid. */
  loggedOutSidlessOfSub: (idpId: string, sub: string) => `op-logout-sidless:${idpId}:${sub}`,
  pendingSsoBySid: (idpId: string, sid: string) => `pending-sso-by-sid:${idpId}:${sid}`,
  pendingSsoBySub: (idpId: string, sub: string) => `pending-sso-by-sub:${idpId}:${sub}`,
};

export interface OpLogoutDeps {
  readonly config: Pick<Config, 'account'>;
  readonly store: Store;
  readonly clock: Clock;
  readonly sessions: SessionStore;
  readonly loginTokens: LoginTokenStore;
  readonly lifecycle: SessionLifecycle;
  readonly providers: ReadonlyMap<string, UpstreamProvider>;
  readonly keys: SessionKeys;
  readonly metrics: Metrics;
  readonly logger: Logger;
}

export interface OpLogoutEffect {
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
export async function applyOpLogout(
  deps: OpLogoutDeps,
  idpId: string,
  claims: Pick<LogoutTokenClaims, 'sub' | 'sid'>,
  options: { mode: 'hard' | 'soft'; ignoreSub: boolean },
): Promise<OpLogoutEffect> {
  const now = deps.clock.now();
  const { sid } = claims;
  // backchannel_logout_ignore_sub (as in Synapse): the OP's logout `sub` may differ from the login's; trust the sid.
  const sub = options.ignoreSub && sid !== undefined ? undefined : claims.sub;
  const markers = [
    ...(sid === undefined ? [] : [keys.loggedOutSid(idpId, sid)]),
    ...(sub === undefined ? [] : [sid === undefined ? keys.loggedOutSub(idpId, sub) : keys.loggedOutSidlessOfSub(idpId, sub)]),
  ];
  // Separate writes, not one transaction: the keys live in different Redis Cluster slots (MULTI would fail
  // CROSSSLOT), and each marker is meaningful on its own.
  await Promise.all(markers.map((key) => deps.store.set(key, String(now), { ttlMs: markerTtlMs(deps.config) })));

  const selector = sid === undefined ? { sub: sub as string } : { sid };
  const loginTokensVoided = await deps.loginTokens.voidFor(idpId, selector);
  const pendingSsoVoided = await voidPendingSsoLogins(deps.store, idpId, selector);

  const candidateIds = new Set(sid === undefined ? [] : await deps.sessions.idsOfSid(idpId, sid));
  if (sub !== undefined) for (const id of await deps.sessions.idsOfSub(idpId, sub)) candidateIds.add(id);
  const ids: string[] = [];
  for (const id of candidateIds) {
    const session = await deps.sessions.get(id);
    const subject = session === undefined ? undefined : opSubjectOf(session);
    if (subject === undefined) continue;
    // With both sid and sub, a session of that sid under another subject is not the one meant.
    if (sub !== undefined && subject.sub !== sub) continue;
    if (sid !== undefined && subject.sid !== undefined && subject.sid !== sid) continue;
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
async function softLogout(deps: OpLogoutDeps, ids: readonly string[], now: number): Promise<number> {
  let count = 0;
  for (const id of ids) {
    let sealedOpRefreshToken: string | undefined;
    const updated = await deps.sessions.update(id, (current) => {
      sealedOpRefreshToken = opOriginOf(current)?.sealedOpRefreshToken;
      return withSoftLogout(current, now);
    });
    if (updated === undefined) continue;
    count++;
    deps.metrics.sessionsEnded.inc({ reason: 'backchannel_soft_logout' });
    deps.logger.info({ event: 'session.soft_logged_out', session_id: id, localpart: updated.localpart, device_id: updated.deviceId }, 'session.soft_logged_out');
    const opOrigin = opOriginOf(updated);
    if (sealedOpRefreshToken !== undefined && opOrigin !== undefined) {
      const provider = deps.providers.get(opOrigin.idpId);
      await provider?.revoke(deps.keys.open(sealedOpRefreshToken), 'refresh_token').catch((err: unknown) => deps.logger.warn({ err }, 'op.revoke.failed'));
    }
  }
  return count;
}

function withSoftLogout(session: Session, now: number): Session {
  const { refresh: _droppedRefreshFamily, ...rest } = session;
  let origin: SessionOrigin = session.origin;
  const opOrigin = opOriginOf(session);
  if (opOrigin !== undefined) {
    const { sealedOpRefreshToken: _droppedOpToken, ...originRest } = opOrigin;
    origin = originRest;
  }
  return { ...rest, origin, accessExpiresAt: Math.min(now, session.accessExpiresAt ?? now), softLoggedOut: session.softLoggedOut ?? { at: now, reason: 'backchannel_logout' } };
}

/**
 * For the SSO flow: records a login waiting on its confirmation page (stored by the SSO code under `pendingKey`)
 * so that a back-channel logout of its OP session or subject deletes it.
 */
export async function indexPendingSsoLogin(store: Store, origin: { idpId: string; sub: string; sid?: string }, pendingKey: string, ttlMs: number): Promise<void> {
  await Promise.all([
    store.addToSet(keys.pendingSsoBySub(origin.idpId, origin.sub), pendingKey, ttlMs),
    ...(origin.sid === undefined ? [] : [store.addToSet(keys.pendingSsoBySid(origin.idpId, origin.sid), pendingKey, ttlMs)]),
  ]);
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
  const check = opLogoutCheck(origin, authenticatedAt);
  return check.refusal(await store.getMany(check.keys)) !== undefined;
}

/**
 * `loggedOutAtOpSince` as keys and a decision, for a caller that reads the keys in a store step of its own (a new
 * session reads them in the step that writes it: SessionLifecycle.start). Read after the session's index writes,
 * the markers close the race with `applyOpLogout`, which writes its markers before it reads the indexes: either the
 * logout finds the session or the login finds the marker.
 */
export function opLogoutCheck(origin: { idpId: string; sub: string; sid?: string }, authenticatedAt: number): StartCheck {
  return {
    keys: [keys.loggedOutSub(origin.idpId, origin.sub), origin.sid === undefined ? keys.loggedOutSidlessOfSub(origin.idpId, origin.sub) : keys.loggedOutSid(origin.idpId, origin.sid)],
    refusal: (markers) => (markers.some((at) => at !== undefined && Number(at) >= authenticatedAt) ? 'ended_at_op' : undefined),
  };
}

/** Whether bindings of this provider are keyed by the OP's `sub` itself (no subject_claim/subject_template). */
function usesOpSubject(config: Pick<Config, 'oidc_providers'>, idpId: string): boolean {
  const mapping = config.oidc_providers.find((provider) => provider.idp_id === idpId)?.user_mapping_provider.config;
  return mapping !== undefined && mapping.subject_claim === 'sub' && mapping.subject_template === undefined;
}

/**
 * No side path through `m.login.token` (CVE-2023-32682): the binding the grant was made for must still exist, and
 * the OP must not have logged out its session since. Unredeemed tokens are voided at logout already; this catches a
 * token minted from a grant that was in flight when the logout arrived. Gives the binding it stands on (the
 * session's write checks it again), or why the grant no longer holds.
 */
async function grantStanding(
  deps: { readonly store: Store; readonly bindings: BindingStore; readonly config: Pick<Config, 'oidc_providers'> },
  grant: LoginGrant,
): Promise<{ readonly binding: Binding } | { readonly refused: 'binding_changed' | 'ended_at_op' }> {
  // Independent reads, read together (one round trip of waiting, issue 19's login cost).
  const [binding, loggedOut] = await Promise.all([deps.bindings.findByLocalpart(grant.localpart), loggedOutAtOpSince(deps.store, grant.origin, grant.origin.lastValidatedAt)]);
  if (binding === undefined || binding.issuer !== grant.origin.issuer) return { refused: 'binding_changed' };
  // The localpart may have been re-bound to another subject (admin delete + import) since this grant was made.
  if (usesOpSubject(deps.config, grant.origin.idpId) && binding.sub !== grant.origin.sub) return { refused: 'binding_changed' };
  return loggedOut ? { refused: 'ended_at_op' } : { binding };
}

/** A grant that may become a session, with the binding it stands on; or why it may not (its OP grant is revoked). */
export type UsableGrant = { readonly ok: true; readonly grant: LoginGrant; readonly binding: Binding } | { readonly ok: false; readonly reason: StartRefusal | 'deactivated' };

export type RedeemedLoginToken = UsableGrant | { readonly ok: false; readonly reason: 'invalid' };

type GrantCheckDeps = Parameters<typeof grantStanding>[0] & {
  readonly homeserver: Pick<HomeserverAdapter, 'queryUser'>;
  readonly lifecycle: Pick<SessionLifecycle, 'abandonSignIn'>;
};

/**
 * A login token redeemed with every check its use needs (no side path, CVE-2023-32682): single use, then
 * `grantStillUsable`. `m.login.token` and the native OAuth login step after SSO both take tokens this way.
 */
export async function redeemLoginToken(deps: GrantCheckDeps & { readonly loginTokens: LoginTokenStore }, token: string | undefined): Promise<RedeemedLoginToken> {
  const grant = token === undefined ? undefined : await deps.loginTokens.redeem(token);
  return grant === undefined ? { ok: false, reason: 'invalid' } : grantStillUsable(deps, grant);
}

/**
 * Whether a sign-in made earlier (a login token's grant, a native client's sign-in awaiting its code exchange) may
 * still become a session: its binding still stands, the OP has not logged its session out since, and the account is
 * not deactivated. The session's own write then checks the binding and the logout markers once more
 * (`signInChecks`). A grant refused here will not become a session: its OP grant is revoked in the background
 * (SessionLifecycle.abandonSignIn) rather than left live at the OP until it expires.
 */
export async function grantStillUsable(deps: GrantCheckDeps, grant: LoginGrant): Promise<UsableGrant> {
  // The homeserver is asked at the same time as the store; a grant that fails its own checks is refused as such.
  const [standing, user] = await Promise.all([grantStanding(deps, grant), deps.homeserver.queryUser(grant.localpart)]);
  if ('refused' in standing || user?.deactivated === true) {
    deps.lifecycle.abandonSignIn(grant.origin);
    return { ok: false, reason: 'refused' in standing ? standing.refused : 'deactivated' };
  }
  return { ok: true, grant, binding: standing.binding };
}

/**
 * What a new session's write step reads back (SessionLifecycle.start's check): a back-channel logout that arrived
 * between the OP's answer and the write found no session to end, and an admin's removal of the binding swept the
 * user's sessions before the write — the session must not stand on either.
 */
export function signInChecks(bindings: Pick<BindingStore, 'stillBound'>, origin: SessionOrigin, binding: Binding | undefined): StartCheck | undefined {
  const checks: StartCheck[] = [];
  if (origin.kind !== 'appservice' && origin.kind !== 'imported') checks.push(opLogoutCheck(origin, origin.lastValidatedAt));
  if (binding !== undefined) {
    const bound = bindings.stillBound(binding);
    checks.push({ keys: [bound.key], refusal: ([value]) => (bound.holds(value) ? undefined : 'binding_changed') });
  }
  return allChecks(checks);
}

import { setTimeout as delay } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { Clock } from '../clock.js';
import type { Config } from '../config/schema.js';
import type { Metrics } from '../observability/metrics.js';
import { UpstreamError, type UpstreamProvider } from '../oidc/upstream.js';
import type { Store } from '../store/store.js';
import type { AppPassword, AppPasswords } from './app-passwords.js';
import { SealingKeyUnknown, type SessionKeys } from './secret-box.js';
import type { SessionLifecycle } from './session-lifecycle.js';
import type { SessionStore } from './session-store.js';
import { opOriginOf, type Session } from './session.js';
import { parseToken, sameHash } from './tokens.js';

/**
 * What a re-validation check concluded about a session:
 * - fresh: nothing to check (checked recently, no OP grant kept, or another replica just checked it);
 * - revalidated: the OP accepted the session's refresh token again just now;
 * - ended: the OP refused the grant (user disabled, session revoked), or the session is gone; it is over;
 * - grace: the OP could not be reached, but the last successful check is recent enough to keep serving;
 * - unavailable: the OP has been unreachable for longer than the grace period: fail closed with 503, not a logout.
 */
export type RevalidationOutcome = 'fresh' | 'revalidated' | 'ended' | 'grace' | 'unavailable';

/** Whether a request with this session may proceed; `unavailable` must become a 503-class answer, never a logout. */
export type Admission = 'active' | 'inactive' | 'unavailable';

/** What re-validation needs, and nothing more (the model never sees the faces' dependencies). */
export interface RevalidationDeps {
  readonly config: Pick<Config, 'sessions'>;
  readonly clock: Clock;
  readonly store: Store;
  readonly sessions: SessionStore;
  readonly lifecycle: SessionLifecycle;
  readonly providers: ReadonlyMap<string, UpstreamProvider>;
  readonly keys: SessionKeys;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly appPasswords: AppPasswords;
}

/** Longer than any OP round trip we wait for (the provider's own timeout ends a hung call first). */
// Longer than the slowest chain one re-validation can make (discovery, token, JWKS, userinfo: 10 s each), so the
// lease cannot lapse while the OP call runs and let a second replica spend the same rotating refresh token.
const LOCK_TTL_MS = 60_000;
/** After a failed OP call, other requests of the session skip the OP for this long instead of hammering it. */
const RETRY_BACKOFF_MS = 15_000;
/** How long a request waits for another replica's check before deciding from the grace period alone. */
const WAIT_STEP_MS = 20;
const MAX_WAIT_STEPS = 250;

const lockKey = (sessionId: string) => `revalidation-lock:${sessionId}`;
const backoffKey = (sessionId: string) => `revalidation-backoff:${sessionId}`;
const appPasswordLockKey = (id: string) => `revalidation-lock:app-password:${id}`;

/**
 * Checks the session's upstream grant at the OP again (refresh-token grant) when its last check is older than
 * `sessions.revalidate_interval`. Single-flight across replicas: one request holds a store lock and calls the OP;
 * the others wait and re-read the session, so a rotating OP refresh token is used exactly once.
 */
export async function revalidateIfDue(deps: RevalidationDeps, session: Session): Promise<RevalidationOutcome> {
  if (!isDue(deps, session)) return 'fresh';
  for (let step = 0; ; step++) {
    const current = step === 0 ? session : await deps.sessions.get(session.id);
    if (current === undefined) return 'ended';
    if (!isDue(deps, current)) return 'fresh';
    if ((await deps.store.get(backoffKey(current.id))) !== undefined) return graceOrUnavailable(deps, current);

    const release = await deps.store.tryLock(lockKey(current.id), LOCK_TTL_MS);
    if (release !== undefined) {
      try {
        // Re-read under the lock: the previous holder may have finished between our read and our lock.
        const locked = await deps.sessions.get(current.id);
        if (locked === undefined) return 'ended';
        if (!isDue(deps, locked)) return 'fresh';
        return await checkAtOp(deps, locked);
      } finally {
        await release();
      }
    }
    // A slow OP outliving our patience: decide as if it were unreachable, without a second OP call.
    if (step >= MAX_WAIT_STEPS) return graceOrUnavailable(deps, current);
    await delay(WAIT_STEP_MS);
  }
}

/** The gate for every use of a session (introspection): soft logout, then re-validation if due. */
export async function admitSession(deps: RevalidationDeps, session: Session): Promise<Admission> {
  const now = admissionWithoutWaiting(deps, session);
  if (now !== undefined) return now;
  const outcome = await revalidateIfDue(deps, session);
  switch (outcome) {
    case 'ended':
      return 'inactive';
    case 'unavailable':
      return 'unavailable';
    case 'fresh':
    case 'revalidated':
    case 'grace':
      return 'active';
  }
}

/**
 * What admitSession answers when it has nothing to wait for (soft logout, or no re-validation due), else undefined:
 * every introspection passes here, and most need no async call at all (issue 19).
 */
export function admissionWithoutWaiting(deps: RevalidationDeps, session: Session): Admission | undefined {
  if (session.softLoggedOut !== undefined) return 'inactive';
  // What revalidateIfDue answers first ('fresh'), without its async call.
  if (!isDue(deps, session)) return 'active';
  return undefined;
}

export type RefreshAdmission = Admission | 'soft_logged_out';

/**
 * The gate before /refresh rotates a token: a soft-logged-out session answers soft logout, and a session due for
 * re-validation is checked at the OP first, so a disabled user cannot keep a session alive by refreshing.
 * Tokens that do not name a live session pass through: the rotation itself rejects them.
 */
export async function admitRefresh(deps: RevalidationDeps, refreshToken: string): Promise<RefreshAdmission> {
  const parsed = parseToken(refreshToken);
  if (parsed?.kind !== 'refresh') return 'active';
  const session = await deps.sessions.get(parsed.sessionId);
  if (session === undefined) return 'active';
  if (session.softLoggedOut !== undefined) return 'soft_logged_out';
  const family = session.refresh;
  const presented = family !== undefined && (sameHash(family.currentHash, parsed.hash) || (family.previousHash !== undefined && sameHash(family.previousHash, parsed.hash)));
  // Only a holder of a live refresh token may make us call the OP.
  if (!presented) return 'active';
  return admitSession(deps, session);
}

/** When the session's grant is next due for a check at the OP; undefined when it never is (no OP grant kept). */
export function revalidationDueAt(deps: Pick<RevalidationDeps, 'config'>, session: Session): number | undefined {
  const origin = opOriginOf(session);
  if (origin === undefined || (origin.sealedOpRefreshToken === undefined && origin.appPasswordId === undefined)) return undefined;
  return origin.lastValidatedAt + deps.config.sessions.revalidate_interval;
}

function isDue(deps: RevalidationDeps, session: Session): boolean {
  const dueAt = revalidationDueAt(deps, session);
  return dueAt !== undefined && deps.clock.now() >= dueAt;
}

function graceOrUnavailable(deps: RevalidationDeps, session: Session): 'grace' | 'unavailable' {
  const origin = opOriginOf(session);
  if (origin === undefined) return 'grace';
  if (deps.clock.now() < origin.lastValidatedAt + deps.config.sessions.op_unreachable_grace) return 'grace';
  deps.metrics.revalidations.inc({ outcome: 'failed_closed' });
  return 'unavailable';
}

const SEALING_KEY_HINT = 'add the encryption key this was sealed with to sessions.previous_encryption_keys';

/**
 * The OP refresh token to keep after a successful grant: the new one when the OP rotates, else the one used — sealed
 * again with the current key when it was sealed before a key rotation, so the old key can be dropped later.
 */
function sealedAfterGrant(keys: SessionKeys, usedSealed: string, newRefreshToken: string | undefined): string {
  if (newRefreshToken !== undefined) return keys.seal(newRefreshToken);
  return keys.sealedWithCurrentKey(usedSealed) ? usedSealed : keys.seal(keys.open(usedSealed));
}

/** One refresh-token grant at the OP, with the lock held. */
async function checkAtOp(deps: RevalidationDeps, session: Session): Promise<RevalidationOutcome> {
  const origin = opOriginOf(session);
  if (origin === undefined) return 'fresh';
  const log = deps.logger.child({ session_id: session.id, localpart: session.localpart, idp_id: origin.idpId });
  if (origin.appPasswordId !== undefined) return checkAppPasswordSession(deps, session, origin.appPasswordId, log);
  if (origin.sealedOpRefreshToken === undefined) return 'fresh';
  const provider = deps.providers.get(origin.idpId);
  if (provider === undefined) {
    // A provider removed from the config cannot vouch for its sessions; treat it like an unreachable OP.
    log.error('revalidation.unknown_provider');
    return opUnreachable(deps, session, log, undefined);
  }

  const usedSealed = origin.sealedOpRefreshToken;
  let grant;
  try {
    grant = await provider.refreshGrant(deps.keys.open(usedSealed));
  } catch (err: unknown) {
    if (err instanceof UpstreamError && err.kind === 'invalid_grant') return refusedByOp(deps, session, usedSealed, log, err);
    if (err instanceof SealingKeyUnknown) {
      // A replica without the key this was sealed with (a rotation half-rolled out, a key dropped too early): like an
      // unreachable OP — the session is kept, and works again once the key is configured.
      log.error({ hint: SEALING_KEY_HINT }, 'revalidation.sealing_key_unknown');
      return opUnreachable(deps, session, log, err);
    }
    deps.metrics.upstreamErrors.inc({ upstream: 'op', kind: err instanceof UpstreamError ? err.kind : 'error' });
    return opUnreachable(deps, session, log, err);
  }

  if (grant.sub !== origin.sub) {
    log.error({ returned_sub: grant.sub }, 'revalidation.subject_changed');
    return endSession(deps, session.id, log);
  }
  const now = deps.clock.now();
  // Some OPs rotate refresh tokens (the old one is dead now), others return none and keep the old one valid.
  const sealed = sealedAfterGrant(deps.keys, usedSealed, grant.refreshToken);
  const updated = await deps.sessions.update(session.id, (current) =>
    {
      const currentOrigin = opOriginOf(current);
      return currentOrigin === undefined ? current : { ...current, origin: { ...currentOrigin, sealedOpRefreshToken: sealed, lastValidatedAt: now } };
    },
  );
  if (updated === undefined) {
    // Logged out while we were asking: the fresh OP grant belongs to no session any more.
    if (grant.refreshToken !== undefined) await provider.revoke(grant.refreshToken, 'refresh_token').catch(() => undefined);
    return 'ended';
  }
  deps.metrics.revalidations.inc({ outcome: 'revalidated' });
  log.debug('revalidation.ok');
  return 'revalidated';
}

async function refusedByOp(deps: RevalidationDeps, session: Session, usedSealed: string, log: RevalidationDeps['logger'], err: UpstreamError): Promise<RevalidationOutcome> {
  // invalid_grant after a lost race (our lock expired and another replica rotated the token) is not a refusal.
  const current = await deps.sessions.get(session.id);
  if (current === undefined) return 'ended';
  const currentOrigin = opOriginOf(current);
  if (currentOrigin !== undefined && currentOrigin.sealedOpRefreshToken !== usedSealed) return 'fresh';
  log.info({ reason: err.message }, 'revalidation.refused');
  deps.metrics.revalidations.inc({ outcome: 'ended' });
  const outcome = await endSession(deps, session.id, log);
  await deps.lifecycle.lockAtHomeserver(session.localpart);
  return outcome;
}

async function endSession(deps: RevalidationDeps, sessionId: string, log: RevalidationDeps['logger']): Promise<'ended'> {
  try {
    await deps.lifecycle.end(sessionId, 'revalidation_failed');
  } catch (err: unknown) {
    // The session stays and is refused again on its next use (the OP keeps saying no); the caller answers inactive.
    log.warn({ err }, 'revalidation.end_failed');
  }
  return 'ended';
}

async function opUnreachable(deps: RevalidationDeps, session: Session, log: RevalidationDeps['logger'], err: unknown): Promise<'grace' | 'unavailable'> {
  await deps.store.set(backoffKey(session.id), '1', { ttlMs: RETRY_BACKOFF_MS });
  deps.metrics.revalidations.inc({ outcome: 'op_unavailable' });
  const outcome = graceOrUnavailable(deps, session);
  const origin = opOriginOf(session);
  const graceLeftMs = origin === undefined ? 0 : origin.lastValidatedAt + deps.config.sessions.op_unreachable_grace - deps.clock.now();
  if (outcome === 'grace') log.warn({ err, grace_left_ms: graceLeftMs }, 'revalidation.op_unavailable.grace');
  else log.error({ err }, 'revalidation.op_unavailable.failed_closed');
  return outcome;
}

/** What the OP said of an app password's grant. */
export type AppPasswordGrantCheck =
  | { readonly outcome: 'valid'; readonly appPassword: AppPassword }
  | { readonly outcome: 'refused' | 'gone' }
  | { readonly outcome: 'unreachable'; readonly err: unknown };

/**
 * Checks an app password's OP grant when its last check is older than `sessions.revalidate_interval` (refresh-token
 * grant, rotated token written back to the app password). Single-flight per app password, not per session: all its
 * sessions spend the same OP refresh token, which a rotating OP accepts exactly once. A refusal is remembered on
 * the app password, so it logs nobody in any more (issue 15: "refuse it while the user is disabled at the OP").
 */
export async function checkAppPasswordGrant(deps: RevalidationDeps, id: string): Promise<AppPasswordGrantCheck> {
  for (let step = 0; ; step++) {
    const current = await deps.appPasswords.get(id);
    if (current === undefined) return { outcome: 'gone' };
    if (current.refusedAt !== undefined) return { outcome: 'refused' };
    if (deps.clock.now() < current.lastValidatedAt + deps.config.sessions.revalidate_interval) return { outcome: 'valid', appPassword: current };
    const release = await deps.store.tryLock(appPasswordLockKey(id), LOCK_TTL_MS);
    if (release !== undefined) {
      try {
        return await appPasswordGrantAtOp(deps, id);
      } finally {
        await release();
      }
    }
    if (step >= MAX_WAIT_STEPS) return { outcome: 'unreachable', err: new Error('app password re-validation still running elsewhere') };
    await delay(WAIT_STEP_MS);
  }
}

async function appPasswordGrantAtOp(deps: RevalidationDeps, id: string): Promise<AppPasswordGrantCheck> {
  // Re-read under the lock: the previous holder may have finished between our read and our lock.
  const locked = await deps.appPasswords.get(id);
  if (locked === undefined) return { outcome: 'gone' };
  if (locked.refusedAt !== undefined) return { outcome: 'refused' };
  if (deps.clock.now() < locked.lastValidatedAt + deps.config.sessions.revalidate_interval) return { outcome: 'valid', appPassword: locked };
  const log = deps.logger.child({ app_password_id: id, localpart: locked.localpart, idp_id: locked.idpId });
  const provider = deps.providers.get(locked.idpId);
  if (provider === undefined) {
    log.error('revalidation.app_password.unknown_provider');
    return { outcome: 'unreachable', err: undefined };
  }
  const usedSealed = locked.sealedOpRefreshToken;
  let grant;
  try {
    grant = await provider.refreshGrant(deps.keys.open(usedSealed));
  } catch (err: unknown) {
    if (err instanceof UpstreamError && err.kind === 'invalid_grant') {
      log.info({ reason: err.message }, 'revalidation.app_password.refused');
      const marked = await deps.appPasswords.update(id, (current) =>
        // Lost a race (our lock lapsed and another replica rotated the token): not a refusal.
        current.sealedOpRefreshToken === usedSealed ? { ...current, refusedAt: deps.clock.now() } : current,
      );
      if (marked === undefined) return { outcome: 'gone' };
      return marked.refusedAt !== undefined ? { outcome: 'refused' } : { outcome: 'valid', appPassword: marked };
    }
    if (err instanceof SealingKeyUnknown) log.error({ hint: SEALING_KEY_HINT }, 'revalidation.app_password.sealing_key_unknown');
    else deps.metrics.upstreamErrors.inc({ upstream: 'op', kind: err instanceof UpstreamError ? err.kind : 'error' });
    return { outcome: 'unreachable', err };
  }
  if (grant.sub !== locked.sub) {
    log.error({ returned_sub: grant.sub }, 'revalidation.app_password.subject_changed');
    const marked = await deps.appPasswords.update(id, (current) => ({ ...current, refusedAt: deps.clock.now() }));
    return marked === undefined ? { outcome: 'gone' } : { outcome: 'refused' };
  }
  const now = deps.clock.now();
  const sealed = sealedAfterGrant(deps.keys, usedSealed, grant.refreshToken);
  const updated = await deps.appPasswords.update(id, (current) => ({ ...current, sealedOpRefreshToken: sealed, lastValidatedAt: now }));
  if (updated === undefined) {
    // Revoked while we were asking: the fresh OP grant belongs to nothing any more.
    if (grant.refreshToken !== undefined) await provider.revoke(grant.refreshToken, 'refresh_token').catch(() => undefined);
    return { outcome: 'gone' };
  }
  log.debug('revalidation.app_password.ok');
  return { outcome: 'valid', appPassword: updated };
}

/** A session made with an app password: its app password's grant decides. */
async function checkAppPasswordSession(deps: RevalidationDeps, session: Session, id: string, log: RevalidationDeps['logger']): Promise<RevalidationOutcome> {
  const check = await checkAppPasswordGrant(deps, id);
  switch (check.outcome) {
    case 'gone':
      deps.metrics.revalidations.inc({ outcome: 'ended' });
      return endSession(deps, session.id, log);
    case 'refused': {
      log.info('revalidation.refused');
      deps.metrics.revalidations.inc({ outcome: 'ended' });
      const outcome = await endSession(deps, session.id, log);
      await deps.lifecycle.lockAtHomeserver(session.localpart);
      return outcome;
    }
    case 'unreachable':
      return opUnreachable(deps, session, log, check.err);
    case 'valid': {
      const validatedAt = check.appPassword.lastValidatedAt;
      const updated = await deps.sessions.update(session.id, (current) =>
        current.origin.kind === 'appservice' || current.origin.kind === 'imported'
          ? current
          : { ...current, origin: { ...current.origin, lastValidatedAt: Math.max(validatedAt, current.origin.lastValidatedAt) } },
      );
      if (updated === undefined) return 'ended';
      deps.metrics.revalidations.inc({ outcome: 'revalidated' });
      return 'revalidated';
    }
  }
}

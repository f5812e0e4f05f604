import type { Logger } from 'pino';
import type { HomeserverAdapter } from '../provisioning/homeserver-adapter.js';
import type { Metrics } from '../observability/metrics.js';
import type { UpstreamProvider } from '../oidc/upstream.js';
import type { SessionKeys } from './secret-box.js';
import { opOriginOf, type Session, type SessionOrigin } from './session.js';
import type { Store } from '../store/store.js';

/** Marks an account the proxy locked at the homeserver, so the next sign-in the OP accepts unlocks it. */
const lockedKey = (localpart: string) => `homeserver-locked:${localpart}`;
import type { IssuedTokens, NewSession, SessionStore } from './session-store.js';

export type EndReason = 'logout' | 'logout_all' | 'device_deleted' | 'device_reused' | 'refresh_reuse' | 'backchannel_logout' | 'revalidation_failed' | 'admin' | 'app_password_revoked';

export interface StartOptions {
  /** The proxy generated the device id for this login (the client sent none): no session can be on it yet. */
  readonly freshDevice?: boolean;
  /**
   * Whether the sign-in still stands once its session exists: `keys` are read in the same store step as the
   * session's writes, after them (one round trip for both: issue 19, login cost), and `refusal` decides from their
   * values. A refused session ends at once and start throws SessionStartRefused.
   */
  readonly check?: StartCheck | undefined;
}

/**
 * Why a session just written must not stand: the OP ended the sign-in meanwhile (a back-channel logout that arrived
 * between the OP's answer and the write found no session to end: op-logouts.ts), or the binding the sign-in
 * resolved to is gone or points elsewhere (an admin removed it: its sweep of sessions ran before this write).
 */
export type StartRefusal = 'ended_at_op' | 'binding_changed';

export interface StartCheck {
  readonly keys: readonly string[];
  readonly refusal: (values: readonly (string | undefined)[]) => StartRefusal | undefined;
}

/** Several checks as one: their keys read in the same step, the first refusal in order wins. */
export function allChecks(checks: readonly StartCheck[]): StartCheck | undefined {
  if (checks.length <= 1) return checks[0];
  return {
    keys: checks.flatMap((check) => check.keys),
    refusal: (values) => {
      let offset = 0;
      for (const check of checks) {
        const refusal = check.refusal(values.slice(offset, offset + check.keys.length));
        if (refusal !== undefined) return refusal;
        offset += check.keys.length;
      }
      return undefined;
    },
  };
}

/** What a client is told when its sign-in was refused for `reason` (the legacy login and the OAuth code exchange). */
export function startRefusalText(reason: StartRefusal): string {
  return reason === 'ended_at_op' ? 'The sign-in was ended at the identity provider' : 'The account changed during sign-in; sign in again';
}

/** The sign-in no longer stands (see StartRefusal); the session was ended again. */
export class SessionStartRefused extends Error {
  constructor(readonly reason: StartRefusal) {
    super(reason === 'ended_at_op' ? 'the sign-in was ended at the identity provider while the session was being started' : 'the account binding changed while the session was being started');
    this.name = 'SessionStartRefused';
  }
}

export interface LifecycleDeps {
  readonly sessions: SessionStore;
  readonly store: Store;
  readonly homeserver: HomeserverAdapter;
  readonly providers: ReadonlyMap<string, UpstreamProvider>;
  readonly keys: SessionKeys;
  readonly logger: Logger;
  readonly metrics: Metrics;
}

/**
 * Starts and ends sessions, keeping the homeserver's device list in step. The device is created at the homeserver
 * BEFORE the session exists (so the first request with the new token cannot hit an unknown device) and deleted
 * BEFORE the session is removed (so a failed deletion leaves a session the client can log out again, not a token
 * that Synapse keeps accepting from its introspection cache).
 */
export class SessionLifecycle {
  constructor(private readonly deps: LifecycleDeps) {}

  async start(requested: NewSession, options: StartOptions = {}): Promise<IssuedTokens> {
    const check = options.check;
    const { issued, values } = await this.startOnDevice(withDisplayNameLimit(requested), options.freshDevice === true, check?.keys ?? []);
    const refusal = check?.refusal(values);
    if (refusal === undefined) return issued;
    await this.discard(issued.session, refusal === 'ended_at_op' ? 'backchannel_logout' : 'admin', options.freshDevice === true);
    throw new SessionStartRefused(refusal);
  }

  /**
   * `freshDevice`: the proxy has just generated the device id (10 random letters), so no session can be on it and
   * none is looked for (issue 19, login cost: a user's sessions are not read at every login).
   */
  private async startOnDevice(input: NewSession, freshDevice: boolean, readKeys: readonly string[]): Promise<{ issued: IssuedTokens; values: (string | undefined)[] }> {
    const tokens = this.deps.homeserver.tokens;
    if (tokens === undefined) {
      // Independent: the store read overlaps the homeserver call (issue 19, login cost). A failed device creation
      // still stops the login before anything is written; the read's answer is then unused.
      const [, previousId] = await Promise.all([
        this.deps.homeserver.upsertDevice(input.localpart, input.deviceId, input.deviceDisplayName),
        freshDevice ? undefined : this.deps.sessions.idOfDevice(input.localpart, input.deviceId),
      ]);
      if (previousId !== undefined) {
        // Logging in with the device_id of a live session replaces that session (spec: device_id reuse).
        await this.end(previousId, 'device_reused', { keepDevice: true });
      }
      return this.deps.sessions.createThenRead(input, readKeys);
    }
    // The homeserver issues the tokens. A live session on this device keeps its homeserver token: the device and its
    // E2EE keys stay, and no second token exists (Synapse would keep an older one valid next to a new login's). Only
    // a dead one is replaced by a new login.
    const previousId = freshDevice ? undefined : await this.deps.sessions.idOfDevice(input.localpart, input.deviceId);
    const previous = previousId === undefined ? undefined : await this.deps.sessions.get(previousId);
    let homeserverToken: string | undefined;
    if (previous?.homeserverToken !== undefined) {
      const candidate = this.deps.keys.open(previous.homeserverToken);
      if (await tokens.isLive(candidate, input.localpart, input.deviceId)) homeserverToken = candidate;
    }
    // The OP accepted this user again (this is a new sign-in): a lock the proxy set when the OP refused them goes.
    if (input.origin.kind !== 'appservice' && (await this.deps.store.get(lockedKey(input.localpart))) !== undefined) {
      await tokens.setLocked(input.localpart, false);
      await this.deps.store.delete(lockedKey(input.localpart));
      this.deps.logger.info({ event: 'homeserver.unlocked', localpart: input.localpart }, 'homeserver.unlocked');
    }
    homeserverToken ??= await tokens.login(input.localpart, input.deviceId, input.deviceDisplayName);
    if (previousId !== undefined) await this.end(previousId, 'device_reused', { keepDevice: true });
    return this.deps.sessions.createThenRead({ ...input, sealedHomeserverToken: this.deps.keys.seal(homeserverToken) }, readKeys);
  }

  /**
   * Ends one session: device removed at the homeserver (unless kept: device reuse, soft logout), session and indexes
   * removed, OP refresh token revoked (best effort: the session is already over for us).
   */
  async end(sessionId: string, reason: EndReason, options: { keepDevice?: boolean } = {}): Promise<Session | undefined> {
    const session = await this.deps.sessions.get(sessionId);
    if (session === undefined) return undefined;
    if (!options.keepDevice) {
      // Another live session may have taken over this device id since; then the device stays.
      const owner = await this.deps.sessions.idOfDevice(session.localpart, session.deviceId);
      if (owner === undefined || owner === session.id) await this.endAtHomeserver(session);
    }
    return this.removeEnded(sessionId, reason);
  }

  /** The session and its indexes removed, the ending counted and logged, its OP refresh token revoked (background). */
  private async removeEnded(sessionId: string, reason: EndReason): Promise<Session | undefined> {
    const removed = await this.deps.sessions.remove(sessionId);
    if (removed === undefined) return undefined;
    this.deps.metrics.sessionsEnded.inc({ reason });
    this.deps.logger.info({ event: 'session.ended', reason, session_id: removed.id, localpart: removed.localpart, device_id: removed.deviceId }, 'session.ended');
    this.revokeInBackground(removed.origin, removed.id);
    return removed;
  }

  /**
   * A session just written whose sign-in no longer stands (StartRefusal). Its client never got the tokens, so, unlike
   * `end`, the session goes first — a homeserver failure then leaves at most a device, never a live session. The
   * device goes after it only when this login made it up (`freshDevice`): a device id the client sent may be one it
   * has used before, with its E2EE keys (a re-login after a soft logout), and a refused login must not take those
   * with it; nor when another session holds that device id now. Failures are logged, not thrown.
   */
  private async discard(session: Session, reason: EndReason, freshDevice: boolean): Promise<void> {
    try {
      const removed = await this.removeEnded(session.id, reason);
      if (removed === undefined) return;
      if (freshDevice && (await this.deps.sessions.idOfDevice(removed.localpart, removed.deviceId)) === undefined) await this.endAtHomeserver(removed);
    } catch (err: unknown) {
      this.deps.logger.warn({ event: 'session.discard_failed', err, reason, session_id: session.id, localpart: session.localpart, device_id: session.deviceId }, 'session.discard_failed');
    }
  }

  /**
   * Every session of the user ends; where the homeserver issues tokens, every token of the user there ends too
   * (logout/all: also the ones the proxy never issued, such as a login made directly at the homeserver).
   */
  async endAllOfUser(localpart: string, reason: EndReason): Promise<Session[]> {
    const ended = await this.endMany(await this.deps.sessions.idsOfUser(localpart), reason);
    await this.deps.homeserver.tokens?.logoutAll(localpart);
    return ended;
  }

  /**
   * The OP refused the user (re-validation): where a homeserver admin token is configured, lock the account too, so
   * that tokens the proxy never issued stop as well (Synapse answers them M_USER_LOCKED, soft logout). Reversible:
   * the next sign-in the OP accepts unlocks it. Best effort: the proxy's own sessions are over either way.
   */
  async lockAtHomeserver(localpart: string): Promise<void> {
    const tokens = this.deps.homeserver.tokens;
    if (tokens === undefined) return;
    try {
      // Marker first: if the lock then fails half-way, a later sign-in still tries to unlock.
      await this.deps.store.set(lockedKey(localpart), String(Date.now()));
      if (await tokens.setLocked(localpart, true)) this.deps.logger.info({ event: 'homeserver.locked', localpart }, 'homeserver.locked');
      else await this.deps.store.delete(lockedKey(localpart));
    } catch (err: unknown) {
      this.deps.logger.warn({ err, localpart }, 'homeserver.lock_failed');
    }
  }

  /** The homeserver side of an ending: the device's own token logs it out, or the backend deletes the device. */
  private async endAtHomeserver(session: Session): Promise<void> {
    const tokens = this.deps.homeserver.tokens;
    if (tokens !== undefined && session.homeserverToken !== undefined) {
      await tokens.logout(session.localpart, session.deviceId, this.deps.keys.open(session.homeserverToken));
      return;
    }
    await this.deps.homeserver.deleteDevice(session.localpart, session.deviceId);
  }

  async endMany(sessionIds: readonly string[], reason: EndReason, options: { keepDevice?: boolean } = {}): Promise<Session[]> {
    const ended: Session[] = [];
    for (const id of sessionIds) {
      const session = await this.end(id, reason, options);
      if (session !== undefined) ended.push(session);
    }
    return ended;
  }

  /**
   * Revocation at the OP is best effort and must not hold up the client's /logout for up to the OP timeout (issue
   * 12 #8): it runs after the answer, at most MAX_BACKGROUND_REVOCATIONS at once; beyond that (an OP that hangs
   * during a mass logout) it is skipped with a warning — the session is already over here.
   */
  private revokeInBackground(origin: SessionOrigin, sessionId?: string): void {
    if (this.revocationsInFlight >= MAX_BACKGROUND_REVOCATIONS) {
      this.deps.logger.warn({ event: 'op.revoke.skipped', ...(sessionId === undefined ? {} : { session_id: sessionId }), in_flight: this.revocationsInFlight }, 'op.revoke.skipped');
      return;
    }
    this.revocationsInFlight += 1;
    void this.revokeAtOp(origin).finally(() => {
      this.revocationsInFlight -= 1;
    });
  }

  /**
   * A sign-in the OP granted that will not become a session (its login token or OAuth code refused: binding changed,
   * account deactivated, logged out at the OP): its OP grant is revoked like an ended session's, in the background,
   * rather than left to live at the OP until it expires.
   */
  abandonSignIn(origin: SessionOrigin): void {
    this.revokeInBackground(origin);
  }

  private revocationsInFlight = 0;

  private async revokeAtOp(sessionOrigin: SessionOrigin): Promise<void> {
    const origin = opOriginOf({ origin: sessionOrigin });
    if (origin?.sealedOpRefreshToken === undefined) return;
    const provider = this.deps.providers.get(origin.idpId);
    if (provider === undefined) return;
    try {
      await provider.revoke(this.deps.keys.open(origin.sealedOpRefreshToken), 'refresh_token');
    } catch (err: unknown) {
      this.deps.logger.warn({ err, idp_id: origin.idpId }, 'op.revoke.failed');
    }
  }
}

const MAX_BACKGROUND_REVOCATIONS = 64;

/** Synapse refuses device display names over 100 characters (upsert_device → 400 M_TOO_LARGE): shorten, don't fail the login. */
const MAX_DEVICE_DISPLAY_NAME = 100;

function withDisplayNameLimit(input: NewSession): NewSession {
  const name = input.deviceDisplayName;
  if (name === undefined || [...name].length <= MAX_DEVICE_DISPLAY_NAME) return input;
  return { ...input, deviceDisplayName: [...name].slice(0, MAX_DEVICE_DISPLAY_NAME).join('') };
}

import type { Logger } from 'pino';
import type { HomeserverAdapter } from '../provisioning/homeserver-adapter.js';
import type { Metrics } from '../observability/metrics.js';
import type { UpstreamProvider } from '../oidc/upstream.js';
import type { SessionKeys } from './secret-box.js';
import { opOriginOf, type Session } from './session.js';
import type { IssuedTokens, NewSession, SessionStore } from './session-store.js';

export type EndReason = 'logout' | 'logout_all' | 'device_reused' | 'refresh_reuse' | 'backchannel_logout' | 'revalidation_failed' | 'admin';

export interface LifecycleDeps {
  readonly sessions: SessionStore;
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

  async start(requested: NewSession): Promise<IssuedTokens> {
    const input = withDisplayNameLimit(requested);
    await this.deps.homeserver.upsertDevice(input.localpart, input.deviceId, input.deviceDisplayName);
    const previousId = await this.deps.sessions.idOfDevice(input.localpart, input.deviceId);
    if (previousId !== undefined) {
      // Logging in with the device_id of a live session replaces that session (spec: device_id reuse).
      await this.end(previousId, 'device_reused', { keepDevice: true });
    }
    return this.deps.sessions.create(input);
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
      if (owner === undefined || owner === session.id) await this.deps.homeserver.deleteDevice(session.localpart, session.deviceId);
    }
    const removed = await this.deps.sessions.remove(sessionId);
    if (removed === undefined) return undefined;
    this.deps.metrics.sessionsEnded.inc({ reason });
    this.deps.logger.info({ event: 'session.ended', reason, session_id: removed.id, localpart: removed.localpart, device_id: removed.deviceId }, 'session.ended');
    await this.revokeAtOp(removed);
    return removed;
  }

  async endMany(sessionIds: readonly string[], reason: EndReason, options: { keepDevice?: boolean } = {}): Promise<Session[]> {
    const ended: Session[] = [];
    for (const id of sessionIds) {
      const session = await this.end(id, reason, options);
      if (session !== undefined) ended.push(session);
    }
    return ended;
  }

  private async revokeAtOp(session: Session): Promise<void> {
    const origin = opOriginOf(session);
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

/** Synapse refuses device display names over 100 characters (upsert_device → 400 M_TOO_LARGE): shorten, don't fail the login. */
const MAX_DEVICE_DISPLAY_NAME = 100;

function withDisplayNameLimit(input: NewSession): NewSession {
  const name = input.deviceDisplayName;
  if (name === undefined || [...name].length <= MAX_DEVICE_DISPLAY_NAME) return input;
  return { ...input, deviceDisplayName: [...name].slice(0, MAX_DEVICE_DISPLAY_NAME).join('') };
}

import type { HomeserverAdapter } from '../provisioning/homeserver-adapter.js';
import type { SessionLifecycle } from './session-lifecycle.js';
import type { SessionStore } from './session-store.js';

export interface DeviceDeletionDeps {
  readonly sessions: SessionStore;
  readonly lifecycle: SessionLifecycle;
  readonly homeserver: HomeserverAdapter;
}

/**
 * Deletes devices of one user (issue 15): a device of a legacy session ends that session (device removed at the
 * homeserver, tokens dead, OP grant revoked); any other device (a native OIDC client's, one only the homeserver
 * knows) is removed at the homeserver, which then refuses its tokens at once. Ids are looked up in this user's
 * namespace only: another user's device id names nothing of theirs, and a missing device is not an error (Synapse).
 */
export async function deleteUserDevices(deps: DeviceDeletionDeps, localpart: string, deviceIds: readonly string[]): Promise<void> {
  for (const deviceId of deviceIds) {
    const sessionId = await deps.sessions.idOfDevice(localpart, deviceId);
    const ended = sessionId === undefined ? undefined : await deps.lifecycle.end(sessionId, 'device_deleted');
    if (ended === undefined) await deps.homeserver.deleteDevice(localpart, deviceId);
  }
}

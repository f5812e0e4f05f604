import type { AppDeps } from '../app-deps.js';
import type { DeviceView } from '../pages/account-pages.js';
import type { AccountSession } from '../sessions/account-sessions.js';
import type { Session } from '../sessions/session.js';

/**
 * Every device of the user, for the page: the homeserver's own list (GET /devices as the user, through the page's
 * homeserver token: native OIDC clients, devices only the homeserver knows, with last-seen data) merged with the
 * proxy's legacy sessions (how they signed in, their user agent). When the homeserver does not answer, the legacy
 * sessions are still listed and the page says the list may be incomplete.
 */
export async function devicesOf(deps: AppDeps, account: AccountSession): Promise<{ devices: DeviceView[]; homeserverIncomplete: boolean }> {
  const legacy = new Map<string, Session>();
  for (const id of await deps.sessions.idsOfUser(account.localpart)) {
    const session = await deps.sessions.get(id);
    if (session !== undefined) legacy.set(session.deviceId, session);
  }
  let fromHomeserver: Awaited<ReturnType<AppDeps['homeserver']['listDevices']>> | undefined;
  try {
    fromHomeserver = await deps.homeserver.listDevices(deps.keys.open(account.sealedHomeserverToken));
  } catch (err: unknown) {
    deps.logger.warn({ err, localpart: account.localpart }, 'account.devices.homeserver_failed');
  }
  const devices = new Map<string, DeviceView>();
  for (const device of fromHomeserver ?? []) {
    const session = legacy.get(device.deviceId);
    devices.set(device.deviceId, {
      deviceId: device.deviceId,
      kind: session === undefined ? 'homeserver' : session.origin.kind,
      ...(device.displayName === undefined ? (session?.deviceDisplayName === undefined ? {} : { name: session.deviceDisplayName }) : { name: device.displayName }),
      ...(device.lastSeenTs === undefined ? {} : { lastSeen: device.lastSeenTs }),
      ...(device.lastSeenIp === undefined ? {} : { lastIp: device.lastSeenIp }),
      ...(session?.userAgent === undefined ? {} : { userAgent: session.userAgent }),
    });
  }
  for (const session of legacy.values()) {
    if (devices.has(session.deviceId)) continue;
    devices.set(session.deviceId, {
      deviceId: session.deviceId,
      kind: session.origin.kind,
      ...(session.deviceDisplayName === undefined ? {} : { name: session.deviceDisplayName }),
      lastSeen: session.lastSeenAt,
      ...(session.ip === undefined ? {} : { lastIp: session.ip }),
      ...(session.userAgent === undefined ? {} : { userAgent: session.userAgent }),
    });
  }
  const sorted = [...devices.values()].sort((a, b) => (b.lastSeen ?? 0) - (a.lastSeen ?? 0) || a.deviceId.localeCompare(b.deviceId));
  return { devices: sorted, homeserverIncomplete: fromHomeserver === undefined };
}

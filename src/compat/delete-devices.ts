import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { matrixErrors } from '../errors/matrix-error.js';
import { deleteDevicesOperation } from '../sessions/uia-sessions.js';
import { checkDeviceId, deleteDevicesOf, deletionCaller } from './devices/device-deletion.js';
import { parseAuthDict, requireUserInteractiveAuth } from './uia/user-interactive-auth.js';

/** How many devices one request may name: each is a homeserver call, and no client needs more at once. */
const MAX_DEVICES = 1000;

/**
 * POST /delete_devices (C-S spec, "Device management"): what Element's "sign out of other sessions" sends. Synapse
 * does not even register it under delegated auth; the proxy runs the User-Interactive Auth and deletes the devices.
 */
export async function postDeleteDevices(ctx: Context, deps: AppDeps): Promise<void> {
  const caller = await deletionCaller(ctx, deps);
  if (caller.kind === 'relayed') return;
  const deviceIds = parseDevices(caller.body['devices']);
  const auth = parseAuthDict(caller.body['auth']);
  await requireUserInteractiveAuth(ctx, deps, caller.session, auth, deleteDevicesOperation(deviceIds));
  await deleteDevicesOf(ctx, deps, caller.session.localpart, deviceIds);
  ctx.body = {};
}

function parseDevices(raw: unknown): string[] {
  if (raw === undefined || raw === null) throw matrixErrors.badJson("Missing property 'devices'");
  if (!Array.isArray(raw) || !raw.every((item): item is string => typeof item === 'string')) throw matrixErrors.badJson("'devices' must be a list of strings");
  if (raw.length > MAX_DEVICES) throw matrixErrors.badJson(`'devices' may name at most ${MAX_DEVICES} devices`);
  return raw.map(checkDeviceId);
}

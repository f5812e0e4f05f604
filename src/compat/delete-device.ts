import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { paramOf } from '../http/request-state.js';
import { deleteDevicesOperation } from '../sessions/uia-sessions.js';
import { checkDeviceId, deleteDevicesOf, deletionCaller } from './devices/device-deletion.js';
import { parseAuthDict, requireUserInteractiveAuth } from './uia/user-interactive-auth.js';

/**
 * DELETE /devices/{deviceId} (C-S spec, "Device management"): "sign out this session" of legacy clients. Under
 * delegated auth Synapse answers it with 404 for users (synapse/rest/client/devices.py), so the proxy runs the
 * User-Interactive Auth and deletes the device itself. Other callers' tokens go on to the homeserver.
 */
export async function deleteDevice(ctx: Context, deps: AppDeps): Promise<void> {
  const deviceId = checkDeviceId(paramOf(ctx, 'deviceId'));
  const caller = await deletionCaller(ctx, deps);
  if (caller.kind === 'relayed') return;
  const auth = parseAuthDict(caller.body['auth']);
  await requireUserInteractiveAuth(ctx, deps, caller.session, auth, deleteDevicesOperation([deviceId]));
  await deleteDevicesOf(ctx, deps, caller.session.localpart, [deviceId]);
  ctx.body = {};
}

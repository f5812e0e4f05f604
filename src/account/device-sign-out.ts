import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { logOf } from '../http/request-state.js';
import { sendRedirect } from '../pages/html-page.js';
import { deleteUserDevices } from '../sessions/device-deletion.js';
import { ssoError } from '../compat/sso/sso-error.js';
import { devicesOf } from './account-devices.js';
import { readAccountForm, requireRecentAuthentication } from './account-form.js';
import { accountPaths, actionPath } from './account-paths.js';

/**
 * POST /_matrix-compat-proxy/account/devices/sign-out — signs one of the user's devices out: a legacy session ends
 * (tokens dead, OP grant revoked), any other device is deleted at the homeserver, whose tokens then fail at once.
 */
export async function postDeviceSignOut(ctx: Context, deps: AppDeps): Promise<void> {
  const { session, form } = await readAccountForm(ctx, deps);
  const deviceId = form.get('device_id') ?? '';
  if (!(await requireRecentAuthentication(ctx, deps, session, actionPath('org.matrix.device_delete', deviceId)))) return;
  const { devices } = await devicesOf(deps, session);
  const device = devices.find((candidate) => candidate.deviceId === deviceId);
  if (device === undefined) throw ssoError('device_unknown');
  await deleteUserDevices(deps, session.localpart, [deviceId]);
  logOf(ctx, deps.logger).info({ event: 'account.device_signed_out', localpart: session.localpart, device_id: deviceId }, 'account.device_signed_out');
  const name = device.name ?? deviceId;
  sendRedirect(ctx, `${deps.config.public_baseurl}${accountPaths.page.slice(1)}?${new URLSearchParams({ action: 'org.matrix.devices_list', signed_out: name }).toString()}`, 303);
}

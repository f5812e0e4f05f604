import type { Context } from 'koa';
import type { AppDeps } from '../../app-deps.js';
import { MatrixError } from '../../errors/matrix-error.js';
import { accessTokenOf, requireSession } from '../../http/access-token.js';
import { bodyLimitsOf, expectObject, readBodyText } from '../../http/body.js';
import { logOf } from '../../http/request-state.js';
import type { Session } from '../../sessions/session.js';
import { deleteUserDevices } from '../../sessions/device-deletion.js';
import { looksLikeOurToken } from '../../sessions/tokens.js';
import { relayToHomeserver } from './homeserver-relay.js';

/**
 * What `DELETE /devices/{id}` and `POST /delete_devices` share: who is asking, the body, and the deletion itself.
 *
 * Only the proxy's own tokens are handled here. Any other token (a native OIDC client's, an application service's
 * MSC4190 device management with `?user_id=`) is the homeserver's business: the request goes on to it unchanged.
 */
export type DeletionCaller =
  | { readonly kind: 'session'; readonly session: Session; readonly body: Record<string, unknown> }
  | { readonly kind: 'relayed' };

export async function deletionCaller(ctx: Context, deps: AppDeps): Promise<DeletionCaller> {
  // Body first (bounded, with its deadline), so a relayed request carries it and a trickled one gets its 408.
  const text = await readBodyText(ctx, bodyLimitsOf(deps.config));
  const token = accessTokenOf(ctx);
  if (!looksLikeOurToken(token)) {
    await relayToHomeserver(ctx, deps, text);
    return { kind: 'relayed' };
  }
  const session = await requireSession(ctx, deps.sessions);
  return { kind: 'session', session, body: parseBody(text) };
}

/** Synapse reads a body that is not JSON at all as `{}` (old clients sent none with DELETE); other shapes are errors. */
function parseBody(text: string): Record<string, unknown> {
  if (text.trim() === '') return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return {};
  }
  return expectObject(parsed);
}

/** Deletes the caller's devices (sessions/device-deletion.ts) and logs it. */
export async function deleteDevicesOf(ctx: Context, deps: AppDeps, localpart: string, deviceIds: readonly string[]): Promise<void> {
  await deleteUserDevices(deps, localpart, deviceIds);
  logOf(ctx, deps.logger).info({ event: 'devices.deleted', localpart, device_ids: deviceIds }, 'devices.deleted');
}

/** A device id as the spec allows it in a path or a list. */
export function checkDeviceId(deviceId: string): string {
  if (deviceId.length === 0 || deviceId.length > 255) throw new MatrixError(400, 'M_INVALID_PARAM', 'device_id must be between 1 and 255 characters');
  return deviceId;
}

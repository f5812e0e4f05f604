/**
 * The Matrix scopes of MSC2967 (in the spec since v1.15, "OAuth 2.0 API", "Scope"), in their stable spelling and the
 * `org.matrix.msc2967` unstable one that Element X and matrix-js-sdk still send:
 *   urn:matrix:client:api:*            full client-server API access (what a legacy login gives)
 *   urn:matrix:client:device:<id>      binds the grant to one device; the CLIENT chooses the id
 */
export const API_SCOPE = 'urn:matrix:client:api:*';
export const UNSTABLE_API_SCOPE = 'urn:matrix:org.matrix.msc2967.client:api:*';
export const DEVICE_SCOPE_PREFIX = 'urn:matrix:client:device:';
export const UNSTABLE_DEVICE_SCOPE_PREFIX = 'urn:matrix:org.matrix.msc2967.client:device:';

/**
 * The device id grammar the server accepts. MSC2967 "Device ID allocation": clients SHOULD use RFC 3986 unreserved
 * characters and the server MAY refuse others; in any case the id must be made of RFC 6749 §3.3 scope-token
 * characters. Refusing everything outside `unreserved` keeps ids safe in URLs, in Synapse's device table and in
 * the account page's `device_id` query parameter. 255 bytes is Synapse's column bound for device ids.
 */
const DEVICE_ID = /^[A-Za-z0-9\-._~]{1,255}$/;

export function isValidDeviceId(deviceId: string): boolean {
  return DEVICE_ID.test(deviceId);
}

export type ScopeProblem = 'two_device_scopes' | 'bad_device_id';

export type MatrixScopes =
  | { readonly ok: true; readonly api: boolean; readonly deviceId: string | undefined; readonly others: readonly string[] }
  | { readonly ok: false; readonly problem: ScopeProblem; readonly description: string };

/**
 * Reads a space-separated scope string (RFC 6749 §3.3) once. MSC2967: the device scope MUST appear at most once —
 * two device scopes (of either spelling, even naming the same id) are refused, not resolved, so a grant can never
 * stand for two devices.
 */
export function parseMatrixScopes(scope: string): MatrixScopes {
  let api = false;
  let deviceId: string | undefined;
  const others: string[] = [];
  for (const token of new Set(scope.split(' ').filter((part) => part !== ''))) {
    if (token === API_SCOPE || token === UNSTABLE_API_SCOPE) {
      api = true;
      continue;
    }
    const id = deviceIdOf(token);
    if (id === undefined) {
      others.push(token);
      continue;
    }
    if (!isValidDeviceId(id)) return { ok: false, problem: 'bad_device_id', description: 'The device id in the device scope must be 1 to 255 characters from A-Z a-z 0-9 - . _ ~' };
    if (deviceId !== undefined) return { ok: false, problem: 'two_device_scopes', description: 'At most one device scope may be requested' };
    deviceId = id;
  }
  return { ok: true, api, deviceId, others };
}

/** Whether a scope token is a device scope (any id, even an invalid one), for the provider's scope admission. */
export function isDeviceScope(token: string): boolean {
  return deviceIdOf(token) !== undefined;
}

function deviceIdOf(token: string): string | undefined {
  if (token.startsWith(DEVICE_SCOPE_PREFIX)) return token.slice(DEVICE_SCOPE_PREFIX.length);
  if (token.startsWith(UNSTABLE_DEVICE_SCOPE_PREFIX)) return token.slice(UNSTABLE_DEVICE_SCOPE_PREFIX.length);
  return undefined;
}

/**
 * What a device id may be, wherever one enters (login of every type, the native-token relay). The Matrix spec puts
 * no grammar on device ids, but the proxy writes them into the introspection `scope` (a space-separated list of
 * RFC 6749 §3.3 scope-tokens) for homeservers without `X-MAS-Supports-Device-Id`, into store keys and into logs:
 * `"DEV1 urn:synapse:admin:*"` would add a scope that Synapse reads as server admin. So a device id is 1 to 255
 * characters (Synapse's limit when it reads one from a scope) of RFC 3986 unreserved and sub-delims plus `:@/`,
 * a subset of the scope-token characters — every device id a real client or Synapse generates fits.
 */
const SAFE_DEVICE_ID = /^[A-Za-z0-9._~!$&'()*+,;=:@/-]{1,255}$/;

export const DEVICE_ID_RULE = "1 to 255 characters from A-Z, a-z, 0-9 and ._~!$&'()*+,;=:@/-";

export function isSafeDeviceId(deviceId: string): boolean {
  return SAFE_DEVICE_ID.test(deviceId);
}

/** RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ). */
const SCOPE_TOKEN = /^[\x21\x23-\x5B\x5D-\x7E]+$/;

export function isScopeToken(value: string): boolean {
  return SCOPE_TOKEN.test(value);
}

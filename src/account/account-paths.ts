import { OWN_PREFIX } from '../http/own-prefix.js';

/** The account page's paths (all on the public listener, under the proxy's own prefix). */
export const ACCOUNT_PATH = `${OWN_PREFIX}/account`;
export const accountPaths = {
  page: ACCOUNT_PATH,
  signIn: `${ACCOUNT_PATH}/sign-in`,
  signOut: `${ACCOUNT_PATH}/sign-out`,
  deviceSignOut: `${ACCOUNT_PATH}/devices/sign-out`,
  crossSigningReset: `${ACCOUNT_PATH}/cross-signing-reset`,
} as const;

/**
 * Where a sign-in may return to: a path of the account page (with its query), nothing else — the value comes from
 * a query parameter, so anything that could leave the page (another origin, `//host`, a backslash) is refused.
 */
export function safeReturnPath(raw: string | undefined): string {
  if (raw === undefined || raw.length > 1024) return ACCOUNT_PATH;
  if (!(raw === ACCOUNT_PATH || raw.startsWith(`${ACCOUNT_PATH}?`) || raw.startsWith(`${ACCOUNT_PATH}#`))) return ACCOUNT_PATH;
  if (/[\\\u0000-\u001f\u007f]/.test(raw)) return ACCOUNT_PATH;
  return raw;
}

/** The page of an MSC4191 action, as a path to come back to. */
export function actionPath(action: string, deviceId?: string): string {
  const query = new URLSearchParams({ action, ...(deviceId === undefined ? {} : { device_id: deviceId }) });
  return `${ACCOUNT_PATH}?${query.toString()}`;
}

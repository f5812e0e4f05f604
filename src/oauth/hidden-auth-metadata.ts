import type { Context } from 'koa';
import { MatrixError } from '../errors/matrix-error.js';

/**
 * Where a client discovers the homeserver's OAuth 2.0 server: the stable path (Matrix spec v1.15, "OAuth 2.0 API",
 * GET /_matrix/client/v1/auth_metadata), MSC2965's unstable spelling of it, and MSC2965's earlier
 * `auth_issuer`, which Synapse still serves (synapse/rest/client/auth_metadata.py) and matrix-js-sdk falls back to.
 */
export const AUTH_DISCOVERY_PATHS = [
  '/_matrix/client/v1/auth_metadata',
  '/_matrix/client/unstable/org.matrix.msc2965/auth_metadata',
  '/_matrix/client/unstable/org.matrix.msc2965/auth_issuer',
] as const;

/**
 * GET auth_metadata / auth_issuer with `native_clients: hide`: the spec's answer of a server that does not support
 * the OAuth 2.0 API, 404 M_UNRECOGNIZED. A client that can do both then uses the legacy login API (GET /login),
 * which the proxy serves with any OP; matrix-js-sdk's getAuthMetadata() reads exactly this errcode as "no OAuth".
 */
export function getHiddenAuthMetadata(_ctx: Context): never {
  throw new MatrixError(404, 'M_UNRECOGNIZED', 'This homeserver does not offer the OAuth 2.0 API; use the legacy login API');
}

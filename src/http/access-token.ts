import type { Context } from 'koa';
import { matrixErrors } from '../errors/matrix-error.js';
import { bearerTokenOfHeader } from '../security/shared-secret.js';
import type { Session } from '../sessions/session.js';
import type { SessionStore } from '../sessions/session-store.js';

/**
 * The access token of a request: `Authorization: Bearer`, or the deprecated `access_token` query parameter that
 * legacy clients and sytest still send. Missing → 401 M_MISSING_TOKEN.
 */
export function accessTokenOf(ctx: Context): string {
  const header = ctx.get('authorization');
  if (header !== '') {
    const token = bearerTokenOfHeader(header);
    if (token !== undefined) return token;
    throw matrixErrors.unknownToken();
  }
  const fromQuery = ctx.query['access_token'];
  if (typeof fromQuery === 'string' && fromQuery !== '') return fromQuery;
  throw matrixErrors.missingToken();
}

/**
 * The live legacy session behind the request's token. Tokens the proxy did not issue (native OIDC clients) and
 * unknown tokens → 401 M_UNKNOWN_TOKEN; an expired refreshable token → soft logout, so the client refreshes.
 */
export async function requireSession(ctx: Context, sessions: SessionStore, options: { allowExpired?: boolean } = {}): Promise<Session> {
  const token = accessTokenOf(ctx);
  const result = await sessions.authenticate(token);
  if (result.ok) return result.session;
  if (result.reason === 'expired' && options.allowExpired === true) {
    // Logging out with an expired (soft-logged-out) token is allowed, as in Synapse.
    const session = await sessions.sessionOfToken(token);
    if (session !== undefined) return session;
  }
  switch (result.reason) {
    case 'expired':
      throw matrixErrors.unknownToken(true);
    case 'malformed':
    case 'unknown':
      throw matrixErrors.unknownToken();
  }
}

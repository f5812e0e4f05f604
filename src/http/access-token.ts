import type { IncomingMessage } from 'node:http';
import type { Context } from 'koa';
import { matrixErrors } from '../errors/matrix-error.js';
import type { Session } from '../sessions/session.js';
import type { SessionStore } from '../sessions/session-store.js';

/** The token of an `Authorization: Bearer <token>` header value; undefined when absent or of another scheme. */
export function bearerTokenOfHeader(header: string | undefined): string | undefined {
  return header === undefined ? undefined : /^Bearer\s+(\S+)\s*$/i.exec(header)?.[1];
}

export function bearerTokenOf(ctx: Context): string | undefined {
  return bearerTokenOfHeader(ctx.get('authorization') || undefined);
}

/**
 * The access token of a raw request (the pass-through path, before Koa): `Authorization: Bearer`, or the deprecated
 * `access_token` query parameter that legacy clients and sytest still send. Undefined when neither is usable.
 */
export function accessTokenOfRequest(req: IncomingMessage): string | undefined {
  const header = req.headers.authorization;
  if (header !== undefined) return bearerTokenOfHeader(header);
  const url = req.url ?? '';
  const queryStart = url.indexOf('?');
  if (queryStart < 0 || !url.includes('access_token=', queryStart)) return undefined;
  const token = new URLSearchParams(url.slice(queryStart + 1)).get('access_token');
  return token === null || token === '' ? undefined : token;
}

/**
 * The access token of a request to an owned route, by the same rules; missing → 401 M_MISSING_TOKEN, an
 * Authorization header of another scheme → 401 M_UNKNOWN_TOKEN (as Synapse answers).
 */
export function accessTokenOf(ctx: Context): string {
  if (ctx.get('authorization') !== '') {
    const token = bearerTokenOf(ctx);
    if (token !== undefined) return token;
    throw matrixErrors.unknownToken();
  }
  const token = accessTokenOfRequest(ctx.req);
  if (token === undefined) throw matrixErrors.missingToken();
  return token;
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
    case 'foreign':
    case 'unknown':
      throw matrixErrors.unknownToken();
  }
}

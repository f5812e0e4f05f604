import { createHash } from 'node:crypto';
import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import type { AccountSession } from '../sessions/account-sessions.js';
import { isOpaqueSecret, sameHash } from '../sessions/tokens.js';

/**
 * The account page's own session cookie: `__Host-` over HTTPS (RFC 6265bis §4.1.3.2: this origin only, Secure,
 * Path=/), a plain name on a plain-HTTP development origin; HttpOnly and SameSite=Lax (no cross-site POST carries
 * it), short-lived (`account.session_lifetime`). It holds only the page session's id.
 */
function cookieName(publicBaseUrl: string): string {
  return publicBaseUrl.startsWith('https:') ? '__Host-mcp-account' : 'mcp-account';
}

export function readAccountCookie(ctx: Context, deps: Pick<AppDeps, 'config'>): string | undefined {
  const name = cookieName(deps.config.public_baseurl);
  for (const part of ctx.get('cookie').split(';')) {
    const equals = part.indexOf('=');
    if (equals < 0 || part.slice(0, equals).trim() !== name) continue;
    const value = part.slice(equals + 1).trim();
    return isOpaqueSecret(value) ? value : undefined;
  }
  return undefined;
}

export function setAccountCookie(ctx: Context, deps: Pick<AppDeps, 'config'>, id: string, maxAgeMs: number): void {
  const secure = deps.config.public_baseurl.startsWith('https:');
  const attributes = [`${cookieName(deps.config.public_baseurl)}=${id}`, 'Path=/', `Max-Age=${Math.max(0, Math.floor(maxAgeMs / 1000))}`, 'HttpOnly', 'SameSite=Lax'];
  // Set by hand: Koa's cookie helper refuses Secure on a plain-HTTP hop behind a TLS-terminating proxy.
  if (secure) attributes.push('Secure');
  ctx.append('Set-Cookie', attributes.join('; '));
}

export function clearAccountCookie(ctx: Context, deps: Pick<AppDeps, 'config'>): void {
  setAccountCookie(ctx, deps, '', 0);
}

/** The signed-in page session of this browser, if any. */
export async function currentAccountSession(ctx: Context, deps: AppDeps): Promise<{ id: string; session: AccountSession } | undefined> {
  const id = readAccountCookie(ctx, deps);
  const session = id === undefined ? undefined : await deps.accountSessions.get(id);
  return id === undefined || session === undefined ? undefined : { id, session };
}

/**
 * The forms' anti-CSRF token: derived from the page session's id, which only the browser's HttpOnly cookie holds, so
 * it is stored nowhere and no other site can compute it (SameSite=Lax already keeps the cookie off cross-site POSTs).
 */
export function accountCsrfToken(sessionId: string): string {
  return createHash('sha256').update(`matrix-compat-proxy/account-csrf/v1\0${sessionId}`).digest('base64url');
}

export function validAccountCsrfToken(sessionId: string, presented: string | null): boolean {
  return presented !== null && sameHash(presented, accountCsrfToken(sessionId));
}

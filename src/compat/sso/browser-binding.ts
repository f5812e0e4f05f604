import type { Context } from 'koa';
import { createHash } from 'node:crypto';
import { hashToken, isOpaqueSecret, newOpaqueSecret, sameHash } from '../../sessions/tokens.js';

/**
 * The cookie that ties an SSO login to the browser that started it (Matrix C-S spec, "Security considerations" of
 * SSO: guard against unsolicited callbacks). The cookie holds a random secret; pending logins and confirmations
 * keep only its hash. One secret per browser, reused by later logins, so two tabs signing in at once both work.
 */

/** `__Host-` (RFC 6265bis §4.1.3.2) pins the cookie to this exact origin when the proxy is served over HTTPS. */
function cookieName(secure: boolean): string {
  return secure ? '__Host-mcp-sso' : 'mcp-sso';
}

export interface BrowserBinding {
  /** The browser's secret from its cookie; undefined when it sent none (or garbage). */
  read(ctx: Context): string | undefined;
  /** Reuses the browser's secret or makes one, and (re)sets the cookie for `maxAgeMs`. */
  issue(ctx: Context, maxAgeMs: number): string;
  /** Whether the request's cookie is the one whose hash is `expectedHash`. */
  matches(ctx: Context, expectedHash: string): boolean;
}

export function browserBinding(publicBaseUrl: string): BrowserBinding {
  const secure = publicBaseUrl.startsWith('https:');
  const name = cookieName(secure);
  const read = (ctx: Context): string | undefined => {
    const value = cookieValue(ctx.get('cookie'), name);
    return value !== undefined && isOpaqueSecret(value) ? value : undefined;
  };
  return {
    read,
    issue(ctx, maxAgeMs) {
      const secret = read(ctx) ?? newOpaqueSecret();
      const attributes = [`${name}=${secret}`, 'Path=/', `Max-Age=${Math.max(1, Math.floor(maxAgeMs / 1000))}`, 'HttpOnly', 'SameSite=Lax'];
      // Set by hand: Koa's cookie helper refuses Secure on a plain-HTTP hop behind a TLS-terminating proxy.
      if (secure) attributes.push('Secure');
      ctx.append('Set-Cookie', attributes.join('; '));
      return secret;
    },
    matches(ctx, expectedHash) {
      const secret = read(ctx);
      return secret !== undefined && sameHash(hashToken(secret), expectedHash);
    },
  };
}

export function bindingHash(secret: string): string {
  return hashToken(secret);
}

/**
 * The confirmation form's anti-CSRF token: derived from the confirmation id and the browser's secret, so it is
 * stored nowhere and only the browser holding the cookie (which SameSite=Lax keeps off cross-site POSTs) has it.
 */
export function csrfTokenFor(confirmationId: string, browserSecret: string): string {
  return createHash('sha256').update(`matrix-compat-proxy/sso-confirm-csrf/v1\0${confirmationId}\0${browserSecret}`).digest('base64url');
}

function cookieValue(header: string, name: string): string | undefined {
  for (const part of header.split(';')) {
    const equals = part.indexOf('=');
    if (equals < 0) continue;
    if (part.slice(0, equals).trim() === name) return part.slice(equals + 1).trim();
  }
  return undefined;
}

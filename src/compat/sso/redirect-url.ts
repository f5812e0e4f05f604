/**
 * The `redirectUrl` of `/login/sso/redirect` is chosen by whoever crafted the link, so it is an open-redirect and
 * token-theft vector (demand-and-security §3a; oauth2-proxy CVE-2020-5233, CVE-2020-11053). Validation here only
 * rejects what is malformed or dangerous to a browser; a well-formed foreign URL (`https://client.evil/`) passes,
 * and the confirmation page naming its host is what protects the user.
 */
export type RedirectUrlResult =
  | { readonly ok: true; readonly url: URL }
  | { readonly ok: false; readonly reason: 'missing' | 'invalid' };

const MAX_LENGTH = 2048;
/** RFC 3986 §3.1 scheme, required at the very start: `//evil` and `/\evil` have none. */
const SCHEME_PREFIX = /^[A-Za-z][A-Za-z0-9+.-]*:/;
/** Schemes that run code or read local data in the browser's context instead of navigating to a client. */
const FORBIDDEN_SCHEMES = new Set(['javascript:', 'data:', 'vbscript:', 'file:', 'blob:', 'about:', 'filesystem:']);
/** Raw control characters, whitespace and backslashes (after query decoding, so `%0d%0a` and `%09` land here). */
const UNSAFE_CHARACTERS = /[\u0000-\u0020\u007f-\u009f\\\u00a0\u1680\u2000-\u200f\u2028\u2029\u202f\u205f\u3000\ufeff]/u;
/**
 * Control characters still percent-encoded (`%250d%250a` survives one decode as `%0d%0a`; tab and newline are what
 * CVE-2020-11053 slipped between slashes). An encoded space stays allowed: query values may carry one.
 */
const ENCODED_CONTROL = /%(?:[01][0-9a-f]|7f)/i;

export function parseRedirectUrl(raw: string | undefined): RedirectUrlResult {
  if (raw === undefined || raw === '') return { ok: false, reason: 'missing' };
  if (raw.length > MAX_LENGTH || UNSAFE_CHARACTERS.test(raw) || ENCODED_CONTROL.test(raw)) return { ok: false, reason: 'invalid' };
  if (!SCHEME_PREFIX.test(raw)) return { ok: false, reason: 'invalid' };
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return { ok: false, reason: 'invalid' };
  }
  if (FORBIDDEN_SCHEMES.has(url.protocol)) return { ok: false, reason: 'invalid' };
  if (url.username !== '' || url.password !== '') return { ok: false, reason: 'invalid' };
  const authority = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/([^/?#]*)/.exec(raw)?.[1];
  if (authority?.includes('@') === true) return { ok: false, reason: 'invalid' };
  if (url.protocol === 'http:' || url.protocol === 'https:') {
    // The WHATWG parser repairs `https:evil`, `https:/evil` and `https:///evil` into `https://evil/`; a client never
    // sends those, so anything but `scheme://host` is refused rather than guessed at.
    if (!/^https?:\/\/[^/\\?#@]/i.test(raw) || url.hostname === '') return { ok: false, reason: 'invalid' };
  }
  return { ok: true, url };
}

/**
 * `redirectUrl` with `loginToken=<token>` appended (Matrix C-S spec, "Redirecting to the client"): other query
 * parameters kept byte for byte, every existing `loginToken` removed, the fragment kept after the query.
 */
export function withLoginToken(redirectUrl: string, loginToken: string): string {
  const hashAt = redirectUrl.indexOf('#');
  const beforeFragment = hashAt < 0 ? redirectUrl : redirectUrl.slice(0, hashAt);
  const fragment = hashAt < 0 ? '' : redirectUrl.slice(hashAt);
  const queryAt = beforeFragment.indexOf('?');
  const base = queryAt < 0 ? beforeFragment : beforeFragment.slice(0, queryAt);
  const query = queryAt < 0 ? '' : beforeFragment.slice(queryAt + 1);
  const kept = query.split('&').filter((part) => part !== '' && parameterName(part) !== 'loginToken');
  kept.push(`loginToken=${encodeURIComponent(loginToken)}`);
  return `${base}?${kept.join('&')}${fragment}`;
}

function parameterName(part: string): string {
  const equals = part.indexOf('=');
  const name = equals < 0 ? part : part.slice(0, equals);
  try {
    return decodeURIComponent(name.replace(/\+/g, ' '));
  } catch {
    return name;
  }
}

/** Synapse's `sso.client_whitelist`: plain prefixes of the redirect URL (each must end with '/', see the config). */
export function isWhitelisted(redirectUrl: string, whitelist: readonly string[]): boolean {
  return whitelist.some((prefix) => redirectUrl.startsWith(prefix));
}

/** What the confirmation page names as the destination: the host for web URLs, the scheme (and host) for apps. */
export function destinationLabel(url: URL): string {
  if (url.protocol === 'http:' || url.protocol === 'https:') return url.host;
  return url.host === '' ? url.protocol.slice(0, -1) : `${url.protocol}//${url.host}`;
}

/**
 * The CSP `form-action` source allowing the confirmation form's redirect to the client: Chromium checks
 * form-action against every redirect of a form submission (CSP3 §6.3.1.1), so `'self'` alone would block it.
 */
export function formActionSource(url: URL): string {
  if ((url.protocol === 'http:' || url.protocol === 'https:') && /^[a-z0-9.-]+$/i.test(url.hostname)) {
    return `${url.protocol}//${url.host}`;
  }
  // CSP host-source has no IPv6 literal syntax and apps have no host: fall back to the scheme alone.
  return url.protocol;
}

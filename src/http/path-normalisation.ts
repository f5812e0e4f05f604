/**
 * The canonical form of a request path, used only to decide whether the proxy owns a route (login, logout, refresh,
 * SSO). The request that is passed through keeps its raw path; this form never reaches the homeserver.
 *
 * The danger is a variant that the homeserver, or a server or proxy between us and it, reads as an owned route while
 * we do not (`/_matrix/client/v3//login`, `/_matrix/client/v3/%6Cogin`, `.../v3/x/../login`, `.../v3\login`). So
 * every doubt resolves towards "looks like the owned route": decoding is repeated, `\` counts as a separator, dot
 * segments are resolved. Wrongly treating a path as ours is harmless (we answer it ourselves); the reverse is a bypass.
 *
 * Returns undefined when the path cannot be read safely (the app answers 400 instead of forwarding): not origin-form,
 * a malformed or non-UTF-8 escape in the raw path, control characters once decoded, or more than three layers of
 * percent-encoding.
 */
export function normaliseMatrixPath(rawPath: string): string | undefined {
  // A raw `#` ends the path (RFC 3986 §3.5; a request target never carries a fragment, RFC 9112 §3.2): nginx and
  // most hops drop it, so `/login#x` reaches the homeserver as `/login`. Judge the path a hop would see.
  const fragment = rawPath.indexOf('#');
  if (fragment >= 0) return normaliseMatrixPath(rawPath.slice(0, fragment));
  // RFC 9112 §3.2: absolute-form, authority-form and `*` are not paths of this server.
  if (!rawPath.startsWith('/')) return undefined;
  // Nearly every request: nothing to decode, no backslash, no control character, no empty or dot segment, no trailing
  // slash. Such a path is its own canonical form (the steps below would return it unchanged), so skip them.
  if (PLAIN_PATH.test(rawPath)) return rawPath;

  const decoded = decodeLayers(rawPath);
  if (decoded === undefined) return undefined;
  if (CONTROL_CHARACTER.test(decoded)) return undefined;

  return resolveSegments(decoded.replaceAll('\\', '/'));
}

/**
 * Segments of unreserved and sub-delim characters, `:` and `@` (RFC 3986 §3.3, no `%`), each starting with
 * anything but a dot, so none is `.` or `..`; no empty segment, no trailing slash.
 */
const PLAIN_PATH = /^(?:\/[A-Za-z0-9_~!$&'()*+,;=:@-][A-Za-z0-9._~!$&'()*+,;=:@-]*)+$/;
const MAX_DECODING_ROUNDS = 3;
const ESCAPE = /%[0-9A-Fa-f]{2}/;
const ESCAPE_RUN = /(?:%[0-9A-Fa-f]{2})+/g;
const CONTROL_CHARACTER = /[\u0000-\u001f\u007f]/;

/**
 * The first round is strict, because a malformed escape in what the client sent is a malformed request
 * (RFC 3986 §2.1). Later rounds only exist to unwrap double encoding, and a leftover `%` there is usually a literal
 * percent sign that was encoded once (`%25`), so they decode what they can and leave the rest.
 */
function decodeLayers(rawPath: string): string | undefined {
  let current = decodeStrict(rawPath);
  if (current === undefined) return undefined;
  for (let round = 2; round <= MAX_DECODING_ROUNDS && ESCAPE.test(current); round++) {
    current = current.replace(ESCAPE_RUN, decodeLeniently);
  }
  return ESCAPE.test(current) ? undefined : current;
}

function decodeStrict(text: string): string | undefined {
  try {
    return decodeURIComponent(text);
  } catch {
    return undefined;
  }
}

/** Invalid UTF-8 becomes U+FFFD, which can never be part of an owned route. */
function decodeLeniently(escapeRun: string): string {
  return Buffer.from(escapeRun.replaceAll('%', ''), 'hex').toString('utf8');
}

/** RFC 3986 §5.2.4 dot-segment removal, plus empty segments dropped (repeated and trailing slashes). */
function resolveSegments(path: string): string {
  const resolved: string[] = [];
  for (const segment of path.split('/')) {
    if (segment === '' || segment === '.') continue;
    if (segment === '..') resolved.pop();
    else resolved.push(segment);
  }
  return `/${resolved.join('/')}`;
}

/**
 * Splits a request target into its path and its query (with the `?`), dropping a raw `#` and what follows it: the
 * fragment is the client's own (RFC 3986 §3.5) and must not reach the homeserver, where a hop would drop it anyway.
 */
export function splitRequestTarget(url: string): { readonly rawPath: string; readonly query: string } {
  const fragment = url.indexOf('#');
  const target = fragment < 0 ? url : url.slice(0, fragment);
  const queryStart = target.indexOf('?');
  return queryStart < 0 ? { rawPath: target, query: '' } : { rawPath: target.slice(0, queryStart), query: target.slice(queryStart) };
}

import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { peerAddress } from '../http/client-address.js';
import type { TrustedProxies } from '../http/trusted-proxies.js';

/** RFC 9110 §7.6.1: meaningful for one connection only; a proxy must not forward them in either direction. */
const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/**
 * How the body of an incoming request is delimited; the hop to the homeserver must delimit it the same way.
 * `codings` is the Transfer-Encoding as received: Node undoes only the final `chunked`, so any coding before it
 * (`gzip, chunked`) still applies to the bytes we pass on.
 */
export type BodyFraming =
  | { readonly kind: 'chunked'; readonly codings: string }
  | { readonly kind: 'length'; readonly length: string }
  | { readonly kind: 'none' };

/** The lengths of the fixed set's names: a header name of another length cannot be one of them. */
const HOP_BY_HOP_LENGTHS: ReadonlySet<number> = new Set([...HOP_BY_HOP].map((name) => name.length));

const NO_BODY: BodyFraming = Object.freeze({ kind: 'none' });

/** Node's parser has already refused both headers at once, a malformed length, and codings not ending in chunked. */
export function bodyFraming(req: IncomingMessage): BodyFraming {
  const codings = req.headers['transfer-encoding'];
  if (codings !== undefined) return { kind: 'chunked', codings };
  const length = req.headers['content-length'];
  return length === undefined ? NO_BODY : { kind: 'length', length };
}

/**
 * The headers of the request to the homeserver: end-to-end headers as received, hop-by-hop ones dropped, and the
 * X-Forwarded-* set rebuilt from what we know. The caller settles the body framing (see bodyFraming).
 */
export function upstreamRequestHeaders(req: IncomingMessage, trusted: TrustedProxies): IncomingHttpHeaders {
  const incoming = req.headers;
  const peer = peerAddress(req) ?? 'unknown';
  const peerIsTrusted = trusted.contains(peer);
  const dropped = connectionScoped(incoming.connection);
  const headers: IncomingHttpHeaders = {};
  for (const name of Object.keys(incoming)) {
    const value = incoming[name];
    if (value === undefined || dropped.has(name)) continue;
    // Node already answered the client's 100-continue (no checkContinue listener); a second one would reach nobody.
    if (name === 'expect') continue;
    if (!peerIsTrusted && isForwardingHeader(name)) continue;
    headers[name] = value;
  }

  const fromTrustedHop = (name: string) => (peerIsTrusted && !dropped.has(name) ? joined(incoming[name]) : undefined);
  const ownProto = (req.socket as Partial<TLSSocket>).encrypted === true ? 'https' : 'http';
  const previousChain = fromTrustedHop('x-forwarded-for');
  headers['x-forwarded-for'] = previousChain === undefined || previousChain === '' ? peer : `${previousChain}, ${peer}`;
  headers['x-forwarded-proto'] = fromTrustedHop('x-forwarded-proto') ?? ownProto;
  const forwardedHost = fromTrustedHop('x-forwarded-host') ?? incoming.host;
  if (forwardedHost === undefined) delete headers['x-forwarded-host'];
  else headers['x-forwarded-host'] = forwardedHost;
  return headers;
}

/** The homeserver's response headers for the client, as a flat raw list (case and repeats kept), hop-by-hop dropped. */
export function downstreamResponseHeaders(rawHeaders: readonly string[]): string[] {
  let connectionValues: string | string[] | undefined;
  for (let index = 0; index + 1 < rawHeaders.length; index += 2) {
    const name = rawHeaders[index] as string;
    if (name.length === 10 && name.toLowerCase() === 'connection') {
      const value = rawHeaders[index + 1] as string;
      if (connectionValues === undefined) connectionValues = value;
      else if (typeof connectionValues === 'string') connectionValues = [connectionValues, value];
      else connectionValues.push(value);
    }
  }
  const dropped = connectionScoped(connectionValues);
  // With the fixed set only, a name of a length none of its members has is kept without lowering its case (most
  // response headers: no string made per header).
  const byLength = dropped === HOP_BY_HOP;
  const kept: string[] = [];
  for (let index = 0; index + 1 < rawHeaders.length; index += 2) {
    const name = rawHeaders[index] as string;
    if ((byLength && !HOP_BY_HOP_LENGTHS.has(name.length)) || !dropped.has(name.toLowerCase())) kept.push(name, rawHeaders[index + 1] as string);
  }
  return kept;
}

/**
 * The fixed hop-by-hop set plus every field the sender named in Connection (RFC 9110 §7.6.1). Read-only: without a
 * Connection header, or one naming only fields of the fixed set (`keep-alive`: the usual case), it is the
 * fixed set itself, not a copy made per message.
 */
function connectionScoped(connection: string | readonly string[] | undefined): ReadonlySet<string> {
  // What nearly every client and server sends: nothing to split or lower.
  if (connection === undefined || connection === 'keep-alive' || connection === 'close') return HOP_BY_HOP;
  let names: Set<string> | undefined;
  for (const value of typeof connection === 'string' ? [connection] : connection) {
    for (const token of value.split(',')) {
      const name = token.trim().toLowerCase();
      if (name === '' || HOP_BY_HOP.has(name)) continue;
      names ??= new Set(HOP_BY_HOP);
      names.add(name);
    }
  }
  return names ?? HOP_BY_HOP;
}

/** Headers that claim something about earlier hops; only a trusted proxy may make such claims. */
function isForwardingHeader(name: string): boolean {
  return name === 'forwarded' || name === 'x-real-ip' || name.startsWith('x-forwarded-');
}

function joined(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value.join(', ') : value;
}

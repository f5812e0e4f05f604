import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { peerAddress } from './client-address.js';
import type { TrustedProxies } from './trusted-proxies.js';

/** RFC 9110 §7.6.1: meaningful for one connection only; a proxy must not forward them in either direction. */
const HOP_BY_HOP = new Set([
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

/** How the body of an incoming request is delimited; the hop to the homeserver must delimit it the same way. */
export type BodyFraming = 'content-length' | 'chunked' | 'none';

export function bodyFraming(req: IncomingMessage): BodyFraming {
  if (req.headers['transfer-encoding'] !== undefined) return 'chunked';
  if (req.headers['content-length'] !== undefined) return 'content-length';
  return 'none';
}

/**
 * The headers of the request to the homeserver: end-to-end headers as received, hop-by-hop ones dropped, the body
 * framed explicitly, and the X-Forwarded-* set rebuilt from what we know.
 */
export function upstreamRequestHeaders(req: IncomingMessage, trusted: TrustedProxies): IncomingHttpHeaders {
  const incoming = req.headers;
  const peer = peerAddress(req) ?? 'unknown';
  const peerIsTrusted = trusted.contains(peer);
  const dropped = connectionScoped(incoming.connection);
  const headers: IncomingHttpHeaders = {};
  for (const [name, value] of Object.entries(incoming)) {
    if (value === undefined || dropped.has(name)) continue;
    // Node already answered the client's 100-continue (no checkContinue listener); a second one would reach nobody.
    if (name === 'expect') continue;
    if (!peerIsTrusted && isForwardingHeader(name)) continue;
    headers[name] = value;
  }

  // Framing is ours to decide, whatever the Connection header listed: a body sent without Content-Length or
  // Transfer-Encoding would be read by the homeserver as the next request on a kept-alive socket (RFC 9112 §11.2).
  // Node chunks POST/PUT on its own but not GET/DELETE/OPTIONS, so say it explicitly.
  delete headers['content-length'];
  const framing = bodyFraming(req);
  if (framing === 'content-length') headers['content-length'] = incoming['content-length'];
  if (framing === 'chunked') headers['transfer-encoding'] = 'chunked';

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
  const connectionValues: string[] = [];
  for (let index = 0; index + 1 < rawHeaders.length; index += 2) {
    if ((rawHeaders[index] as string).toLowerCase() === 'connection') connectionValues.push(rawHeaders[index + 1] as string);
  }
  const dropped = connectionScoped(connectionValues);
  const kept: string[] = [];
  for (let index = 0; index + 1 < rawHeaders.length; index += 2) {
    const name = rawHeaders[index] as string;
    if (!dropped.has(name.toLowerCase())) kept.push(name, rawHeaders[index + 1] as string);
  }
  return kept;
}

/** The fixed hop-by-hop set plus every field the sender named in Connection (RFC 9110 §7.6.1). */
function connectionScoped(connection: string | readonly string[] | undefined): Set<string> {
  const names = new Set(HOP_BY_HOP);
  const values = typeof connection === 'string' ? [connection] : (connection ?? []);
  for (const value of values) {
    for (const token of value.split(',')) {
      const name = token.trim().toLowerCase();
      if (name !== '') names.add(name);
    }
  }
  return names;
}

/** Headers that claim something about earlier hops; only a trusted proxy may make such claims. */
function isForwardingHeader(name: string): boolean {
  return name === 'forwarded' || name === 'x-real-ip' || name.startsWith('x-forwarded-');
}

function joined(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value.join(', ') : value;
}

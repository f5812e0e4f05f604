import type { IncomingMessage } from 'node:http';
import { canonicalIp, trustedProxies } from './trusted-proxies.js';

/** The TCP peer of a request as a bare IP, or undefined once the socket is gone. */
export function peerAddress(req: IncomingMessage): string | undefined {
  const remote = req.socket.remoteAddress;
  return remote === undefined ? undefined : (canonicalIp(remote) ?? remote);
}

/**
 * The address to rate-limit and log a request by. From an untrusted peer that is the peer itself, whatever headers
 * it sent. Behind trusted proxies it is the right-most X-Forwarded-For entry that is not itself a trusted proxy:
 * entries further left were written by the client and prove nothing.
 */
export function clientIp(req: IncomingMessage, trustedProxyCidrs: readonly string[]): string {
  const peer = peerAddress(req);
  if (peer === undefined) return 'unknown';
  const trusted = trustedProxies(trustedProxyCidrs);
  if (!trusted.contains(peer)) return peer;

  let nearest = peer;
  const chain = forwardedForChain(req.headers['x-forwarded-for']);
  for (let index = chain.length - 1; index >= 0; index--) {
    const hop = canonicalIp(chain[index] as string);
    // Garbage in the chain: a trusted proxy passed it on unchecked, so the last hop we can vouch for is the answer.
    if (hop === undefined) return nearest;
    if (!trusted.contains(hop)) return hop;
    nearest = hop;
  }
  return nearest;
}

/** Node joins repeated X-Forwarded-For headers with ", ", so one split covers both spellings of a chain. */
function forwardedForChain(header: string | string[] | undefined): string[] {
  const joined = Array.isArray(header) ? header.join(',') : (header ?? '');
  return joined
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '');
}

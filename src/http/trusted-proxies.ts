import { BlockList, isIP } from 'node:net';

/** The configured `trusted_proxies`: the peers whose X-Forwarded-For chain we believe. */
export interface TrustedProxies {
  contains(address: string): boolean;
}

const NO_TRUSTED_PROXY: TrustedProxies = { contains: () => false };

// The config array is frozen and lives as long as the process, so each list is compiled once, not per request.
const compiled = new WeakMap<readonly string[], TrustedProxies>();

/** Compiles CIDRs ("10.0.0.0/8", "fd00::/8", or a bare address for a single host); throws on a malformed entry. */
export function trustedProxies(cidrs: readonly string[]): TrustedProxies {
  const cached = compiled.get(cidrs);
  if (cached !== undefined) return cached;
  // No trusted proxy (the default): nothing to parse per request (every request asks, introspection included).
  if (cidrs.length === 0) return NO_TRUSTED_PROXY;

  const list = new BlockList();
  for (const cidr of cidrs) {
    const [address = '', prefixText, extra] = cidr.trim().split('/');
    const family = isIP(address);
    const maxPrefix = family === 4 ? 32 : 128;
    const prefix = prefixText === undefined ? maxPrefix : /^\d{1,3}$/.test(prefixText) ? Number(prefixText) : Number.NaN;
    if (family === 0 || extra !== undefined || !(prefix >= 0 && prefix <= maxPrefix)) {
      throw new Error(`trusted proxy "${cidr}" is not a CIDR such as 10.0.0.0/8 or fd00::/8`);
    }
    list.addSubnet(address, prefix, family === 4 ? 'ipv4' : 'ipv6');
  }
  const matcher: TrustedProxies = {
    contains(address) {
      const ip = canonicalIp(address);
      if (ip === undefined) return false;
      return list.check(ip, isIP(ip) === 4 ? 'ipv4' : 'ipv6');
    },
  };
  compiled.set(cidrs, matcher);
  return matcher;
}

/**
 * An address as found in a socket or an X-Forwarded-For entry, reduced to a bare IP: brackets and ports dropped,
 * IPv4-mapped IPv6 (`::ffff:10.0.0.1`, what a dual-stack listener reports) written as IPv4 so that one client has
 * one spelling. Undefined when it is not an IP at all.
 */
export function canonicalIp(text: string): string | undefined {
  // A socket's own address (every request asks) is a bare IP already: no brackets or port to take off.
  const bare = isIP(text);
  if (bare === 4) return text;
  if (bare === 6) return unmapped(text.toLowerCase());
  let candidate = text.trim();
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(candidate);
  if (bracketed) candidate = bracketed[1] as string;
  const ipv4WithPort = /^(\d{1,3}(?:\.\d{1,3}){3}):\d+$/.exec(candidate);
  if (ipv4WithPort) candidate = ipv4WithPort[1] as string;

  const family = isIP(candidate);
  if (family === 4) return candidate;
  if (family !== 6) return undefined;
  return unmapped(candidate.toLowerCase());
}

/** An IPv4-mapped IPv6 address (lower-cased) as its IPv4 address; any other IPv6 address as it is. */
function unmapped(lowerIpv6: string): string {
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/.exec(lowerIpv6);
  return mapped ? (mapped[1] as string) : lowerIpv6;
}

import { isIPv6 } from 'node:net';
import type { Store } from '../store/store.js';

/**
 * One canonical name per account, used by the per-account throttle, the bindings and the OP call alike, so that
 * `"mallory"`, `"mallory "`, `"\tmallory"`, `"MALLORY"`, `"ｍａｌｌｏｒｙ"`, `"@mallory:server"` and mallory's e-mail
 * address are ONE account everywhere (OPs trim user names and accept e-mail logins; a bucket per spelling lets an
 * attacker guess passwords once per spelling).
 *
 * The steps, in order: surrounding whitespace trimmed; any control character left refuses the name (it is no
 * name a person types); NFKC (UAX #15: full-width and compatibility forms fold to what they look like); then the
 * Matrix rule that user ids are case-insensitive at login (Synapse looks the user up case-insensitively; the spec's
 * "User Identifiers" grammar is lower-case) for user names, and RFC 5321 practice as Synapse applies it
 * (`canonicalise_email`: lower-case) for e-mail addresses.
 */
export type AccountName =
  | { readonly kind: 'localpart'; readonly name: string }
  | { readonly kind: 'email'; readonly address: string }
  | { readonly kind: 'foreign_server' }
  /** Empty, over-long or with control characters: refused without asking the OP (never a 5xx). */
  | { readonly kind: 'malformed' };

/** The longest user name or e-mail worth asking an OP about (a Matrix user id is at most 255 bytes, RFC 5321 §4.5.3.1.3 an address 254). */
export const MAX_ACCOUNT_NAME_LENGTH = 255;
/** Longer passwords are refused locally: no OP needs more, and a 60,000-character one only costs the OP work. */
export const MAX_PASSWORD_LENGTH = 1024;

// C0 controls, DEL, C1 controls, and the Unicode line/paragraph separators.
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;

/** The name as typed in `m.id.user` (or the deprecated top-level `user`): a localpart, an MXID, or an e-mail. */
export function canonicalUser(typed: string, serverName: string): AccountName {
  const text = cleaned(typed);
  if (text === undefined) return MALFORMED;
  if (text.startsWith('@')) {
    const separator = text.indexOf(':');
    const localpart = separator < 0 ? text.slice(1) : text.slice(1, separator);
    if (separator >= 0 && text.slice(separator + 1).toLowerCase() !== serverName.toLowerCase()) return { kind: 'foreign_server' };
    return localpart === '' ? MALFORMED : { kind: 'localpart', name: localpart.toLowerCase() };
  }
  // `@` is not in the localpart grammar: a user name with one inside is an e-mail address typed as a user name,
  // which OPs with e-mail login accept as such.
  if (text.includes('@')) return { kind: 'email', address: text.toLowerCase() };
  return { kind: 'localpart', name: text.toLowerCase() };
}

/** An address from `m.id.thirdparty` (medium `email`) or the deprecated top-level `medium`/`address`. */
export function canonicalEmail(typed: string): AccountName {
  const text = cleaned(typed);
  if (text === undefined || !text.includes('@')) return MALFORMED;
  return { kind: 'email', address: text.toLowerCase() };
}

/** Whether a password may be sent to the OP at all (empty, over-long, control characters: refused locally). */
export function isPlausiblePassword(password: string): boolean {
  return password !== '' && password.length <= MAX_PASSWORD_LENGTH && !CONTROL.test(password);
}

const MALFORMED: AccountName = Object.freeze({ kind: 'malformed' });

function cleaned(typed: string): string | undefined {
  const trimmed = typed.trim();
  if (trimmed === '' || CONTROL.test(trimmed)) return undefined;
  const text = trimmed.normalize('NFKC').trim();
  if (text === '' || text.length > MAX_ACCOUNT_NAME_LENGTH || CONTROL.test(text)) return undefined;
  return text;
}

/**
 * Which account an e-mail address logs in to, learnt from successful logins (the address typed, and the `email`
 * claim of the OP's answer), so that throttling treats the address and the user name as one account. Kept for
 * `ttlMs` after the last login that confirmed it; written only after the OP authenticated the account.
 */
export class AccountAliases {
  constructor(
    private readonly store: Store,
    private readonly ttlMs: number,
  ) {}

  /** The throttle key of an account name: the localpart when the e-mail's account is known, else the address. */
  async throttleKey(name: Extract<AccountName, { kind: 'localpart' | 'email' }>): Promise<string> {
    if (name.kind === 'localpart') return `@${name.name}`;
    const localpart = await this.store.get(aliasKey(name.address));
    return localpart !== undefined && localpart !== '' ? `@${localpart}` : `email:${name.address}`;
  }

  /** Records that these addresses belong to `localpart` (after the OP authenticated it). */
  async remember(addresses: readonly string[], localpart: string): Promise<void> {
    for (const raw of new Set(addresses)) {
      const name = canonicalEmail(raw);
      if (name.kind === 'email') await this.store.set(aliasKey(name.address), localpart, { ttlMs: this.ttlMs });
    }
  }
}

function aliasKey(address: string): string {
  return `account-alias:email:${address}`;
}

/**
 * The per-IP bucket of an address: IPv4 as is, IPv6 by its first `ipv6PrefixLength` bits (a /64 is what one
 * customer gets, RFC 6177; per /128 an attacker has 2^64 buckets). IPv4-mapped IPv6 counts as the IPv4 address.
 */
export function ipBucketOf(ip: string, ipv6PrefixLength: number): string {
  if (!isIPv6(ip)) return ip;
  const groups = expandIPv6(ip);
  if (groups.slice(0, 5).every((group) => group === 0) && groups[5] === 0xffff) {
    const [high = 0, low = 0] = groups.slice(6);
    return [high >> 8, high & 0xff, low >> 8, low & 0xff].join('.');
  }
  let bits = '';
  for (const group of groups) bits += group.toString(2).padStart(16, '0');
  const kept = bits.slice(0, ipv6PrefixLength).padEnd(128, '0');
  const out: string[] = [];
  for (let i = 0; i < 128; i += 16) out.push(parseInt(kept.slice(i, i + 16), 2).toString(16));
  return `${out.join(':')}/${ipv6PrefixLength}`;
}

function expandIPv6(ip: string): number[] {
  const withoutZone = ip.split('%')[0] ?? ip;
  let text = withoutZone;
  // A trailing dotted quad (::ffff:1.2.3.4 forms other than the mapped one) becomes two groups.
  const quad = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (quad !== null) {
    const [a, b, c, d] = quad.slice(1).map(Number) as [number, number, number, number];
    text = text.slice(0, quad.index) + `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const left = head === '' ? [] : head.split(':');
  const right = tail === undefined || tail === '' ? [] : tail.split(':');
  const missing = 8 - left.length - right.length;
  return [...left, ...Array<string>(tail === undefined ? 0 : missing).fill('0'), ...right].map((group) => parseInt(group, 16) || 0);
}

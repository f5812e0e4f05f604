import { createHmac, hash, randomBytes, timingSafeEqual } from 'node:crypto';
import { crc32 } from 'node:zlib';

/**
 * Opaque tokens the proxy issues: `<prefix>_<session id>_<secret>_<checksum>`.
 * - the session id lets one store read find the session (no token → id index to keep in sync, cluster friendly);
 * - the secret is 32 base62 characters (190 bits) and only its hash is stored;
 * - the CRC32 checksum rejects garbage and typos without a store lookup (the MAS token scheme does the same).
 */
export type TokenKind = 'access' | 'refresh';

const PREFIX: Record<TokenKind, string> = { access: 'mcpa', refresh: 'mcpr' };
const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
const SECRET_LENGTH = 32;
const SESSION_ID_LENGTH = 16;
const TOKEN_PATTERN = /^(mcpa|mcpr)_([0-9A-Za-z]{16})_([0-9A-Za-z]{32})_([0-9A-Za-z]{6})$/;

export interface ParsedToken {
  readonly kind: TokenKind;
  readonly sessionId: string;
  readonly hash: string;
}

/** Uniform random string over `alphabet` from a byte source (rejection sampling: no modulo bias). */
export function randomString(alphabet: string, length: number, bytes: (n: number) => Buffer = randomBytes): string {
  const limit = 256 - (256 % alphabet.length);
  let out = '';
  while (out.length < length) {
    for (const byte of bytes(length * 2)) {
      if (byte < limit) out += alphabet[byte % alphabet.length];
      if (out.length === length) break;
    }
  }
  return out;
}

export function randomBase62(length: number, bytes: (n: number) => Buffer = randomBytes): string {
  return randomString(BASE62, length, bytes);
}

const OPAQUE_SECRET = /^[0-9A-Za-z]{32}$/;

/**
 * The single-use random values the proxy hands out besides its tokens (login tokens, SSO state, confirmation ids,
 * browser secrets): 32 base62 characters, about 190 bits. Anything else presented is not one of ours.
 */
export function newOpaqueSecret(): string {
  return randomBase62(32);
}

export function isOpaqueSecret(value: string): boolean {
  return OPAQUE_SECRET.test(value);
}

export function newSessionId(): string {
  return randomBase62(SESSION_ID_LENGTH);
}

export function mintToken(kind: TokenKind, sessionId: string, secret = randomBase62(SECRET_LENGTH)): string {
  const body = `${PREFIX[kind]}_${sessionId}_${secret}`;
  return `${body}_${checksum(body)}`;
}

/**
 * Deterministic successor tokens for a refresh: every replica that refreshes the same refresh token computes the
 * same new pair, so concurrent or retried refreshes (a lost response, MAS #2795) get identical answers while the
 * store holds only hashes. Keyed by a server secret, so the successors are as unpredictable as random ones.
 */
export function successorTokens(refreshToken: string, sessionId: string, key: Buffer): { accessToken: string; refreshToken: string } {
  const derive = (label: string): string => {
    const digest = createHmac('sha256', key).update(`${label}\0${refreshToken}`).digest();
    let counter = 0;
    return randomBase62(SECRET_LENGTH, (n) => {
      const chunks: Buffer[] = [];
      let size = 0;
      while (size < n) {
        const block = createHmac('sha256', digest).update(String(counter++)).digest();
        chunks.push(block);
        size += block.length;
      }
      return Buffer.concat(chunks).subarray(0, n);
    });
  };
  return {
    accessToken: mintToken('access', sessionId, derive('access')),
    refreshToken: mintToken('refresh', sessionId, derive('refresh')),
  };
}

/** Parses a token of ours; undefined for anything else (wrong shape, wrong checksum, foreign token). */
export function parseToken(token: string): ParsedToken | undefined {
  const shape = tokenShape(token);
  return shape === undefined ? undefined : { kind: shape.kind, sessionId: shape.sessionId, hash: hashToken(token) };
}

/**
 * Kind and session id of a token of ours (shape and checksum checked), without the hash of the whole token that only
 * a store lookup needs: the pass-through's re-validation gate asks this of every request that carries a token and
 * mostly answers from memory (proxy/revalidation-gate.ts).
 */
export function tokenShape(token: string): Omit<ParsedToken, 'hash'> | undefined {
  const parts = uncheckedTokenParts(token);
  return parts !== undefined && hasValidChecksum(token) ? parts : undefined;
}

/**
 * Kind and session id as the token's shape gives them, its checksum NOT checked: only for a decision that a wrong
 * token cannot change (the re-validation gate's remembered times: a mistyped or forged token is forwarded unread
 * either way); whatever reads the store first checks the checksum (tokenShape, hasValidChecksum).
 */
export function uncheckedTokenParts(token: string): Omit<ParsedToken, 'hash'> | undefined {
  const match = TOKEN_PATTERN.exec(token);
  if (!match) return undefined;
  return { kind: match[1] === 'mcpa' ? 'access' : 'refresh', sessionId: match[2] as string };
}

/** Whether a token of our shape carries the right checksum (CRC32 of all but its last 7 characters). */
export function hasValidChecksum(token: string): boolean {
  return checksum(token.slice(0, token.length - 7)) === token.slice(token.length - 6);
}

/** Whether a string looks like one of our tokens (shape only): foreign tokens go to the OP for introspection. */
export function looksLikeOurToken(token: string): boolean {
  return token.startsWith('mcpa_') || token.startsWith('mcpr_');
}

export function hashToken(token: string): string {
  // One-shot crypto.hash: no Hash object per call (every introspection and token lookup hashes once).
  return hash('sha256', token, 'base64url');
}

export function sameHash(a: string, b: string): boolean {
  const left = Buffer.from(a);
  const right = Buffer.from(b);
  return left.length === right.length && timingSafeEqual(left, right);
}

function checksum(body: string): string {
  let value = crc32(body);
  let out = '';
  for (let i = 0; i < 6; i++) {
    out = BASE62[value % 62] + out;
    value = Math.floor(value / 62);
  }
  return out;
}

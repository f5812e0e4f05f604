import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';

/**
 * Keys derived from `sessions.encryption_key`: one for AES-256-GCM encryption of the secrets kept at rest (OP
 * refresh tokens, homeserver tokens), one for the HMAC that derives successor tokens. Separate keys so neither use
 * can weaken the other.
 *
 * Rotation without logouts: `sessions.previous_encryption_keys` lists keys that were current before. Values are
 * always sealed with the current key; opening tries the current key, then each previous one (AES-GCM's tag tells a
 * wrong key from the right one, so no key id is stored and a sealed value keeps the `v1.` form every release reads).
 * Successor tokens are derived with the current key; a refresh retried across a rotation is recognised with the
 * key that derived its first answer (session-store.ts).
 */
export interface SessionKeys {
  /** The current key's token-derivation key. */
  readonly tokenDerivationKey: Buffer;
  /** Every configured key's token-derivation key, the current one first. */
  readonly tokenDerivationKeys: readonly Buffer[];
  seal(plaintext: string): string;
  /** Throws SealingKeyUnknown when no configured key opens it, Error for a value that is not sealed at all. */
  open(sealed: string): string;
  /** Whether a sealed value opens with the current key (false: sealed before a rotation, re-seal it when rewritten). */
  sealedWithCurrentKey(sealed: string): boolean;
}

/** A sealed value that none of the configured keys opens: sealed with a key this replica was not given. */
export class SealingKeyUnknown extends Error {
  constructor() {
    super('sealed with an encryption key that is neither sessions.encryption_key nor one of sessions.previous_encryption_keys');
    this.name = 'SealingKeyUnknown';
  }
}

const SEALED_PREFIX = 'v1.';

interface KeyPair {
  readonly encryptionKey: Buffer;
  readonly tokenDerivationKey: Buffer;
}

function derivePair(secret: string): KeyPair {
  const material = Buffer.from(secret, 'utf8');
  const derive = (info: string) => Buffer.from(hkdfSync('sha256', material, Buffer.alloc(0), info, 32));
  return {
    encryptionKey: derive('matrix-compat-proxy/op-refresh-token-encryption/v1'),
    tokenDerivationKey: derive('matrix-compat-proxy/token-derivation/v1'),
  };
}

export function deriveSessionKeys(current: string, previous: readonly string[] = [], onPreviousKeyUsed?: () => void): SessionKeys {
  const pairs = [current, ...previous.filter((key) => key !== current)].map(derivePair);
  const [currentPair] = pairs as [KeyPair, ...KeyPair[]];

  function openWith(pair: KeyPair, raw: Buffer): string | undefined {
    try {
      const decipher = createDecipheriv('aes-256-gcm', pair.encryptionKey, raw.subarray(0, 12));
      decipher.setAuthTag(raw.subarray(12, 28));
      return Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]).toString('utf8');
    } catch {
      return undefined;
    }
  }

  function unseal(sealed: string): { plaintext: string; current: boolean } {
    if (!sealed.startsWith(SEALED_PREFIX)) throw new Error('unknown sealed value version');
    const raw = Buffer.from(sealed.slice(SEALED_PREFIX.length), 'base64url');
    if (raw.length < 28) throw new Error('sealed value too short');
    for (const [index, pair] of pairs.entries()) {
      const plaintext = openWith(pair, raw);
      if (plaintext !== undefined) return { plaintext, current: index === 0 };
    }
    throw new SealingKeyUnknown();
  }

  return {
    tokenDerivationKey: currentPair.tokenDerivationKey,
    tokenDerivationKeys: pairs.map((pair) => pair.tokenDerivationKey),
    seal(plaintext) {
      const iv = randomBytes(12);
      const cipher = createCipheriv('aes-256-gcm', currentPair.encryptionKey, iv);
      const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
      return `${SEALED_PREFIX}${Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64url')}`;
    },
    open(sealed) {
      const { plaintext, current } = unseal(sealed);
      if (!current) onPreviousKeyUsed?.();
      return plaintext;
    },
    sealedWithCurrentKey(sealed) {
      try {
        return unseal(sealed).current;
      } catch {
        return false;
      }
    },
  };
}

import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';

/**
 * Keys derived from `sessions.encryption_key`: one for AES-256-GCM encryption of the OP refresh tokens kept at
 * rest, one for the HMAC that derives successor tokens. Separate keys so neither use can weaken the other.
 */
export interface SessionKeys {
  readonly tokenDerivationKey: Buffer;
  seal(plaintext: string): string;
  open(sealed: string): string;
}

export function deriveSessionKeys(secret: string): SessionKeys {
  const material = Buffer.from(secret, 'utf8');
  const derive = (info: string) => Buffer.from(hkdfSync('sha256', material, Buffer.alloc(0), info, 32));
  const encryptionKey = derive('matrix-compat-proxy/op-refresh-token-encryption/v1');
  const tokenDerivationKey = derive('matrix-compat-proxy/token-derivation/v1');
  return {
    tokenDerivationKey,
    seal(plaintext) {
      const iv = randomBytes(12);
      const cipher = createCipheriv('aes-256-gcm', encryptionKey, iv);
      const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
      return `v1.${Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64url')}`;
    },
    open(sealed) {
      if (!sealed.startsWith('v1.')) throw new Error('unknown sealed value version');
      const raw = Buffer.from(sealed.slice(3), 'base64url');
      const decipher = createDecipheriv('aes-256-gcm', encryptionKey, raw.subarray(0, 12));
      decipher.setAuthTag(raw.subarray(12, 28));
      return Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]).toString('utf8');
    },
  };
}

import type { Config } from './schema.js';

// Apart from schema.ts (which builds the zod schema when it loads): the running proxy needs this, not the validation
// layer (config-thread.ts).
/** `sessions.encryption_key` and then `sessions.previous_encryption_keys`: the current key first. */
export function encryptionKeysOf(config: Pick<Config, 'sessions'>): string[] {
  return [config.sessions.encryption_key, ...config.sessions.previous_encryption_keys.map((entry) => entry.key)];
}

import { randomBytes, randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { systemClock } from '../../src/clock.js';
import { deriveSessionKeys } from '../../src/sessions/secret-box.js';
import { SessionStore, type SessionWriteFormat } from '../../src/sessions/session-store.js';
import { createStore } from '../../src/store/index.js';
import { randomString } from '../../src/sessions/tokens.js';
import { ENCRYPTION_KEY, IDP_ID, SESSION_KEY_PREFIX } from './proxy-config.js';

export interface SeedOptions {
  readonly redisUrl: string;
  /** The proxy's store.key_prefix; default SESSION_KEY_PREFIX. */
  readonly keyPrefix?: string;
  readonly count: number;
  /** Numbering continues from here, so a second batch adds users instead of reusing them. */
  readonly firstIndex?: number;
  /** Length of the OP refresh token kept (sealed) in each session: 43 for an opaque token, ~850 for Keycloak's JWT. */
  readonly opRefreshTokenLength?: number;
  /** Creations in flight at once. */
  readonly concurrency?: number;
  /** Writes the access tokens here, one a line, for the load generator. */
  readonly tokensFile?: string;
  /** Sessions as the appservice and JWT backends leave them: with a sealed homeserver token to swap in. */
  readonly homeserverTokens?: boolean;
  /** The session format written (`store.session_format`); default compact, what a fresh install writes. */
  readonly format?: SessionWriteFormat;
}

export interface SeededSessions {
  readonly accessTokens: string[];
  readonly seconds: number;
}

const USER_AGENT = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Element/1.11.85 Chrome/130.0.6723.191 Electron/33.3.1 Safari/537.36';

/**
 * Live sessions written through the proxy's own SessionStore (the code a login runs after the OP said yes), as a
 * password login leaves them: two devices per user, an OP session id, the OP refresh token sealed, half of them
 * with refresh tokens of their own.
 */
export async function seedSessions(options: SeedOptions): Promise<SeededSessions> {
  const store = await createStore({ redis: { url: options.redisUrl, keyPrefix: options.keyPrefix ?? SESSION_KEY_PREFIX } });
  const keys = deriveSessionKeys(ENCRYPTION_KEY);
  const sessions = new SessionStore(store, systemClock, keys.tokenDerivationKey, { warn: (fields, message) => console.warn(message, fields) }, { writeFormat: options.format ?? 'compact' });
  const first = options.firstIndex ?? 0;
  const accessTokens = new Array<string>(options.count);
  const opRefreshToken = () => randomBytes(options.opRefreshTokenLength ?? 43).toString('base64url').slice(0, options.opRefreshTokenLength ?? 43);
  const started = performance.now();
  let next = 0;
  const worker = async () => {
    for (let index = next++; index < options.count; index = next++) {
      const number = first + index;
      const user = number >> 1;
      const issued = await sessions.create({
        localpart: `user${user}`,
        deviceId: randomString('ABCDEFGHIJKLMNOPQRSTUVWXYZ', 10),
        deviceDisplayName: 'Element Desktop (Linux)',
        origin: {
          kind: 'password',
          idpId: IDP_ID,
          issuer: 'https://id.example.org/realms/matrix',
          sub: `00000000-0000-4000-8000-${String(user).padStart(12, '0')}`,
          sid: randomUUID(),
          sealedOpRefreshToken: keys.seal(opRefreshToken()),
          lastValidatedAt: systemClock.now(),
        },
        ip: `203.0.113.${number % 250}`,
        userAgent: USER_AGENT,
        ...(number % 2 === 0 ? { refreshableLifetimeMs: 5 * 60_000 } : {}),
        // Synapse's token shape: syt_<base64 localpart>_<20 random>_<checksum>.
        ...(options.homeserverTokens === true ? { sealedHomeserverToken: keys.seal(`syt_${Buffer.from(`user${user}`).toString('base64url')}_${randomString('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz', 20)}_0AbCdE`) } : {}),
      });
      accessTokens[index] = issued.accessToken;
    }
  };
  try {
    await Promise.all(Array.from({ length: options.concurrency ?? 64 }, worker));
  } finally {
    await store.close();
  }
  if (options.tokensFile !== undefined) writeFileSync(options.tokensFile, `${accessTokens.join('\n')}\n`);
  return { accessTokens, seconds: (performance.now() - started) / 1000 };
}

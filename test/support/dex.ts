import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { freePort } from './free-port.js';
import { startOpProcess } from './op-process.js';
import { interopCacheDir } from './synapse.js';

/**
 * A real Dex (github.com/dexidp/dex, built by scripts/install-dex.sh) on loopback: memory storage, the local
 * password database with two static users, one confidential client for the proxy with the password grant, and the
 * login page shown without a connector picker or approval screen. Dex logs users in by email; it offers no
 * back-channel logout.
 */
export const DEX_VERSION = process.env['DEX_VERSION'] ?? 'v2.45.1';

export const DEX_SETUP = {
  client: { clientId: 'matrix-compat-proxy', clientSecret: 'dex-client-secret-for-tests-0123456789' },
  users: {
    // bcrypt (cost 10) of each password; Dex stores nothing else.
    alice: { email: 'alice@example.test', username: 'alice', name: 'Alice Liddell', password: 'alice-dex-password', hash: '$2a$10$7ijWP8lNtKDCGyFjZehCX.fYjiiYOsK9M7oOAwOEArGcY7IhoV82O', userID: '6a0e1b5c-1d2f-4c2a-9e0b-a11ce0000d01' },
    bob: { email: 'bob@example.test', username: 'bob', name: 'Bob Builder', password: 'bob-dex-password', hash: '$2a$10$uWCacnvSfHvHy1aqDIMEUesKmjFu9I1jjDfjm1Q6AifhfuhPJkOou', userID: '6a0e1b5c-1d2f-4c2a-9e0b-b0b000000d02' },
  },
} as const;

export interface RunningDex {
  readonly issuer: string;
  readonly startupMs: number;
  logs(): string;
  stop(): Promise<void>;
}

export class DexMissingError extends Error {
  override readonly name = 'DexMissingError';
}

export function dexBinary(): string {
  const binary = process.env['DEX_BINARY'] ?? join(interopCacheDir(), `dex-${DEX_VERSION}`, 'dex');
  if (!existsSync(binary)) {
    throw new DexMissingError(`Dex is not installed (no ${binary}). Run scripts/install-dex.sh, or set MCP_SKIP_INTEROP=1 to skip the interop suite explicitly.`);
  }
  return binary;
}

export async function startDex(options: { readonly redirectUris: readonly string[] }): Promise<RunningDex> {
  const binary = dexBinary();
  const port = await freePort();
  const issuer = `http://127.0.0.1:${port}/dex`;
  const dir = await mkdtemp(join(tmpdir(), 'mcp-dex-'));
  const config = {
    issuer,
    storage: { type: 'memory' },
    web: { http: `127.0.0.1:${port}` },
    logger: { level: 'debug', format: 'text' },
    oauth2: {
      // The password grant checks the local password database (users log in by email).
      passwordConnector: 'local',
      skipApprovalScreen: true,
      alwaysShowLoginScreen: false,
    },
    expiry: { idTokens: '10m', refreshTokens: { validIfNotUsedFor: '24h', reuseInterval: '3s' } },
    enablePasswordDB: true,
    staticPasswords: Object.values(DEX_SETUP.users).map((user) => ({ email: user.email, hash: user.hash, username: user.username, name: user.name, preferredUsername: user.username, userID: user.userID })),
    staticClients: [{ id: DEX_SETUP.client.clientId, secret: DEX_SETUP.client.clientSecret, name: 'Matrix', redirectURIs: [...options.redirectUris] }],
  };
  await writeFile(join(dir, 'config.yaml'), stringify(config));
  const started = performance.now();
  const process = startOpProcess('Dex', binary, ['serve', join(dir, 'config.yaml')]);
  try {
    await process.waitForUrl(`${issuer}/.well-known/openid-configuration`, 30_000);
  } catch (error) {
    await process.stop();
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
  return {
    issuer,
    startupMs: Math.round(performance.now() - started),
    logs: process.logs,
    async stop() {
      await process.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

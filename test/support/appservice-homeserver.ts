import { createHmac, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { jsonRequest } from './json-request.js';

/** An appservice registration as the tests write it for the homeserver and the proxy. */
export interface TestRegistration {
  readonly path: string;
  readonly asToken: string;
  readonly senderLocalpart: string;
}

/** A folder of registration files: the proxy's own (non-exclusive @.*) and a bridge's (exclusive @bridge_.*). */
export interface RegistrationFiles {
  readonly dir: string;
  readonly proxy: TestRegistration;
  readonly bridge: TestRegistration;
  remove(): Promise<void>;
}

/**
 * The two registrations of docs/homeservers.md: the proxy's with a non-exclusive `@.*` namespace, no URL and no rate
 * limit, and a bridge's with its own exclusive namespace. `url` is null for Synapse and "" for Dendrite.
 */
export async function writeRegistrations(serverName: string, options: { url: null | '' } = { url: null }): Promise<RegistrationFiles> {
  const dir = await mkdtemp(join(tmpdir(), 'mcp-registrations-'));
  const escaped = serverName.replace(/\./g, '\\.');
  const write = async (name: string, sender: string, regex: string, exclusive: boolean): Promise<TestRegistration> => {
    const asToken = randomBytes(32).toString('hex');
    const path = join(dir, `${name}.yaml`);
    const doc = {
      id: name,
      url: options.url,
      as_token: asToken,
      hs_token: randomBytes(32).toString('hex'),
      sender_localpart: sender,
      rate_limited: false,
      namespaces: { users: [{ exclusive, regex }], aliases: [], rooms: [] },
    };
    await writeFile(path, stringify(doc), { mode: 0o600 });
    return { path, asToken, senderLocalpart: sender };
  };
  const proxy = await write('matrix-compat-proxy', 'compat-proxy', `@.*:${escaped}`, false);
  const bridge = await write('test-bridge', 'bridgebot', `@bridge_.*:${escaped}`, true);
  return { dir, proxy, bridge, remove: () => rm(dir, { recursive: true, force: true }) };
}

/** Registers a user with Synapse's shared-secret admin registration (`/_synapse/admin/v1/register`); returns its token. */
export async function registerWithSharedSecret(url: string, sharedSecret: string, username: string, password: string, admin: boolean): Promise<{ userId: string; accessToken: string }> {
  const nonce = (await jsonRequest(`${url}/_synapse/admin/v1/register`, 'GET')).body.nonce as string;
  const mac = createHmac('sha1', sharedSecret).update(`${nonce}\0${username}\0${password}\0${admin ? 'admin' : 'notadmin'}`).digest('hex');
  const response = await jsonRequest(`${url}/_synapse/admin/v1/register`, 'POST', { body: { nonce, username, password, admin, mac } });
  if (response.status !== 200) throw new Error(`shared-secret registration of ${username}: ${response.status} ${JSON.stringify(response.body)}`);
  return { userId: response.body.user_id, accessToken: response.body.access_token };
}

import { randomBytes } from 'node:crypto';
import { pino } from 'pino';
import { readAppserviceRegistrations } from '../config/appservice-registrations.js';
import type { Config } from '../config/schema.js';
import { HomeserverError } from '../provisioning/homeserver-adapter.js';
import { SynapseProvisioning } from '../provisioning/synapse.js';
import type { AddCheck } from './checks.js';

/**
 * The homeserver as the proxy needs it: reachable, accepting the shared secret on the provisioning API Synapse
 * serves to its auth service (`/_synapse/mas/query_user`), and — what clients see — its auth metadata coming from
 * this proxy (Synapse fetches it from `matrix_authentication_service.endpoint`).
 */
export async function checkHomeserver(config: Config, expectedIssuer: string | undefined, timeoutMs: number, add: AddCheck): Promise<void> {
  const base = config.homeserver.url;
  const facing = config.homeserver.listen === undefined ? `http://${config.listen.host}:${config.listen.port}/` : `http://${config.homeserver.listen.host}:${config.homeserver.listen.port}/`;
  const delegationFix = `in homeserver.yaml set matrix_authentication_service: { enabled: true, endpoint: "${facing}", secret: <homeserver.secret> }`;

  const versions = await get(`${base}/_matrix/client/versions`, timeoutMs);
  if (versions.error !== undefined || versions.status !== 200) {
    add('reachable', 'fail', `${base}/_matrix/client/versions: ${versions.error ?? `HTTP ${versions.status}`}`, 'check homeserver.url and that the homeserver runs');
    return;
  }
  add('reachable', 'pass', `${base} answers the client API`);

  if (config.homeserver.mode === 'appservice') return checkAppservice(config, timeoutMs, add);
  // JWT mode: nothing to try without logging someone in (the homeserver would create the user).
  if (config.homeserver.mode !== 'delegated') return;

  const provisioning = new SynapseProvisioning({ baseUrl: base, secret: config.homeserver.secret ?? '', timeoutMs, logger: pino({ level: 'silent' }), retries: 0 });
  try {
    await provisioning.queryUser(`doctor-probe-${randomBytes(6).toString('hex')}`);
    add('shared secret', 'pass', 'Synapse accepted homeserver.secret on /_synapse/mas/query_user');
  } catch (err: unknown) {
    if (!(err instanceof HomeserverError)) throw err;
    if (err.status === 401 || err.status === 403) {
      const accepted = await acceptedPreviousSecret(config, base, timeoutMs);
      if (accepted !== undefined) {
        add(
          'shared secret',
          'warn',
          `Synapse accepts homeserver.previous_secrets[${accepted}], not homeserver.secret: a rotation is half-way (logins and introspection work meanwhile)`,
          'set matrix_authentication_service.secret in homeserver.yaml to homeserver.secret and restart Synapse, then remove previous_secrets here',
        );
      } else {
        add('shared secret', 'fail', `Synapse refused homeserver.secret (HTTP ${err.status})`, 'make matrix_authentication_service.secret in homeserver.yaml and homeserver.secret here the same value');
      }
    } else if (err.status === 404) {
      add('shared secret', 'fail', `Synapse has no /_synapse/mas API (${err.message})`, delegationFix);
    } else {
      add('shared secret', 'fail', err.message, 'check the homeserver log');
    }
  }

  let metadata = await get(`${base}/_matrix/client/v1/auth_metadata`, timeoutMs);
  if (metadata.status === 404 || metadata.status === 400) metadata = await get(`${base}/_matrix/client/unstable/org.matrix.msc2965/auth_metadata`, timeoutMs);
  const issuer = isRecord(metadata.json) ? metadata.json['issuer'] : undefined;
  if (metadata.status === 200 && typeof issuer === 'string') {
    if (expectedIssuer === undefined || issuer === expectedIssuer) {
      add('auth metadata', 'pass', `Synapse's /_matrix/client/v1/auth_metadata comes from this proxy (issuer ${issuer})`);
    } else {
      add('auth metadata', 'fail', `Synapse's auth metadata names issuer ${issuer}, this proxy serves ${expectedIssuer}: Synapse asks another auth service`, `point matrix_authentication_service.endpoint at this proxy (${facing})`);
    }
  } else if (metadata.status === 404 || metadata.status === 400) {
    add('auth metadata', 'fail', 'Synapse serves no auth metadata: it does not delegate authentication', delegationFix);
  } else {
    const errcode = isRecord(metadata.json) ? ` ${String(metadata.json['errcode'] ?? '')}` : '';
    add(
      'auth metadata',
      'fail',
      `Synapse answered ${metadata.error ?? `HTTP ${metadata.status}${errcode}`}: it could not get its auth metadata from ${facing}`,
      `start the proxy, and make matrix_authentication_service.endpoint in homeserver.yaml "${facing}" (homeserver.listen)`,
    );
  }
}

/** The proxy's as_token must name its appservice at the homeserver: whoami as the sender user says so. */
async function checkAppservice(config: Config, timeoutMs: number, add: AddCheck): Promise<void> {
  const file = config.homeserver.appservice?.registration_file ?? '';
  const [registration] = readAppserviceRegistrations([file]);
  if (registration === undefined || !registration.ok) return;
  const whoami = await get(`${config.homeserver.url}/_matrix/client/v3/account/whoami`, timeoutMs, registration.registration.asToken);
  const sender = `@${registration.registration.senderLocalpart}:${config.server_name}`;
  if (whoami.status === 200 && isRecord(whoami.json) && whoami.json['user_id'] === sender) {
    add('appservice', 'pass', `the homeserver knows the registration of ${file} (whoami as ${sender})`);
  } else {
    const errcode = isRecord(whoami.json) ? ` ${String(whoami.json['errcode'] ?? '')}` : '';
    add('appservice', 'fail', `the homeserver refused the as_token of ${file} (${whoami.error ?? `HTTP ${whoami.status}${errcode}`})`, 'give the homeserver the same registration file (docs/homeservers.md) and restart it');
  }
}

async function get(url: string, timeoutMs: number, token?: string): Promise<{ status: number; json?: unknown; error?: string }> {
  try {
    const response = await fetch(url, { redirect: 'manual', signal: AbortSignal.timeout(timeoutMs), ...(token === undefined ? {} : { headers: { authorization: `Bearer ${token}` } }) });
    const text = await response.text();
    try {
      return { status: response.status, json: JSON.parse(text) };
    } catch {
      return { status: response.status };
    }
  } catch (err: unknown) {
    const cause = err instanceof Error && err.cause instanceof Error ? `: ${err.cause.message}` : '';
    return { status: 0, error: err instanceof Error && err.name === 'TimeoutError' ? 'timed out' : `${err instanceof Error ? err.message : String(err)}${cause}` };
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The index of the first of `homeserver.previous_secrets` Synapse accepts, if any. */
async function acceptedPreviousSecret(config: Config, base: string, timeoutMs: number): Promise<number | undefined> {
  for (const [index, { secret }] of config.homeserver.previous_secrets.entries()) {
    const provisioning = new SynapseProvisioning({ baseUrl: base, secret, timeoutMs, logger: pino({ level: 'silent' }), retries: 0 });
    try {
      await provisioning.queryUser(`doctor-probe-${randomBytes(6).toString('hex')}`);
      return index;
    } catch (err: unknown) {
      if (!(err instanceof HomeserverError) || (err.status !== 401 && err.status !== 403)) return undefined;
    }
  }
  return undefined;
}

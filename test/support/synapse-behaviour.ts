import assert from 'node:assert/strict';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { HomeserverError } from '../../src/provisioning/homeserver-adapter.js';
import { SynapseProvisioning } from '../../src/provisioning/synapse.js';

/**
 * The behaviour of Synapse (with `matrix_authentication_service` enabled) that the proxy relies on, as one suite run
 * against real Synapse (test/interop) and against the homeserver double (test/integration): whatever passes here
 * on both is behaviour the double reproduces faithfully.
 */

export const BEHAVIOUR_SECRET = 'shared-secret-for-synapse-behaviour-0123456789';
export const BEHAVIOUR_SERVER_NAME = 'example.test';

export interface HomeserverUnderTest {
  readonly url: string;
  stop(): Promise<void>;
}

export interface SuiteOptions {
  /** Skips the whole suite with this reason (never silently: only an explicit flag may set it). */
  readonly skip?: string | false;
  /** Called once everything is up, e.g. to print versions and timings. */
  readonly onStarted?: (homeserver: HomeserverUnderTest) => void;
}

type IntrospectionAnswer = Record<string, unknown>;

export interface RecordedIntrospection {
  readonly headers: IncomingHttpHeaders;
  readonly form: URLSearchParams;
}

/**
 * Stands in for the auth service Synapse asks (the proxy's homeserver-facing side, MAS in production): metadata at
 * `/.well-known/openid-configuration` and canned introspection answers per token; unknown tokens are inactive.
 */
export interface StandInAuthService {
  readonly url: string;
  readonly answers: Map<string, IntrospectionAnswer>;
  readonly introspections: RecordedIntrospection[];
  readonly metadataRequests: number;
  /** While set, introspection answers this HTTP status with a non-JSON body. */
  failWith: number | undefined;
  /** While set, the metadata document answers this HTTP status. */
  failMetadataWith: number | undefined;
  stop(): Promise<void>;
}

export async function startStandInAuthService(): Promise<StandInAuthService> {
  const introspections: RecordedIntrospection[] = [];
  const answers = new Map<string, IntrospectionAnswer>();
  let metadataRequests = 0;
  const server = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => (body += chunk));
    req.on('end', () => {
      if (req.method === 'GET' && req.url === '/.well-known/openid-configuration') {
        metadataRequests += 1;
        if (service.failMetadataWith !== undefined) {
          res.writeHead(service.failMetadataWith, { 'content-type': 'text/plain' }).end('auth service is down');
          return;
        }
        res.writeHead(200, { 'content-type': 'application/json' }).end(
          JSON.stringify({
            issuer: `${service.url}/`,
            account_management_uri: `${service.url}/account`,
            authorization_endpoint: `${service.url}/authorize`,
            token_endpoint: `${service.url}/token`,
            response_types_supported: ['code'],
          }),
        );
        return;
      }
      if (req.method === 'POST' && req.url === '/oauth2/introspect') {
        const form = new URLSearchParams(body);
        introspections.push({ headers: req.headers, form });
        if (service.failWith !== undefined) {
          res.writeHead(service.failWith, { 'content-type': 'text/plain' }).end('auth service is down');
          return;
        }
        const authorized = req.headers.authorization === `Bearer ${BEHAVIOUR_SECRET}`;
        const answer = authorized ? (answers.get(form.get('token') ?? '') ?? { active: false }) : { active: false };
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answer));
        return;
      }
      res.writeHead(404).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const service: StandInAuthService = {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    answers,
    introspections,
    get metadataRequests() {
      return metadataRequests;
    },
    failWith: undefined,
    failMetadataWith: undefined,
    stop: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
  return service;
}

/** An introspection answer the way MAS gives it for a compat session to a Synapse that sent X-MAS-Supports-Device-Id. */
function activeAnswer(localpart: string, deviceId?: string, extra: IntrospectionAnswer = {}): IntrospectionAnswer {
  return {
    active: true,
    scope: 'urn:matrix:client:api:* urn:matrix:org.matrix.msc2967.client:api:*',
    username: localpart,
    sub: `sub-${localpart}`,
    token_type: 'access_token',
    client_id: 'legacy',
    ...(deviceId === undefined ? {} : { device_id: deviceId }),
    ...extra,
  };
}

export function describeSynapseBehaviour(
  label: string,
  startHomeserver: (auth: StandInAuthService) => Promise<HomeserverUnderTest>,
  options: SuiteOptions = {},
): void {
  describe(label, { skip: options.skip ?? false }, () => {
    let auth: StandInAuthService;
    let homeserver: HomeserverUnderTest;
    let provisioning: SynapseProvisioning;
    let tokenCounter = 0;

    before(async () => {
      auth = await startStandInAuthService();
      homeserver = await startHomeserver(auth);
      provisioning = new SynapseProvisioning({
        baseUrl: homeserver.url,
        secret: BEHAVIOUR_SECRET,
        timeoutMs: 10_000,
        logger: pino({ level: 'silent' }),
        retries: 0,
      });
      options.onStarted?.(homeserver);
    });

    after(async () => {
      await homeserver?.stop();
      await auth?.stop();
    });

    /** A fresh access token the stand-in auth service vouches for with `answer`. */
    const tokenFor = (answer: IntrospectionAnswer): string => {
      tokenCounter += 1;
      const token = `token-${tokenCounter}-${Math.random().toString(36).slice(2)}`;
      auth.answers.set(token, answer);
      return token;
    };

    const client = async (method: string, path: string, token?: string, body?: unknown) => {
      const headers: Record<string, string> = {};
      if (token !== undefined) headers['authorization'] = `Bearer ${token}`;
      if (body !== undefined) headers['content-type'] = 'application/json';
      const response = await fetch(`${homeserver.url}${path}`, {
        method,
        headers,
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      const text = await response.text();
      return { status: response.status, body: text === '' ? undefined : (JSON.parse(text) as Record<string, any>) };
    };

    const whoami = (token: string) => client('GET', '/_matrix/client/v3/account/whoami', token);

    test('does not contact the auth service before a client needs it', () => {
      assert.equal(auth.metadataRequests, 0);
      assert.equal(auth.introspections.length, 0);
    });

    test('auth_metadata relays the auth service metadata, fetched on first use, kept once it succeeded', async () => {
      auth.failMetadataWith = 502;
      try {
        assert.deepEqual(await client('GET', '/_matrix/client/v1/auth_metadata'), {
          status: 500,
          body: { errcode: 'M_UNKNOWN', error: 'Internal server error' },
        });
      } finally {
        auth.failMetadataWith = undefined;
      }
      const metadata = await client('GET', '/_matrix/client/v1/auth_metadata');
      assert.equal(metadata.status, 200);
      assert.equal(metadata.body?.['issuer'], `${auth.url}/`);
      assert.equal(metadata.body?.['account_management_uri'], `${auth.url}/account`);
      assert.equal(metadata.body?.['token_endpoint'], `${auth.url}/token`, 'fields beyond the required two are passed on');
      const unstable = await client('GET', '/_matrix/client/unstable/org.matrix.msc2965/auth_metadata');
      assert.deepEqual(unstable.body, metadata.body);
      assert.equal(auth.metadataRequests, 2, 'one failed fetch, one kept');
    });

    test('provision_user creates the user with its display name; query_user reads it back', async () => {
      assert.equal(await provisioning.queryUser('carol'), undefined);
      await provisioning.provisionUser({ localpart: 'carol', displayName: 'Carol C.', emails: ['carol@example.test'] });
      assert.deepEqual(await provisioning.queryUser('carol'), {
        userId: `@carol:${BEHAVIOUR_SERVER_NAME}`,
        displayName: 'Carol C.',
        deactivated: false,
        suspended: false,
      });
      // Provisioning again updates instead of failing; fields left out stay as they are.
      await provisioning.provisionUser({ localpart: 'carol', displayName: 'Carol' });
      assert.equal((await provisioning.queryUser('carol'))?.displayName, 'Carol');
      await provisioning.provisionUser({ localpart: 'carol', emails: [] });
      assert.equal((await provisioning.queryUser('carol'))?.displayName, 'Carol');
    });

    test('a user created without a display name gets the localpart as display name', async () => {
      await provisioning.provisionUser({ localpart: 'dave' });
      assert.equal((await provisioning.queryUser('dave'))?.displayName, 'dave');
    });

    test('upsert_device makes the token usable: whoami answers with the user and device', async () => {
      await provisioning.provisionUser({ localpart: 'alice', displayName: 'Alice' });
      const token = tokenFor(activeAnswer('alice', 'ALICEDEV1'));
      // Before the device exists Synapse refuses the (otherwise valid) token.
      const early = await whoami(token);
      assert.equal(early.status, 401);
      assert.equal(early.body?.['errcode'], 'M_UNKNOWN_TOKEN');

      await provisioning.upsertDevice('alice', 'ALICEDEV1', 'Alice phone');
      const answer = await whoami(token);
      assert.equal(answer.status, 200);
      assert.deepEqual(answer.body, { user_id: `@alice:${BEHAVIOUR_SERVER_NAME}`, is_guest: false, device_id: 'ALICEDEV1' });

      const devices = await client('GET', '/_matrix/client/v3/devices', token);
      assert.equal(devices.status, 200);
      const listed = (devices.body?.['devices'] as Record<string, unknown>[]).map((device) => [device['device_id'], device['display_name']]);
      assert.deepEqual(listed, [['ALICEDEV1', 'Alice phone']]);
    });

    test('upsert_device renames an existing device, and keeps the name when none is given', async () => {
      await provisioning.provisionUser({ localpart: 'erin' });
      const token = tokenFor(activeAnswer('erin', 'ERINDEV'));
      await provisioning.upsertDevice('erin', 'ERINDEV', 'first name');
      await provisioning.upsertDevice('erin', 'ERINDEV', 'second name');
      await provisioning.upsertDevice('erin', 'ERINDEV');
      const device = await client('GET', '/_matrix/client/v3/devices/ERINDEV', token);
      assert.equal(device.status, 200);
      assert.equal(device.body?.['display_name'], 'second name');
    });

    test('Synapse introspects with the shared secret, a form body and X-MAS-Supports-Device-Id, and caches the answer', async () => {
      await provisioning.provisionUser({ localpart: 'frank' });
      await provisioning.upsertDevice('frank', 'FRANKDEV');
      const token = tokenFor(activeAnswer('frank', 'FRANKDEV'));
      const before = auth.introspections.length;
      assert.equal((await whoami(token)).status, 200);
      assert.equal((await whoami(token)).status, 200);
      assert.equal((await client('GET', '/_matrix/client/v3/devices', token)).status, 200);
      const sent = auth.introspections.slice(before);
      assert.equal(sent.length, 1, 'one introspection for three requests within two minutes');
      const [request] = sent;
      assert.equal(request?.headers.authorization, `Bearer ${BEHAVIOUR_SECRET}`);
      assert.equal(request?.headers['x-mas-supports-device-id'], '1');
      assert.equal(request?.headers.accept, 'application/json');
      assert.equal(request?.headers['content-type'], 'application/x-www-form-urlencoded');
      assert.equal(request?.form.get('token'), token);
      assert.equal(request?.form.get('token_type_hint'), 'access_token');
    });

    test('delete_device makes cached tokens of the device fail at once with M_UNKNOWN_TOKEN', async () => {
      await provisioning.provisionUser({ localpart: 'grace' });
      await provisioning.upsertDevice('grace', 'GRACEDEV');
      const token = tokenFor(activeAnswer('grace', 'GRACEDEV'));
      assert.equal((await whoami(token)).status, 200);
      await provisioning.deleteDevice('grace', 'GRACEDEV');
      const answer = await whoami(token);
      assert.equal(answer.status, 401);
      assert.deepEqual(answer.body, { errcode: 'M_UNKNOWN_TOKEN', error: 'Token is not active', soft_logout: false });
      // Deleting what is already gone, or a device of a user Synapse never saw, is not an error.
      await provisioning.deleteDevice('grace', 'GRACEDEV');
      await provisioning.deleteDevice('nobody-here', 'NODEVICE');
    });

    test('a device recreated after deletion makes a new introspection (the dropped cache entry is not reused)', async () => {
      await provisioning.provisionUser({ localpart: 'heidi' });
      await provisioning.upsertDevice('heidi', 'HEIDIDEV');
      const token = tokenFor(activeAnswer('heidi', 'HEIDIDEV'));
      assert.equal((await whoami(token)).status, 200);
      await provisioning.deleteDevice('heidi', 'HEIDIDEV');
      assert.equal((await whoami(token)).status, 401);
      await provisioning.upsertDevice('heidi', 'HEIDIDEV');
      const before = auth.introspections.length;
      assert.equal((await whoami(token)).status, 200);
      assert.equal(auth.introspections.length, before + 1);
    });

    test('sync_devices adds missing devices and deletes the others', async () => {
      await provisioning.provisionUser({ localpart: 'ivan' });
      await provisioning.upsertDevice('ivan', 'IVANA', 'A');
      await provisioning.upsertDevice('ivan', 'IVANB', 'B');
      const tokenA = tokenFor(activeAnswer('ivan', 'IVANA'));
      const tokenB = tokenFor(activeAnswer('ivan', 'IVANB'));
      assert.equal((await whoami(tokenA)).status, 200);

      await provisioning.syncDevices('ivan', ['IVANB', 'IVANC']);
      assert.equal((await whoami(tokenA)).status, 401);
      const devices = await client('GET', '/_matrix/client/v3/devices', tokenB);
      assert.equal(devices.status, 200);
      const listed = (devices.body?.['devices'] as Record<string, unknown>[])
        .map((device) => [device['device_id'], device['display_name']])
        .sort();
      assert.deepEqual(listed, [['IVANB', 'B'], ['IVANC', null]]);

      await provisioning.syncDevices('ivan', []);
      assert.equal((await whoami(tokenB)).status, 401);
    });

    test('sync_devices: an unknown user with no devices is fine, with devices it is a permanent 404', async () => {
      await provisioning.syncDevices('nobody-at-all', []);
      await assert.rejects(provisioning.syncDevices('nobody-at-all', ['X']), isPermanent(404));
    });

    test('upsert_device for a user Synapse does not know fails permanently with 404', async () => {
      await assert.rejects(provisioning.upsertDevice('not-provisioned', 'DEV'), isPermanent(404));
    });

    test('provision_user refuses an invalid localpart permanently with 400', async () => {
      await assert.rejects(provisioning.provisionUser({ localpart: 'Not Valid' }), isPermanent(400));
      await assert.rejects(provisioning.provisionUser({ localpart: '_underscore' }), isPermanent(400));
    });

    test('upsert_device refuses a display name over 100 characters with 400 M_TOO_LARGE', async () => {
      await provisioning.provisionUser({ localpart: 'judy' });
      await assert.rejects(provisioning.upsertDevice('judy', 'JUDYDEV', 'x'.repeat(101)), isPermanent(400));
      await provisioning.upsertDevice('judy', 'JUDYDEV', 'x'.repeat(100));
    });

    test('the provisioning API wants the shared secret: none is 401 M_MISSING_TOKEN, another is 403', async () => {
      const missing = await client('GET', '/_synapse/mas/query_user?localpart=alice');
      assert.equal(missing.status, 401);
      assert.equal(missing.body?.['errcode'], 'M_MISSING_TOKEN');
      const wrong = await client('GET', '/_synapse/mas/query_user?localpart=alice', 'not-the-secret');
      assert.deepEqual(wrong, { status: 403, body: { errcode: 'M_UNKNOWN', error: 'This endpoint must only be called by MAS' } });

      const wrongSecret = new SynapseProvisioning({
        baseUrl: homeserver.url,
        secret: 'not-the-secret',
        timeoutMs: 5_000,
        logger: pino({ level: 'silent' }),
      });
      await assert.rejects(wrongSecret.provisionUser({ localpart: 'mallory' }), isPermanent(403));
    });

    test('during a secret rotation the client follows the homeserver: a refused secret, then the accepted previous one, kept', async () => {
      const lines: Record<string, unknown>[] = [];
      const rotating = new SynapseProvisioning({
        baseUrl: homeserver.url,
        secret: 'the-next-secret-not-yet-at-the-homeserver',
        previousSecrets: ['an-older-secret-no-longer-anywhere', BEHAVIOUR_SECRET],
        timeoutMs: 5_000,
        logger: pino({ level: 'warn' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) }),
        retries: 0,
      });
      await rotating.provisionUser({ localpart: 'rotor', displayName: 'Rotor' });
      assert.equal((await rotating.queryUser('rotor'))?.displayName, 'Rotor');
      const switched = lines.filter((line) => line['event'] === 'homeserver.secret.switched');
      assert.equal(switched.length, 1, 'switched once, then kept the accepted secret');
      assert.equal(switched[0]?.['secret'], 'homeserver.previous_secrets[1]');
      // No configured secret accepted: the refusal is what the caller sees.
      const none = new SynapseProvisioning({ baseUrl: homeserver.url, secret: 'not-the-secret', previousSecrets: ['nor-this-one-either'], timeoutMs: 5_000, logger: pino({ level: 'silent' }), retries: 0 });
      await assert.rejects(none.provisionUser({ localpart: 'mallory' }), isPermanent(403));
    });

    test('the provisioning API validates bodies like Synapse', async () => {
      const post = (endpoint: string, body: string) =>
        fetch(`${homeserver.url}/_synapse/mas/${endpoint}`, {
          method: 'POST',
          headers: { authorization: `Bearer ${BEHAVIOUR_SECRET}`, 'content-type': 'application/json' },
          body,
        }).then(async (response) => ({ status: response.status, errcode: ((await response.json()) as Record<string, unknown>)['errcode'] }));
      assert.deepEqual(await post('provision_user', 'not json'), { status: 400, errcode: 'M_NOT_JSON' });
      assert.deepEqual(await post('provision_user', '[]'), { status: 400, errcode: 'M_BAD_JSON' });
      assert.deepEqual(await post('provision_user', '{}'), { status: 400, errcode: 'M_MISSING_PARAM' });
      assert.deepEqual(await post('provision_user', '{"localpart": 5}'), { status: 400, errcode: 'M_BAD_JSON' });
      assert.deepEqual(await post('provision_user', '{"localpart": "x", "set_displayname": "a", "unset_displayname": false}'), {
        status: 400,
        errcode: 'M_INVALID_PARAM',
      });
      assert.deepEqual(await post('sync_devices', '{"localpart": "alice", "devices": [1]}'), { status: 400, errcode: 'M_BAD_JSON' });
      const wrongMethod = await client('GET', '/_synapse/mas/provision_user', BEHAVIOUR_SECRET);
      assert.deepEqual(wrongMethod, { status: 405, body: { errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' } });
    });

    test('an inactive token is 401 M_UNKNOWN_TOKEN, and that answer is cached too', async () => {
      await provisioning.provisionUser({ localpart: 'ken' });
      await provisioning.upsertDevice('ken', 'KENDEV');
      const token = tokenFor({ active: false });
      const first = await whoami(token);
      assert.deepEqual(first, { status: 401, body: { errcode: 'M_UNKNOWN_TOKEN', error: 'Token is not active', soft_logout: false } });
      // Becoming active at the auth service does not help within Synapse's two-minute cache.
      auth.answers.set(token, activeAnswer('ken', 'KENDEV'));
      assert.equal((await whoami(token)).status, 401);
    });

    test('an expired answer (expires_in reached) is 401 M_UNKNOWN_TOKEN', async () => {
      await provisioning.provisionUser({ localpart: 'leo' });
      await provisioning.upsertDevice('leo', 'LEODEV');
      const token = tokenFor(activeAnswer('leo', 'LEODEV', { expires_in: 0 }));
      const answer = await whoami(token);
      assert.equal(answer.status, 401);
      assert.equal(answer.body?.['errcode'], 'M_UNKNOWN_TOKEN');
    });

    test('a token without the Matrix API scope is 401 M_UNKNOWN_TOKEN', async () => {
      await provisioning.provisionUser({ localpart: 'mia' });
      await provisioning.upsertDevice('mia', 'MIADEV');
      const answer = await whoami(tokenFor(activeAnswer('mia', 'MIADEV', { scope: 'openid urn:matrix:client:device:MIADEV' })));
      assert.deepEqual(answer, {
        status: 401,
        body: { errcode: 'M_UNKNOWN_TOKEN', error: "Token doesn't grant access to the Matrix C-S API", soft_logout: false },
      });
    });

    test('the device may come from the scope (native OAuth sessions); two device scopes are a 500', async () => {
      await provisioning.provisionUser({ localpart: 'nina' });
      await provisioning.upsertDevice('nina', 'NINADEV');
      const scoped = tokenFor({ active: true, username: 'nina', scope: 'openid urn:matrix:client:api:* urn:matrix:client:device:NINADEV' });
      assert.deepEqual(await whoami(scoped), {
        status: 200,
        body: { user_id: `@nina:${BEHAVIOUR_SERVER_NAME}`, is_guest: false, device_id: 'NINADEV' },
      });
      const unstable = tokenFor({
        active: true,
        username: 'nina',
        scope: 'urn:matrix:org.matrix.msc2967.client:api:* urn:matrix:org.matrix.msc2967.client:device:NINADEV',
      });
      assert.equal((await whoami(unstable)).status, 200);
      const twoDevices = tokenFor({
        active: true,
        username: 'nina',
        scope: 'urn:matrix:client:api:* urn:matrix:client:device:NINADEV urn:matrix:client:device:OTHER',
      });
      assert.deepEqual(await whoami(twoDevices), { status: 500, body: { errcode: 'M_FORBIDDEN', error: 'Multiple device IDs in scope' } });
      const noDevice = tokenFor({ active: true, username: 'nina', scope: 'urn:matrix:client:api:*' });
      assert.deepEqual(await whoami(noDevice), { status: 200, body: { user_id: `@nina:${BEHAVIOUR_SERVER_NAME}`, is_guest: false } });
    });

    test('an active token of a user Synapse does not know is a 500, and so is a missing username', async () => {
      assert.deepEqual(await whoami(tokenFor(activeAnswer('ghost', 'GHOSTDEV'))), {
        status: 500,
        body: { errcode: 'M_FORBIDDEN', error: 'User not found' },
      });
      assert.deepEqual(await whoami(tokenFor({ active: true, scope: 'urn:matrix:client:api:*' })), {
        status: 500,
        body: { errcode: 'M_FORBIDDEN', error: 'Invalid username claim in the introspection result' },
      });
    });

    test('an auth service that fails or answers garbage is 503, not a logout', async () => {
      await provisioning.provisionUser({ localpart: 'olga' });
      await provisioning.upsertDevice('olga', 'OLGADEV');
      const token = tokenFor(activeAnswer('olga', 'OLGADEV'));
      auth.failWith = 500;
      try {
        assert.deepEqual(await whoami(token), { status: 503, body: { errcode: 'M_UNKNOWN', error: 'Unable to introspect the access token' } });
      } finally {
        auth.failWith = undefined;
      }
      // Failures are not cached: the next request introspects again and succeeds.
      assert.equal((await whoami(token)).status, 200);
      const garbage = tokenFor({ active: 'yes' });
      assert.equal((await whoami(garbage)).status, 503);
    });

    test('client requests without a usable token are 401 M_MISSING_TOKEN, without asking the auth service', async () => {
      const before = auth.introspections.length;
      assert.deepEqual(await client('GET', '/_matrix/client/v3/account/whoami'), {
        status: 401,
        body: { errcode: 'M_MISSING_TOKEN', error: 'Missing access token' },
      });
      const basic = await fetch(`${homeserver.url}/_matrix/client/v3/account/whoami`, { headers: { authorization: 'Basic abc' } });
      assert.equal(basic.status, 401);
      assert.equal(((await basic.json()) as Record<string, unknown>)['errcode'], 'M_MISSING_TOKEN');
      assert.equal(auth.introspections.length, before);
    });

    test('the legacy token query parameter works like the header', async () => {
      await provisioning.provisionUser({ localpart: 'pia' });
      await provisioning.upsertDevice('pia', 'PIADEV');
      const token = tokenFor(activeAnswer('pia', 'PIADEV'));
      const answer = await client('GET', `/_matrix/client/v3/account/whoami?access_token=${token}`);
      assert.equal(answer.status, 200);
      assert.equal(answer.body?.['device_id'], 'PIADEV');
    });

    test('the endpoints delegated auth takes away are 404 M_UNRECOGNIZED (the proxy must own them)', async () => {
      const unrecognized = { errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' };
      for (const [method, path] of [
        ['GET', '/_matrix/client/v3/login'],
        ['POST', '/_matrix/client/v3/login'],
        ['GET', '/_matrix/client/r0/login'],
        ['GET', '/_matrix/client/v3/login/sso/redirect?redirectUrl=http%3A%2F%2Fx'],
        ['POST', '/_matrix/client/v3/logout'],
        ['POST', '/_matrix/client/v3/logout/all'],
        ['POST', '/_matrix/client/v3/refresh'],
      ] as const) {
        assert.deepEqual(await client(method, path, undefined, method === 'POST' ? {} : undefined), { status: 404, body: unrecognized }, `${method} ${path}`);
      }
    });

    test('users cannot delete their own devices through the client API (404 M_UNRECOGNIZED)', async () => {
      await provisioning.provisionUser({ localpart: 'quinn' });
      await provisioning.upsertDevice('quinn', 'QUINNDEV');
      const token = tokenFor(activeAnswer('quinn', 'QUINNDEV'));
      assert.deepEqual(await client('DELETE', '/_matrix/client/v3/devices/QUINNDEV', token), {
        status: 404,
        body: { errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' },
      });
      assert.equal((await whoami(token)).status, 200);
    });

    test('a user may rename an own device through the client API', async () => {
      await provisioning.provisionUser({ localpart: 'ruth' });
      await provisioning.upsertDevice('ruth', 'RUTHDEV', 'old');
      const token = tokenFor(activeAnswer('ruth', 'RUTHDEV'));
      assert.deepEqual(await client('PUT', '/_matrix/client/v3/devices/RUTHDEV', token, { display_name: 'new' }), { status: 200, body: {} });
      assert.equal((await client('GET', '/_matrix/client/v3/devices/RUTHDEV', token)).body?.['display_name'], 'new');
      assert.equal((await client('PUT', '/_matrix/client/v3/devices/NOSUCH', token, { display_name: 'x' })).status, 404);
    });
  });
}

function isPermanent(status: number) {
  return (error: unknown) => {
    assert.ok(error instanceof HomeserverError, `expected a HomeserverError, got ${String(error)}`);
    assert.equal(error.kind, 'permanent');
    assert.equal(error.status, status);
    return true;
  };
}

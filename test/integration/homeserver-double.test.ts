import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { HomeserverError } from '../../src/provisioning/homeserver-adapter.js';
import { SynapseProvisioning } from '../../src/provisioning/synapse.js';
import { FakeClock } from '../support/fake-clock.js';
import { freePort } from '../support/free-port.js';
import { startHomeserverDouble, type HomeserverDouble } from '../support/homeserver-double.js';
import {
  BEHAVIOUR_SECRET,
  BEHAVIOUR_SERVER_NAME,
  describeSynapseBehaviour,
  startStandInAuthService,
  type StandInAuthService,
} from '../support/synapse-behaviour.js';

// The same checks test/interop/synapse-provisioning.test.ts runs against real Synapse: the double must pass them all.
describeSynapseBehaviour('SynapseProvisioning against the homeserver double', (auth) =>
  startHomeserverDouble({ masEndpoint: `${auth.url}/`, secret: BEHAVIOUR_SECRET, serverName: BEHAVIOUR_SERVER_NAME }),
);

describe('SynapseProvisioning retries and failure classes', () => {
  let double: HomeserverDouble;
  const logger = pino({ level: 'silent' });
  const client = (baseUrl: string, extra: Partial<ConstructorParameters<typeof SynapseProvisioning>[0]> = {}) =>
    new SynapseProvisioning({ baseUrl, secret: BEHAVIOUR_SECRET, timeoutMs: 5_000, logger, retryBaseDelayMs: 5, ...extra });

  before(async () => {
    double = await startHomeserverDouble({ masEndpoint: 'http://127.0.0.1:9/', secret: BEHAVIOUR_SECRET, serverName: BEHAVIOUR_SERVER_NAME });
  });
  after(() => double.stop());

  const callsTo = (endpoint: string) => double.calls.filter((call) => call.endpoint === endpoint).length;

  test('5xx and 429 are retried until Synapse succeeds', async () => {
    const before = callsTo('provision_user');
    double.failProvisioning('provision_user', 503, 1);
    double.failProvisioning('*', 429, 1);
    await client(double.url).provisionUser({ localpart: 'retried', displayName: 'Retried' });
    assert.equal(callsTo('provision_user') - before, 3);
    assert.equal(double.users.get('retried')?.displayName, 'Retried');
  });

  test('a 4xx is final: no retry, a permanent error with the status', async () => {
    const before = callsTo('upsert_device');
    double.failProvisioning('upsert_device', 400, 1);
    await assert.rejects(client(double.url).upsertDevice('retried', 'DEV'), (error: unknown) => {
      assert.ok(error instanceof HomeserverError);
      assert.equal(error.kind, 'permanent');
      assert.equal(error.status, 400);
      return true;
    });
    assert.equal(callsTo('upsert_device') - before, 1);
  });

  test('when the retries run out the last transient failure is thrown', async () => {
    const before = callsTo('sync_devices');
    double.failProvisioning('sync_devices', 502, 3);
    await assert.rejects(client(double.url, { retries: 2 }).syncDevices('retried', []), (error: unknown) => {
      assert.ok(error instanceof HomeserverError);
      assert.equal(error.kind, 'transient');
      assert.equal(error.status, 502);
      return true;
    });
    assert.equal(callsTo('sync_devices') - before, 3);
  });

  test('failProvisioning with times 0 clears what is pending for the endpoint', async () => {
    double.failProvisioning('query_user', 500, 5);
    double.failProvisioning('query_user', 500, 0);
    assert.equal(await client(double.url, { retries: 0 }).queryUser('never-created'), undefined);
  });

  test('an unreachable Synapse is a transient failure', async () => {
    const port = await freePort();
    await assert.rejects(client(`http://127.0.0.1:${port}`, { retries: 1 }).queryUser('alice'), (error: unknown) => {
      assert.ok(error instanceof HomeserverError);
      assert.equal(error.kind, 'transient');
      assert.equal(error.status, undefined);
      assert.match(error.message, /unreachable/);
      return true;
    });
  });

  test('a Synapse that never answers is given up on within the time budget', async () => {
    const silent = createServer(() => {
      // never answers
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    try {
      const started = performance.now();
      await assert.rejects(
        client(`http://127.0.0.1:${(silent.address() as AddressInfo).port}`, { timeoutMs: 300 }).upsertDevice('alice', 'DEV'),
        (error: unknown) => error instanceof HomeserverError && error.kind === 'transient' && /timed out/.test(error.message),
      );
      const elapsed = performance.now() - started;
      assert.ok(elapsed < 1_000, `took ${elapsed} ms`);
    } finally {
      silent.closeAllConnections();
      silent.close();
    }
  });

  test('404 M_UNRECOGNIZED (no /_synapse/mas: MAS integration off) is a permanent error, never "unknown user"', async () => {
    const plain = createServer((_req, res) => {
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}');
    });
    await new Promise<void>((resolve) => plain.listen(0, '127.0.0.1', resolve));
    try {
      const provisioning = client(`http://127.0.0.1:${(plain.address() as AddressInfo).port}`);
      for (const call of [() => provisioning.queryUser('alice'), () => provisioning.deleteDevice('alice', 'DEV')]) {
        await assert.rejects(call(), (error: unknown) => {
          assert.ok(error instanceof HomeserverError);
          assert.equal(error.kind, 'permanent');
          assert.match(error.message, /matrix_authentication_service/);
          return true;
        });
      }
    } finally {
      plain.close();
    }
  });

  test('the secret is sent as a Bearer token and bodies carry Synapse field names', async () => {
    const provisioning = client(double.url);
    await provisioning.provisionUser({ localpart: 'fields', displayName: 'F', emails: ['f@example.test'], avatarUrl: 'mxc://example.test/f' });
    await provisioning.upsertDevice('fields', 'FDEV', 'Phone');
    const provision = double.calls.findLast((call) => call.endpoint === 'provision_user');
    assert.deepEqual(provision?.body, {
      localpart: 'fields',
      set_displayname: 'F',
      set_avatar_url: 'mxc://example.test/f',
      set_emails: ['f@example.test'],
    });
    assert.deepEqual(double.calls.findLast((call) => call.endpoint === 'upsert_device')?.body, {
      localpart: 'fields',
      device_id: 'FDEV',
      display_name: 'Phone',
    });
    assert.deepEqual(double.users.get('fields')?.emails, ['f@example.test']);
    assert.equal(double.devices('fields').get('FDEV')?.displayName, 'Phone');
  });
});

describe('homeserver double: time-dependent token checks (fake clock)', () => {
  let auth: StandInAuthService;
  let double: HomeserverDouble;
  const clock = new FakeClock();

  before(async () => {
    auth = await startStandInAuthService();
    double = await startHomeserverDouble({ masEndpoint: auth.url, secret: BEHAVIOUR_SECRET, serverName: BEHAVIOUR_SERVER_NAME, clock });
    double.users.set('tess', { localpart: 'tess', displayName: 'Tess', avatarUrl: null, emails: [], locked: false, deactivated: false, suspended: false });
    await new SynapseProvisioning({ baseUrl: double.url, secret: BEHAVIOUR_SECRET, timeoutMs: 5_000, logger: pino({ level: 'silent' }) }).upsertDevice('tess', 'TESSDEV');
  });
  after(async () => {
    await double.stop();
    await auth.stop();
  });

  const whoami = (token: string) =>
    fetch(`${double.url}/_matrix/client/v3/account/whoami`, { headers: { authorization: `Bearer ${token}` } }).then((response) => response.status);
  const answer = (extra: Record<string, unknown> = {}) => ({
    active: true,
    scope: 'urn:matrix:client:api:*',
    username: 'tess',
    device_id: 'TESSDEV',
    ...extra,
  });

  test('introspection answers are cached for two minutes, then asked again', async () => {
    auth.answers.set('cached-token', answer());
    assert.equal(await whoami('cached-token'), 200);
    auth.answers.set('cached-token', { active: false });
    clock.advance(119_000);
    assert.equal(await whoami('cached-token'), 200, 'still the cached answer');
    clock.advance(1_000);
    assert.equal(await whoami('cached-token'), 401, 'the cache entry expired, the new answer counts');
    assert.equal(double.introspections.filter((call) => call.token === 'cached-token').length, 2);
  });

  test('expires_in counts from when the answer was fetched, also while it is cached', async () => {
    auth.answers.set('expiring-token', answer({ expires_in: 60 }));
    assert.equal(await whoami('expiring-token'), 200);
    clock.advance(59_000);
    assert.equal(await whoami('expiring-token'), 200);
    clock.advance(1_000);
    assert.equal(await whoami('expiring-token'), 401);
    assert.equal(double.introspections.filter((call) => call.token === 'expiring-token').length, 1);
  });
});

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient } from 'matrix-js-sdk';
import { stringify } from 'yaml';
import { buildDeps } from '../../src/build-deps.js';
import { loadConfig } from '../../src/config/load-config.js';
import { createLogger } from '../../src/observability/logger.js';
import { createMetrics } from '../../src/observability/metrics.js';
import { startProxy, type RunningProxy } from '../../src/server.js';
import { createStore, type Store } from '../../src/store/index.js';
import { startPostgres, type Service } from '../support/deploy-stack.js';
import { freePort } from '../support/free-port.js';
import { jsonRequest, type JsonResponse } from '../support/json-request.js';
import { startRedis, type RunningRedis } from '../support/redis-server.js';
import { startSynapse, type RunningSynapse } from '../support/synapse.js';
import { testOpProviderBlock } from '../support/test-op-provider.js';
import { startTestOp, type TestOp } from '../support/test-op.js';

/*
 * Issue 14 on real components: a real Synapse runs in its normal mode (its own password logins, SQLite), clients log
 * in and use it; then the runbook (docs/migrating-from-synapse.md) is followed with its own commands: stop Synapse,
 * dry run, migrate, switch Synapse to the proxy, start. The same tokens keep working without a new login; refresh
 * rotates into proxy tokens; logout ends a session at once; an SSO-linked user and a password user sign in through
 * the OP and land on their old MXIDs; and switching back (rollback) leaves Synapse's own tokens working.
 */

const skip = process.env['MCP_SKIP_INTEROP'] === '1' ? 'MCP_SKIP_INTEROP=1' : false;
const SERVER_NAME = 'example.test';
const IDP_ID = 'testop';
const SECRET = 'homeserver-shared-secret-for-migration-tests-0123';
const REGISTRATION_SECRET = 'registration-shared-secret-for-migration-tests';
const WHOAMI = '/_matrix/client/v3/account/whoami';
const mxid = (localpart: string) => `@${localpart}:${SERVER_NAME}`;

/** The commands of the runbook, as written there (placeholders replaced by this test's paths). */
async function runbookCommands(): Promise<string[]> {
  const text = await readFile(new URL('../../docs/migrating-from-synapse.md', import.meta.url), 'utf8');
  return [...text.matchAll(/^\s*(matrix-compat-proxy migrate synapse .+)$/gm)].map((match) => match[1] as string);
}

function runCli(command: string, paths: Record<string, string>): { status: number; stdout: string; stderr: string } {
  let line = command;
  for (const [placeholder, value] of Object.entries(paths)) line = line.replaceAll(placeholder, value);
  const args = line.split(/\s+/).slice(1);
  const result = spawnSync(process.execPath, ['--import', 'tsx', 'test/support/run-cli.ts', ...args], { encoding: 'utf8', timeout: 120_000 });
  return { status: result.status ?? -1, stdout: result.stdout, stderr: result.stderr };
}

function deviceList(body: { devices: { device_id: string; display_name?: string | null }[] }): string[] {
  return body.devices.map((device) => `${device.device_id} ${device.display_name ?? ''}`).sort();
}

interface Login {
  readonly access_token: string;
  readonly device_id: string;
  readonly user_id: string;
  readonly refresh_token?: string;
}

for (const engine of ['sqlite', 'postgres'] as const) {
  describe(`migrate synapse: a real Synapse (${engine}) switched to the proxy without logging anyone out`, { skip }, () => {
    let dataDir: string;
    let postgres: Service | undefined;
    let databaseUrl: string;
    let databaseConfig: Record<string, unknown> | undefined;
    let op: TestOp;
    let redis: RunningRedis;
    let synapse: RunningSynapse | undefined;
    let proxy: RunningProxy | undefined;
    let proxyStore: Store | undefined;
    let proxyPort: number;
    let configPath: string;
    const logins: Record<string, Login> = {};
    let roomId: string;
    let aliceKeysBefore: unknown;
    let aliceDevicesBefore: unknown;

    const atSynapse = (method: string, path: string, token?: string, body?: unknown): Promise<JsonResponse> =>
      jsonRequest(`${synapse!.url}${path}`, method, { ...(token === undefined ? {} : { token }), ...(body === undefined ? {} : { body }) });
    const atProxy = (method: string, path: string, token?: string, body?: unknown): Promise<JsonResponse> =>
      jsonRequest(`${proxy!.clientUrl}${path}`, method, { ...(token === undefined ? {} : { token }), ...(body === undefined ? {} : { body }) });

    const startOwnSynapse = async (mode: 'own-auth' | 'proxy') =>
      startSynapse({
        masEndpoint: mode === 'proxy' ? `http://127.0.0.1:${proxyPort}/` : undefined,
        masSecret: SECRET,
        serverName: SERVER_NAME,
        dataDir,
        extraConfig: {
          ...(mode === 'own-auth' ? { registration_shared_secret: REGISTRATION_SECRET, allow_guest_access: true } : {}),
          ...(databaseConfig === undefined ? {} : { database: databaseConfig }),
          // Long enough for the whole test: the refreshable token must not expire between login and the checks.
          refreshable_access_token_lifetime: '1h',
        },
      });

    async function register(username: string, password: string, admin = false): Promise<void> {
      const { body } = await atSynapse('GET', '/_synapse/admin/v1/register');
      const mac = createHmac('sha1', REGISTRATION_SECRET).update(`${body.nonce}\0${username}\0${password}\0${admin ? 'admin' : 'notadmin'}`).digest('hex');
      const response = await atSynapse('POST', '/_synapse/admin/v1/register', undefined, { nonce: body.nonce, username, password, admin, mac });
      assert.equal(response.status, 200, JSON.stringify(response.body));
    }

    async function synapseLogin(username: string, password: string, refresh: boolean): Promise<Login> {
      const response = await atSynapse('POST', '/_matrix/client/v3/login', undefined, {
        type: 'm.login.password',
        identifier: { type: 'm.id.user', user: username },
        password,
        initial_device_display_name: `${username}'s phone`,
        ...(refresh ? { refresh_token: true } : {}),
      });
      assert.equal(response.status, 200, JSON.stringify(response.body));
      return response.body as Login;
    }

    before(async () => {
      dataDir = await mkdtemp(join(tmpdir(), 'mcp-migrate-'));
      databaseUrl = `sqlite://${join(dataDir, 'homeserver.db')}`;
      if (engine === 'postgres') {
        // Debian's PostgreSQL on a free port, created the way the compose file's postgres service is (C collation, as
        // Synapse requires); Synapse reaches it with psycopg2 from its virtualenv.
        const port = await freePort();
        const environment = { POSTGRES_USER: 'synapse', POSTGRES_PASSWORD: 'synapse-test-password', POSTGRES_DB: 'synapse', POSTGRES_INITDB_ARGS: '--encoding=UTF8 --lc-collate=C --lc-ctype=C' };
        postgres = await startPostgres(dataDir, port, { environment });
        databaseUrl = `postgres://synapse:synapse-test-password@127.0.0.1:${port}/synapse`;
        databaseConfig = { name: 'psycopg2', args: { user: 'synapse', password: 'synapse-test-password', database: 'synapse', host: '127.0.0.1', port, cp_min: 1, cp_max: 5 } };
      }
      proxyPort = await freePort();
      redis = await startRedis();
      op = await startTestOp({
        proxyBaseUrl: `http://127.0.0.1:${proxyPort}`,
        idpId: IDP_ID,
        users: [
          { username: 'carol', password: 'carol-op-password', sub: 'carol-op-subject', email: 'carol@example.org', name: 'Carol', groups: [] },
          // The OP username differs from the Matrix localpart: only the imported SSO link can land dave on @dave.
          { username: 'dave-at-op', password: 'dave-op-password', sub: 'dave-op-subject', email: 'dave@example.org', name: 'Dave', groups: [] },
        ],
      });
      synapse = await startOwnSynapse('own-auth');

      await register('admin', 'admin-password', true);
      for (const user of ['alice', 'bob', 'carol', 'dave', 'erin']) await register(user, `${user}-synapse-password`);
      logins['admin'] = await synapseLogin('admin', 'admin-password', false);
      logins['alice'] = await synapseLogin('alice', 'alice-synapse-password', true);
      logins['bob'] = await synapseLogin('bob', 'bob-synapse-password', false);
      logins['erin'] = await synapseLogin('erin', 'erin-synapse-password', false);
      // dave signed in with Synapse's built-in OIDC provider `testop` before: Synapse recorded the link as
      // (auth_provider "oidc-testop", external_id = the OP's subject); the admin API writes that same row.
      const linked = await atSynapse('PUT', `/_synapse/admin/v2/users/${encodeURIComponent(mxid('dave'))}`, logins['admin'].access_token, {
        external_ids: [{ auth_provider: `oidc-${IDP_ID}`, external_id: 'dave-op-subject' }],
      });
      assert.equal(linked.status, 200, JSON.stringify(linked.body));
      // A guest: Synapse gives guests macaroon tokens it checks without its database, so no row is there to import;
      // the guest's user row is there and skipped (unit tests cover a guest's token row).
      const guest = await atSynapse('POST', '/_matrix/client/v3/register?kind=guest', undefined, {});
      assert.equal(guest.status, 200, JSON.stringify(guest.body));

      // alice uses her account: a room, a message, device keys.
      const alice = createClient({ baseUrl: synapse.url, accessToken: logins['alice'].access_token, userId: logins['alice'].user_id, deviceId: logins['alice'].device_id });
      roomId = (await alice.createRoom({ name: 'before the migration' })).room_id;
      await alice.sendTextMessage(roomId, 'written before the switch');
      const deviceId = logins['alice'].device_id;
      const uploaded = await atSynapse('POST', '/_matrix/client/v3/keys/upload', logins['alice'].access_token, {
        device_keys: {
          user_id: mxid('alice'),
          device_id: deviceId,
          algorithms: ['m.olm.v1.curve25519-aes-sha2', 'm.megolm.v1.aes-sha2'],
          keys: { [`curve25519:${deviceId}`]: 'Q0FSUk9UQ1VSVkUyNTUxOUtFWU9GQUxJQ0VERVZJQ0U', [`ed25519:${deviceId}`]: 'RURUV0VOVFlGSVZFNTE5S0VZT0ZBTElDRURFVklDRTAx' },
          signatures: { [mxid('alice')]: { [`ed25519:${deviceId}`]: 'c2lnbmF0dXJlLW9mLWFsaWNlcy1kZXZpY2Uta2V5cy1mb3ItdGhlLXRlc3Q' } },
        },
      });
      assert.equal(uploaded.status, 200, JSON.stringify(uploaded.body));
      aliceKeysBefore = (await atSynapse('POST', '/_matrix/client/v3/keys/query', logins['alice'].access_token, { device_keys: { [mxid('alice')]: [] } })).body.device_keys;
      aliceDevicesBefore = deviceList((await atSynapse('GET', '/_matrix/client/v3/devices', logins['alice'].access_token)).body);

      configPath = join(dataDir, 'proxy.yaml');
      const provider = { ...testOpProviderBlock(op, IDP_ID, 'Test OP'), allow_existing_users: true };
      await writeFile(
        configPath,
        stringify({
          server_name: SERVER_NAME,
          public_baseurl: `http://127.0.0.1:${proxyPort}/`,
          listen: { host: '127.0.0.1', port: proxyPort },
          homeserver: { url: synapse.url, mode: 'synapse', secret: SECRET },
          store: { redis_url: redis.url, key_prefix: `migrate-${Date.now()}:` },
          oidc_providers: [provider],
          password_login: { enabled: true, idp_id: IDP_ID },
          sessions: { encryption_key: 'an-encryption-key-for-migration-tests-0123456789' },
          metrics: { enabled: false },
          log: { level: 'silent' },
        }),
      );
    });

    after(async () => {
      await proxy?.stop(5_000);
      await proxyStore?.close();
      await synapse?.stop();
      await op?.stop();
      await redis?.stop();
      await postgres?.stop();
      if (dataDir !== undefined && process.env['MCP_KEEP_MIGRATION_DIR'] !== '1') await rm(dataDir, { recursive: true, force: true });
    });

    test('the runbook: stop Synapse, dry run, migrate (twice: idempotent)', async () => {
      await synapse!.stop();
      synapse = undefined;
      const commands = await runbookCommands();
      const dryRun = commands.find((command) => command.includes('--dry-run'));
      const migrate = commands.find((command) => !command.includes('--dry-run') && !command.includes('--export-users'));
      assert.ok(dryRun !== undefined && migrate !== undefined, 'the runbook names the dry run and the migration');
      const paths = {
        '/etc/matrix-compat-proxy/config.yaml': configPath,
        'sqlite:///var/lib/synapse/homeserver.db': databaseUrl,
        '/root/migration-dry-run.json': join(dataDir, 'dry-run.json'),
        '/root/migration.json': join(dataDir, 'migration.json'),
      };

      const planned = runCli(dryRun, paths);
      assert.equal(planned.status, 0, planned.stderr + planned.stdout);
      const dry = JSON.parse(await readFile(join(dataDir, 'dry-run.json'), 'utf8'));
      assert.equal(dry.dry_run, true);
      assert.equal(dry.database, engine);
      // Ten live tokens: one per registration (the shared-secret registration logs the user in) and four logins.
      assert.equal(dry.rows.access_tokens, 10, planned.stdout);
      assert.equal(dry.sessions.imported, 10, planned.stdout);
      assert.deepEqual(dry.skipped, [], planned.stdout);
      assert.equal(dry.sessions.with_op_subject, 1, 'dave\'s session carries his OP subject');
      assert.equal(dry.bindings.created, 1, 'dave\'s SSO link becomes a binding');

      const done = runCli(migrate, paths);
      assert.equal(done.status, 0, done.stderr + done.stdout);
      const report = JSON.parse(await readFile(join(dataDir, 'migration.json'), 'utf8'));
      assert.deepEqual([report.sessions.imported, report.sessions.already_imported, report.bindings.created], [10, 0, 1]);

      const again = runCli(migrate, paths);
      assert.equal(again.status, 0, again.stderr);
      const second = JSON.parse(await readFile(join(dataDir, 'migration.json'), 'utf8'));
      assert.deepEqual([second.sessions.imported, second.sessions.already_imported, second.bindings.created, second.bindings.unchanged], [0, 10, 0, 1]);
    });

    test('after the switch the same tokens work: whoami, the old messages, the same devices and keys', async () => {
      synapse = await startOwnSynapse('proxy');
      const config = loadConfig(configPath);
      const live = { ...config, homeserver: { ...config.homeserver, url: synapse.url } };
      proxyStore = await createStore({ redis: { url: redis.url, keyPrefix: config.store.key_prefix } });
      proxy = await startProxy(await buildDeps(live as typeof config, proxyStore, createLogger('silent'), createMetrics({ collectDefaults: false })));

      for (const user of ['alice', 'bob', 'erin']) {
        const whoami = await atProxy('GET', WHOAMI, logins[user]!.access_token);
        assert.equal(whoami.status, 200, `${user}: ${JSON.stringify(whoami.body)}\n${synapse.logs().slice(-3000)}`);
        assert.deepEqual([whoami.body.user_id, whoami.body.device_id], [mxid(user), logins[user]!.device_id]);
      }
      const alice = logins['alice']!;
      const sync = await atProxy('GET', `/_matrix/client/v3/sync?filter=${encodeURIComponent(JSON.stringify({ room: { timeline: { limit: 20 } } }))}`, alice.access_token);
      assert.equal(sync.status, 200);
      const timeline = sync.body.rooms.join[roomId].timeline.events as { type: string; content: { body?: string } }[];
      assert.ok(timeline.some((event) => event.content.body === 'written before the switch'));
      // The same devices with the same names (last_seen_ts moves: these very requests are a use of the device).
      assert.deepEqual(deviceList((await atProxy('GET', '/_matrix/client/v3/devices', alice.access_token)).body), aliceDevicesBefore);
      assert.deepEqual((await atProxy('POST', '/_matrix/client/v3/keys/query', alice.access_token, { device_keys: { [mxid('alice')]: [] } })).body.device_keys, aliceKeysBefore);
    });

    test('a Synapse refresh token rotates into proxy tokens on the same device', async () => {
      const alice = logins['alice']!;
      assert.ok(alice.refresh_token?.startsWith('syr_'));
      const refreshed = await atProxy('POST', '/_matrix/client/v3/refresh', undefined, { refresh_token: alice.refresh_token });
      assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
      assert.match(refreshed.body.access_token, /^mcpa_/);
      assert.match(refreshed.body.refresh_token, /^mcpr_/);
      const whoami = await atProxy('GET', WHOAMI, refreshed.body.access_token);
      assert.deepEqual([whoami.status, whoami.body.device_id], [200, alice.device_id]);
      const again = await atProxy('POST', '/_matrix/client/v3/refresh', undefined, { refresh_token: refreshed.body.refresh_token });
      assert.equal(again.status, 200, 'the proxy pair refreshes like any other');
    });

    test('logout of an imported session ends it at once', async () => {
      const bob = logins['bob']!;
      assert.equal((await atProxy('POST', '/_matrix/client/v3/logout', bob.access_token, {})).status, 200);
      const after = await atProxy('GET', WHOAMI, bob.access_token);
      assert.equal(after.status, 401, JSON.stringify(after.body));
    });

    test('an SSO-linked user and a password user sign in through the OP and land on their old MXIDs', async () => {
      const dave = await atProxy('POST', '/_matrix/client/v3/login', undefined, { type: 'm.login.password', identifier: { type: 'm.id.user', user: 'dave-at-op' }, password: 'dave-op-password' });
      assert.equal(dave.status, 200, JSON.stringify(dave.body));
      assert.equal(dave.body.user_id, mxid('dave'));
      const carol = await atProxy('POST', '/_matrix/client/v3/login', undefined, { type: 'm.login.password', identifier: { type: 'm.id.user', user: 'carol' }, password: 'carol-op-password' });
      assert.equal(carol.status, 200, JSON.stringify(carol.body));
      assert.equal(carol.body.user_id, mxid('carol'));
    });

    test('rollback: Synapse back on its own auth, the tokens nobody logged out still work', async () => {
      await synapse!.stop();
      synapse = await startOwnSynapse('own-auth');
      const erin = await atSynapse('GET', WHOAMI, logins['erin']!.access_token);
      assert.deepEqual([erin.status, erin.body.user_id], [200, mxid('erin')]);
      const bob = await atSynapse('GET', WHOAMI, logins['bob']!.access_token);
      assert.equal(bob.status, 401, 'the session logged out through the proxy stays logged out');
    });
  });
}

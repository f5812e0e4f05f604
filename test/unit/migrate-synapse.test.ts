import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BindingStore } from '../../src/identity/bindings.js';
import { openSynapseDatabase, type SynapseRows } from '../../src/migrate/synapse-database.js';
import { runImport } from '../../src/migrate/synapse-import.js';
import { planMigration, SKIP_REASONS, type MigrationPlan } from '../../src/migrate/synapse-plan.js';
import { keycloakPartialImport, selectUsersToExport, usersCsv } from '../../src/migrate/user-export.js';
import { sessionRecord, sessionKeys, SessionStore } from '../../src/sessions/session-store.js';
import { MemoryStore } from '../../src/store/memory-store.js';
import { captureLog } from '../support/captured-log.js';
import { FakeClock } from '../support/fake-clock.js';
import { createSynapseFixture } from '../support/synapse-schema.js';

/*
 * `migrate synapse` (issue 14) on a SQLite database with Synapse's columns: every skip reason, the import itself,
 * idempotency (a second run changes nothing, a logged-out token never comes back, a new login is added), the
 * imported lifetime, refresh into a proxy pair, and the user export. The real-Synapse path is
 * test/interop/migrate-synapse.test.ts.
 */

const SERVER = 'example.test';
const ISSUER = 'https://op.example.org';
const DAY = 86_400_000;
const LIFETIME = 90 * DAY;
const u = (localpart: string) => `@${localpart}:${SERVER}`;

let dir: string;
let rows: SynapseRows;
const clock = new FakeClock();
const NOW = clock.now();

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mcp-migrate-unit-'));
  const db = await createSynapseFixture(join(dir, 'homeserver.db'));
  for (const name of ['alice', 'bob', 'carol', 'dave', 'eve', 'frank', 'grace', 'heidi']) db.user(u(name), { password_hash: `$2b$12$${name.padEnd(53, 'x')}` });
  db.user(u('admin'), { admin: 1 });
  db.user(u('gone'), { deactivated: 1 });
  db.user(u('5'), { is_guest: 1 });
  db.user(u('bridge_bot'), { appservice_id: 'bridge' });
  db.user(u('irc_someone'));
  for (const [user, device] of [['alice', 'ALICE1'], ['bob', 'BOB1'], ['carol', 'CAROL1'], ['dave', 'DAVE1'], ['eve', 'EVE1'], ['gone', 'GONE1'], ['5', 'guest_device'], ['bridge_bot', 'BOT1'], ['irc_someone', 'IRC1'], ['frank', 'FRANK1'], ['grace', 'GRACE1']]) {
    db.device(u(user!), device!, { display_name: `${user}'s device` });
  }
  // alice: a plain token, and a macaroon of an old Synapse (any shape is recognised by its hash).
  db.accessToken({ id: 1, user_id: u('alice'), device_id: 'ALICE1', token: 'syt_YWxpY2U_abcdefghijklmnopqrst_0AbCdE' });
  db.accessToken({ id: 2, user_id: u('admin'), device_id: 'ALICE1', token: 'MDAxOGxvY2F0aW9uIGV4YW1wbGUudGVzdAowMDEzaWRlbnRpZmllciBrZXkKMDAxMGNpZCBnZW4gPSAx', puppets_user_id: u('alice') });
  // bob: a refresh chain — pair 10 was refreshed into pair 11 whose access token was used; pair 11 is live.
  db.refreshToken({ id: 10, user_id: u('bob'), device_id: 'BOB1', token: 'syr_Ym9i_old_refresh_token_0001_x', next_token_id: 11 });
  db.refreshToken({ id: 11, user_id: u('bob'), device_id: 'BOB1', token: 'syr_Ym9i_new_refresh_token_0002_y' });
  db.accessToken({ id: 3, user_id: u('bob'), device_id: 'BOB1', token: 'syt_Ym9i_old_access_token_0001_x', valid_until_ms: NOW - 60_000, refresh_token_id: 10, used: 1 });
  db.accessToken({ id: 4, user_id: u('bob'), device_id: 'BOB1', token: 'syt_Ym9i_new_access_token_0002_y', valid_until_ms: NOW + 300_000, refresh_token_id: 11, used: 1 });
  // carol: SSO-linked to the configured provider; dave: linked to a provider the proxy does not know.
  db.accessToken({ id: 5, user_id: u('carol'), device_id: 'CAROL1', token: 'syt_Y2Fyb2w_carols_token_0000000_1' });
  db.externalId('oidc-op', 'carol-subject', u('carol'));
  db.externalId('oidc-github', '12345', u('dave'));
  // Every skip reason.
  db.accessToken({ id: 6, user_id: u('dave'), device_id: null, token: 'syt_ZGF2ZQ_no_device_token_00000_2' });
  db.accessToken({ id: 7, user_id: u('eve'), device_id: 'EVE1', token: 'syt_ZXZl_expired_token_0000000000_3', valid_until_ms: NOW - 1 });
  db.accessToken({ id: 8, user_id: u('gone'), device_id: 'GONE1', token: 'syt_Z29uZQ_deactivated_00000000_4' });
  db.accessToken({ id: 9, user_id: u('5'), device_id: 'guest_device', token: 'syt_NQ_guest_token_000000000000000_5' });
  db.accessToken({ id: 10, user_id: u('bridge_bot'), device_id: 'BOT1', token: 'syt_YnJpZGdl_appservice_0000000_6' });
  db.accessToken({ id: 11, user_id: u('irc_someone'), device_id: 'IRC1', token: 'syt_aXJj_namespace_00000000000_7' });
  db.accessToken({ id: 12, user_id: u('frank'), device_id: 'FRANK_GONE', token: 'syt_ZnJhbms_device_missing_0000_8' });
  db.accessToken({ id: 13, user_id: u('nobody'), device_id: 'X', token: 'syt_bm9ib2R5_unknown_user_00000_9' });
  db.accessToken({ id: 14, user_id: '@alice:other.example', device_id: 'X', token: 'syt_b3RoZXI_foreign_server_0000_a' });
  db.accessToken({ id: 15, user_id: u('grace'), device_id: 'GRACE1', token: 'syt_Z3JhY2U_refresh_missing_000_b', refresh_token_id: 99 });
  db.threepid(u('alice'), 'email', 'alice@example.org');
  db.threepid(u('alice'), 'email', 'alice.work@example.org');
  db.threepid(u('alice'), 'msisdn', '15550001');
  db.profile('alice', 'Alice, "the first"');
  db.close();
  const database = await openSynapseDatabase(`sqlite://${join(dir, 'homeserver.db')}`);
  rows = await database.readAll();
  await database.close();
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const plan = (): MigrationPlan =>
  planMigration(rows, {
    serverName: SERVER,
    now: NOW,
    providers: [{ idpId: 'op', issuer: ISSUER }],
    isAppserviceLocalpart: (localpart) => localpart.startsWith('irc_'),
  });

function modules(store = new MemoryStore({ clock })) {
  const log = captureLog();
  const sessions = new SessionStore(store, clock, Buffer.alloc(32, 7), log.logger);
  const bindings = new BindingStore(store, clock, log.logger);
  return { store, sessions, bindings, deps: { sessions, bindings, clock } };
}

const options = (dryRun: boolean) => ({ dryRun, lifetimeMs: LIFETIME, serverName: SERVER, providers: [{ idpId: 'op', issuer: ISSUER }] });

describe('migrate synapse: the plan', () => {
  test('every skip reason is reported with its row, and only live tokens of real users are imported', () => {
    const { sessions, skipped, bindings, problems } = plan();
    const reasonOf = (id: number) => skipped.find((row) => row.table === 'access_tokens' && row.row === String(id))?.reason;
    assert.deepEqual(
      Object.fromEntries([2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15].map((id) => [id, reasonOf(id)])),
      {
        2: 'puppet_token',
        3: 'superseded',
        6: 'no_device',
        7: 'expired',
        8: 'deactivated_user',
        9: 'guest',
        10: 'appservice_user',
        11: 'appservice_user',
        12: 'device_missing',
        13: 'unknown_user',
        14: 'foreign_server',
        15: 'refresh_token_missing',
      },
    );
    const everyReason = new Set(skipped.map((row) => row.reason));
    for (const reason of SKIP_REASONS) assert.ok(everyReason.has(reason), `a fixture row is skipped as ${reason}`);
    assert.deepEqual(sessions.map((session) => session.synapseTokenId).sort(), [1, 4, 5]);
    const bob = sessions.find((session) => session.localpart === 'bob');
    assert.equal(bob?.refreshToken, 'syr_Ym9i_new_refresh_token_0002_y', 'the newest pair of the chain');
    assert.equal(bob?.accessExpiresAt, NOW + 300_000);
    assert.deepEqual(bindings, [{ localpart: 'carol', idpId: 'op', issuer: ISSUER, sub: 'carol-subject' }]);
    assert.ok(skipped.some((row) => row.table === 'user_external_ids' && row.reason === 'unknown_provider' && row.userId === u('dave')));
    assert.deepEqual(problems.map((problem) => problem.kind).sort(), ['unknown_provider', 'wrong_server_name']);
    assert.match(problems.find((problem) => problem.kind === 'unknown_provider')!.message, /"oidc-github".*idp_id "github"/);
    // No token ever reaches the report.
    assert.ok(!JSON.stringify(skipped).includes('syt_'));
  });
});

describe('migrate synapse: the import', () => {
  test('a dry run writes nothing; the import makes the tokens work; a second run changes nothing', async () => {
    const { store, sessions, bindings, deps } = modules();
    const dry = await runImport(deps, plan(), options(true));
    assert.deepEqual(dry.sessions, { imported: 3, alreadyImported: 0, withOpSubject: 1 });
    assert.equal(dry.bindings.created, 1);
    assert.equal(await sessions.wasImported('syt_YWxpY2U_abcdefghijklmnopqrst_0AbCdE'), false);
    assert.equal(await bindings.findByLocalpart('carol'), undefined);

    const first = await runImport(deps, plan(), options(false));
    assert.deepEqual(first.sessions, { imported: 3, alreadyImported: 0, withOpSubject: 1 });
    const alice = await sessions.authenticate('syt_YWxpY2U_abcdefghijklmnopqrst_0AbCdE');
    assert.ok(alice.ok);
    assert.deepEqual([alice.session.localpart, alice.session.deviceId, alice.session.deviceDisplayName, alice.session.origin.kind], ['alice', 'ALICE1', "alice's device", 'imported']);
    const raw = await store.get(sessionKeys.session(alice.session.id));
    assert.ok(raw?.startsWith('{"v":3,'), 'imported sessions are written as version 3');
    assert.deepEqual(sessionRecord.decode(raw!), alice.session);
    // carol's session carries her OP subject: a back-channel logout of that subject finds it.
    const carol = await sessions.authenticate('syt_Y2Fyb2w_carols_token_0000000_1');
    assert.ok(carol.ok);
    assert.deepEqual(await sessions.idsOfSub('op', 'carol-subject'), [carol.session.id]);
    assert.equal((await bindings.findByLocalpart('carol'))?.sub, 'carol-subject');
    // Tokens are stored hashed only.
    for (const id of await sessions.idsOfUser('alice')) assert.ok(!(await store.get(sessionKeys.session(id)))?.includes('syt_'));
    assert.deepEqual(await sessions.authenticate('syt_unknown_token'), { ok: false, reason: 'foreign' });

    const second = await runImport(deps, plan(), options(false));
    assert.deepEqual(second.sessions, { imported: 0, alreadyImported: 3, withOpSubject: 1 });
    assert.deepEqual([second.bindings.created, second.bindings.unchanged], [0, 1]);
  });

  test('a session ended after the import is not brought back by a later run, and a new login is added', async () => {
    const { sessions, deps } = modules();
    await runImport(deps, plan(), options(false));
    const alice = await sessions.authenticate('syt_YWxpY2U_abcdefghijklmnopqrst_0AbCdE');
    assert.ok(alice.ok);
    await sessions.remove(alice.session.id);

    const withNewLogin: SynapseRows = {
      ...rows,
      accessTokens: [...rows.accessTokens, { id: 100, userId: u('alice'), deviceId: 'ALICE1', token: 'syt_YWxpY2U_a_newer_login_000000_c', validUntilMs: undefined, puppetsUserId: undefined, refreshTokenId: undefined, used: false }],
    };
    const again = await runImport(deps, planMigration(withNewLogin, { serverName: SERVER, now: NOW, providers: [{ idpId: 'op', issuer: ISSUER }], isAppserviceLocalpart: (localpart) => localpart.startsWith('irc_') }), options(false));
    assert.equal(again.sessions.imported, 1, 'only the new login');
    assert.equal((await sessions.authenticate('syt_YWxpY2U_abcdefghijklmnopqrst_0AbCdE')).ok, false, 'the logged-out token stays dead');
    assert.equal((await sessions.authenticate('syt_YWxpY2U_a_newer_login_000000_c')).ok, true);
  });

  test('an imported session ends with its lifetime; its Synapse refresh token rotates into a proxy pair', async () => {
    const local = new FakeClock(NOW);
    const store = new MemoryStore({ clock: local });
    const log = captureLog();
    const sessions = new SessionStore(store, local, Buffer.alloc(32, 7), log.logger);
    await runImport({ sessions, bindings: new BindingStore(store, local, log.logger), clock: local }, plan(), options(false));

    const refreshed = await sessions.refresh('syr_Ym9i_new_refresh_token_0002_y', 300_000);
    assert.ok(refreshed.ok);
    assert.match(refreshed.accessToken, /^mcpa_/);
    assert.equal(refreshed.session.deviceId, 'BOB1');
    assert.equal((await sessions.authenticate(refreshed.accessToken)).ok, true);
    assert.equal((await sessions.authenticate('syt_Ym9i_new_access_token_0002_y')).ok, false, 'the Synapse access token is replaced');
    const retry = await sessions.refresh('syr_Ym9i_new_refresh_token_0002_y', 300_000);
    assert.ok(retry.ok && retry.accessToken === refreshed.accessToken, 'a retried refresh gets the same pair');

    local.advance(LIFETIME);
    assert.deepEqual(await sessions.authenticate('syt_YWxpY2U_abcdefghijklmnopqrst_0AbCdE'), { ok: false, reason: 'expired' });
    assert.deepEqual(await sessions.refresh(refreshed.refreshToken, 300_000), { ok: false, reason: 'unknown' });
  });
});

describe('migrate synapse: the user export', () => {
  const exported = (includePasswordHashes: boolean) =>
    selectUsersToExport(rows, { serverName: SERVER, linkedLocalparts: new Set(['carol']), isAppserviceLocalpart: (localpart) => localpart.startsWith('irc_'), includePasswordHashes });

  test('password users with display name, verified e-mails and admin flag; no hashes unless asked', () => {
    const { users, skipped } = exported(false);
    assert.deepEqual(users.map((user) => user.localpart).sort(), ['admin', 'alice', 'bob', 'dave', 'eve', 'frank', 'grace', 'heidi']);
    assert.deepEqual(skipped, { deactivated_user: 1, guest: 1, appservice_user: 2, sso_linked: 1 });
    const alice = users.find((user) => user.localpart === 'alice')!;
    assert.deepEqual(alice, { localpart: 'alice', displayName: 'Alice, "the first"', emails: ['alice@example.org', 'alice.work@example.org'], admin: false });
    assert.ok(!keycloakPartialImport(users).includes('$2b$'));
    assert.ok(!usersCsv(users, false).includes('$2b$'));
    const csv = usersCsv(users, false);
    assert.ok(csv.includes('alice,"Alice, ""the first""",alice@example.org,alice.work@example.org,false\r\n'), csv);
  });

  test('with --include-password-hashes: the bcrypt hash in CSV, and as a Keycloak bcrypt credential', () => {
    const { users } = exported(true);
    const realm = JSON.parse(keycloakPartialImport(users)) as { ifResourceExists: string; users: { username: string; credentials?: { type: string; secretData: string; credentialData: string }[] }[] };
    assert.equal(realm.ifResourceExists, 'SKIP');
    const alice = realm.users.find((user) => user.username === 'alice')!;
    const credential = alice.credentials![0]!;
    assert.equal(credential.type, 'password');
    assert.deepEqual(JSON.parse(credential.credentialData), { hashIterations: 12, algorithm: 'bcrypt', additionalParameters: {} });
    assert.match(JSON.parse(credential.secretData).value, /^\$2b\$12\$alice/);
    assert.equal(realm.users.find((user) => user.username === 'admin')!.credentials, undefined, 'no hash, no credential');
    assert.match(usersCsv(users, true), /^localpart,display_name,email,other_emails,admin,password_hash\r\n/);
  });
});

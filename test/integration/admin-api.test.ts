import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createApp } from '../../src/app.js';
import type { AppDeps } from '../../src/app-deps.js';
import { runAdminCli, type CliIo } from '../../src/admin/admin-cli.js';
import { parseToken } from '../../src/sessions/tokens.js';
import { ADMIN_TOKEN, IDP_ID, SERVER_NAME, startProxyHarness, type Harness } from '../support/proxy-harness.js';
import type { TestOpUser } from '../support/test-op.js';

/**
 * The admin API on the homeserver-facing listener (the harness runs without `homeserver.listen`, so the test serves
 * that face of the real app itself), and the CLI that wraps it.
 */

const PREFIX = '/_matrix-compat-proxy/admin/v1';
/** An OP user who has not logged in yet: the migration case. */
const ERIN: TestOpUser = { username: 'erin', password: 'erin-password-0123', sub: 'erin-op-subject', email: 'erin@example.test', name: 'Erin', groups: ['matrix-users'] };

/** Serves `createApp(...).homeserverFacing` for these dependencies on a loopback port. */
async function serveHomeserverFace(deps: AppDeps): Promise<{ url: string; close(): Promise<void> }> {
  const handlers = createApp(deps, { forward: (_req, res) => res.writeHead(502).end(), close: () => undefined }, { check: async () => ({ ok: true, checks: {} }) });
  const server: Server = createServer(handlers.homeserverFacing);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

async function call(base: string, method: string, path: string, options: { token?: string | null; body?: string; contentType?: string } = {}) {
  const headers: Record<string, string> = {};
  const token = options.token === undefined ? ADMIN_TOKEN : options.token;
  if (token !== null) headers['authorization'] = `Bearer ${token}`;
  if (options.contentType !== undefined) headers['content-type'] = options.contentType;
  const response = await fetch(`${base}${path}`, { method, headers, ...(options.body === undefined ? {} : { body: options.body }) });
  const text = await response.text();
  return { status: response.status, headers: response.headers, body: (text === '' ? undefined : JSON.parse(text)) as any };
}

async function login(h: Harness, username: 'alice' | 'bob', headers: Record<string, string> = {}, extra: Record<string, unknown> = {}) {
  const answer = await h.request('POST', '/_matrix/client/v3/login', {
    body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: username }, password: h.op.users[username].password, ...extra },
    headers,
  });
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  return { accessToken: answer.body.access_token as string, deviceId: answer.body.device_id as string, sessionId: parseToken(answer.body.access_token)?.sessionId ?? '' };
}

async function whoamiStatus(h: Harness, accessToken: string): Promise<number> {
  const response = await fetch(`${h.homeserver.url}/_matrix/client/v3/account/whoami`, { headers: { authorization: `Bearer ${accessToken}` } });
  await response.arrayBuffer();
  return response.status;
}

function captureIo(overrides: Partial<CliIo> = {}): CliIo & { out: string[]; err: string[] } {
  const out: string[] = [];
  const err: string[] = [];
  return {
    env: {},
    stdout: (text) => out.push(text),
    stderr: (text) => err.push(text),
    readInput: async () => {
      throw new Error('no input');
    },
    fetch: (input, init) => fetch(input, init),
    ...overrides,
    out,
    err,
  };
}

describe('admin API', () => {
  let h: Harness;
  let admin: { url: string; close(): Promise<void> };
  let issuer: string;

  before(async () => {
    h = await startProxyHarness({ op: { users: [ERIN] } });
    admin = await serveHomeserverFace(h.deps);
    issuer = h.op.issuer;
  });
  after(async () => {
    await admin.close();
    await h.stop();
  });

  test('authentication: missing, wrong, other scheme → 401; answers carry no-store', async () => {
    const path = `${PREFIX}/users/alice/sessions`;
    const missing = await call(admin.url, 'GET', path, { token: null });
    assert.equal(missing.status, 401);
    assert.equal(missing.body.errcode, 'M_MISSING_TOKEN');
    for (const token of ['wrong', `${ADMIN_TOKEN}x`, ADMIN_TOKEN.slice(0, -1), ADMIN_TOKEN.toUpperCase()]) {
      const wrong = await call(admin.url, 'GET', path, { token });
      assert.equal(wrong.status, 401, token);
      assert.equal(wrong.body.errcode, 'M_UNKNOWN_TOKEN');
    }
    const basic = await fetch(`${admin.url}${path}`, { headers: { authorization: `Basic ${Buffer.from(`admin:${ADMIN_TOKEN}`).toString('base64')}` } });
    assert.equal(basic.status, 401);
    const ok = await call(admin.url, 'GET', path);
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.get('cache-control'), 'no-store');
    // Writes are refused without the token too.
    assert.equal((await call(admin.url, 'DELETE', `${PREFIX}/users/alice/sessions`, { token: 'wrong' })).status, 401);
    assert.equal((await call(admin.url, 'POST', `${PREFIX}/bindings/import`, { token: null, body: '[]', contentType: 'application/json' })).status, 401);
  });

  test('the admin API is not on the public listener', async () => {
    const answer = await call(h.url, 'GET', `${PREFIX}/users/alice/sessions`);
    assert.equal(answer.status, 404);
  });

  test('list a user’s sessions, end one, end all', async () => {
    const phone = await login(h, 'alice', { 'user-agent': 'Element/1.11 (Android)' }, { initial_device_display_name: 'Phone' });
    const laptop = await login(h, 'alice', { 'user-agent': 'nheko/0.12' });

    const listed = await call(admin.url, 'GET', `${PREFIX}/users/alice/sessions`);
    assert.equal(listed.status, 200);
    assert.equal(listed.body.user_id, `@alice:${SERVER_NAME}`);
    const phoneEntry = listed.body.sessions.find((entry: any) => entry.session_id === phone.sessionId);
    assert.ok(phoneEntry, JSON.stringify(listed.body));
    assert.equal(phoneEntry.device_id, phone.deviceId);
    assert.equal(phoneEntry.device_display_name, 'Phone');
    assert.equal(phoneEntry.last_seen_user_agent, 'Element/1.11 (Android)');
    assert.equal(phoneEntry.last_seen_ip, '127.0.0.1');
    assert.equal(phoneEntry.provider, IDP_ID);
    assert.equal(phoneEntry.login_type, 'password');
    assert.equal(typeof phoneEntry.created_ts, 'number');
    assert.equal(typeof phoneEntry.last_seen_ts, 'number');
    assert.ok(listed.body.sessions.some((entry: any) => entry.session_id === laptop.sessionId));
    const sessionsOfAlice = listed.body.sessions.length;

    const ended = await call(admin.url, 'DELETE', `${PREFIX}/sessions/${phone.sessionId}`);
    assert.equal(ended.status, 200);
    assert.deepEqual(ended.body.ended, [phone.sessionId]);
    assert.equal(h.homeserver.devices('alice').has(phone.deviceId), false);
    assert.equal(await whoamiStatus(h, phone.accessToken), 401);
    assert.equal(await whoamiStatus(h, laptop.accessToken), 200);
    assert.equal((await call(admin.url, 'DELETE', `${PREFIX}/sessions/${phone.sessionId}`)).status, 404);

    const all = await call(admin.url, 'DELETE', `${PREFIX}/users/alice/sessions`);
    assert.equal(all.status, 200);
    assert.equal(all.body.ended.length, sessionsOfAlice - 1);
    assert.equal(await whoamiStatus(h, laptop.accessToken), 401);
    assert.deepEqual((await call(admin.url, 'GET', `${PREFIX}/users/alice/sessions`)).body.sessions, []);
  });

  test('show a binding by (issuer, sub) and by user; unknown → 404', async () => {
    await login(h, 'bob');
    const bySubject = await call(admin.url, 'GET', `${PREFIX}/bindings/${encodeURIComponent(issuer)}/${encodeURIComponent(h.op.users.bob.sub)}`);
    assert.equal(bySubject.status, 200, JSON.stringify(bySubject.body));
    assert.deepEqual(
      { issuer: bySubject.body.issuer, sub: bySubject.body.sub, localpart: bySubject.body.localpart, idp_id: bySubject.body.idp_id },
      { issuer, sub: h.op.users.bob.sub, localpart: 'bob', idp_id: IDP_ID },
    );
    const byUser = await call(admin.url, 'GET', `${PREFIX}/users/bob/binding`);
    assert.deepEqual(byUser.body, bySubject.body);
    assert.equal((await call(admin.url, 'GET', `${PREFIX}/bindings/${encodeURIComponent(issuer)}/nobody`)).status, 404);
    assert.equal((await call(admin.url, 'GET', `${PREFIX}/users/nobody/binding`)).status, 404);
  });

  test('deleting a binding ends the sessions made through it and voids its login tokens', async () => {
    const session = await login(h, 'bob');
    const binding = await h.deps.bindings.find(issuer, h.op.users.bob.sub);
    assert.ok(binding);
    const loginToken = await h.deps.loginTokens.mint(
      { localpart: 'bob', origin: { kind: 'sso', idpId: IDP_ID, issuer, sub: h.op.users.bob.sub, lastValidatedAt: Date.now() } },
      60_000,
    );

    const deleted = await call(admin.url, 'DELETE', `${PREFIX}/bindings/${encodeURIComponent(issuer)}/${encodeURIComponent(h.op.users.bob.sub)}`);
    assert.equal(deleted.status, 200, JSON.stringify(deleted.body));
    assert.equal(deleted.body.deleted.localpart, 'bob');
    assert.ok(deleted.body.ended.includes(session.sessionId));
    assert.equal(await whoamiStatus(h, session.accessToken), 401);
    assert.equal(await h.deps.bindings.find(issuer, h.op.users.bob.sub), undefined);
    assert.equal(await h.deps.bindings.findByLocalpart('bob'), undefined);

    const redeemed = await h.request('POST', '/_matrix/client/v3/login', { body: { type: 'm.login.token', token: loginToken } });
    assert.equal(redeemed.status, 403, 'no side path through a login token of a removed binding');
    assert.equal((await call(admin.url, 'DELETE', `${PREFIX}/bindings/${encodeURIComponent(issuer)}/${encodeURIComponent(h.op.users.bob.sub)}`)).status, 404);
    // Put it back for the other tests.
    await h.deps.bindings.claim({ issuer, sub: h.op.users.bob.sub, localpart: 'bob', idpId: IDP_ID });
  });

  test('a binding deleted while a login through it waits for the homeserver: the login is refused and leaves no session or device', async () => {
    await login(h, 'bob');
    for (const extra of [{}, { device_id: 'RACEDEVICE' }]) {
      const devicesBefore = [...h.homeserver.devices('bob').keys()];
      const held = h.homeserver.holdProvisioning('upsert_device');
      const pending = h.request('POST', '/_matrix/client/v3/login', {
        body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: 'bob' }, password: h.op.users.bob.password, ...extra },
      });
      // The OP has answered and the binding was resolved: the admin removes it now, and its sweep finds no new session.
      await held.reached;
      const deleted = await call(admin.url, 'DELETE', `${PREFIX}/bindings/${encodeURIComponent(issuer)}/${encodeURIComponent(h.op.users.bob.sub)}`);
      assert.equal(deleted.status, 200, JSON.stringify(deleted.body));
      held.release();
      const answer = await pending;
      assert.equal(answer.status, 403, JSON.stringify(answer.body));
      assert.equal(answer.body.errcode, 'M_FORBIDDEN');
      assert.match(answer.body.error, /account changed during sign-in/);
      assert.deepEqual(await h.deps.sessions.idsOfUser('bob'), []);
      // A device id the proxy made up goes with the session; one the client sent stays (see session-lifecycle.ts).
      assert.deepEqual([...h.homeserver.devices('bob').keys()].filter((id) => !devicesBefore.includes(id)), 'device_id' in extra ? [extra.device_id] : []);
      assert.equal(await h.deps.bindings.find(issuer, h.op.users.bob.sub), undefined);
      // Bound again (as the other tests expect), the next login stands.
      await h.deps.bindings.claim({ issuer, sub: h.op.users.bob.sub, localpart: 'bob', idpId: IDP_ID });
      await login(h, 'bob');
    }
  });

  test('import: dry run reports conflicts and writes nothing; the real run writes; a re-run changes nothing', async () => {
    const rows = [
      { issuer, sub: 'migrated-carol', localpart: 'carol' },
      { issuer, sub: 'migrated-dave', localpart: 'dave' },
      { issuer, sub: h.op.users.bob.sub, localpart: 'robert' }, // bob's subject is bound to bob
      { issuer, sub: 'someone-else', localpart: 'bob' }, // bob's localpart belongs to bob's subject
      { issuer, sub: 'twin-1', localpart: 'twin' }, // two subjects for one localpart in the file
      { issuer, sub: 'twin-2', localpart: 'twin' },
      { issuer, sub: 'migrated-erin', localpart: 'Not Valid' },
      { issuer: 'https://unknown.example/', sub: 'x', localpart: 'frank' },
      { issuer, sub: 'migrated-carol', localpart: 'carol' }, // the same row twice is fine
      { issuer, sub: '', localpart: 'gina' },
    ];
    const body = JSON.stringify(rows);
    const dryRun = await call(admin.url, 'POST', `${PREFIX}/bindings/import?dry_run=true`, { body, contentType: 'application/json' });
    assert.equal(dryRun.status, 200, JSON.stringify(dryRun.body));
    assert.equal(dryRun.body.dry_run, true);
    assert.equal(dryRun.body.total, rows.length);
    assert.equal(dryRun.body.created, 2);
    const reasons = Object.fromEntries(dryRun.body.conflicts.map((conflict: any) => [conflict.line, conflict.reason]));
    assert.deepEqual(reasons, {
      3: 'subject_bound_elsewhere',
      4: 'localpart_taken',
      5: 'duplicate_in_input',
      6: 'duplicate_in_input',
      7: 'invalid_localpart',
      8: 'unknown_issuer',
      10: 'invalid_row',
    });
    const takenConflict = dryRun.body.conflicts.find((conflict: any) => conflict.line === 4);
    assert.deepEqual(takenConflict.existing, { issuer, sub: h.op.users.bob.sub, localpart: 'bob' });
    assert.equal(await h.deps.bindings.findByLocalpart('carol'), undefined, 'a dry run writes nothing');

    const real = await call(admin.url, 'POST', `${PREFIX}/bindings/import`, { body, contentType: 'application/json' });
    assert.equal(real.body.dry_run, false);
    assert.equal(real.body.created, 2);
    assert.equal(real.body.conflicts.length, 7);
    assert.equal((await h.deps.bindings.find(issuer, 'migrated-carol'))?.localpart, 'carol');
    assert.equal((await h.deps.bindings.findByLocalpart('dave'))?.idpId, IDP_ID);
    assert.equal((await h.deps.bindings.findByLocalpart('bob'))?.sub, h.op.users.bob.sub, 'conflicting rows changed nothing');

    const again = await call(admin.url, 'POST', `${PREFIX}/bindings/import`, { body, contentType: 'application/json' });
    assert.equal(again.body.created, 0);
    assert.equal(again.body.unchanged, 2);
  });

  test('import from CSV: header, quoted fields, comments; malformed lines reported by line number', async () => {
    const csv = ['issuer,sub,localpart', `# migrated from LDAP`, `"${issuer}","uid=heidi,ou=people",heidi`, `${issuer},ivan-sub,ivan`, `${issuer},"broken,ivan`, `${issuer},only-two`, ''].join('\n');
    const answer = await call(admin.url, 'POST', `${PREFIX}/bindings/import`, { body: csv, contentType: 'text/csv' });
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    assert.equal(answer.body.created, 2);
    assert.deepEqual(
      answer.body.conflicts.map((conflict: any) => [conflict.line, conflict.reason]),
      [
        [5, 'invalid_row'],
        [6, 'invalid_row'],
      ],
    );
    assert.equal((await h.deps.bindings.find(issuer, 'uid=heidi,ou=people'))?.localpart, 'heidi');
    const malformedJson = await call(admin.url, 'POST', `${PREFIX}/bindings/import`, { body: '{"not":"an array"}', contentType: 'application/json' });
    assert.equal(malformedJson.status, 400);
  });

  test('an imported binding decides the Matrix user at the subject’s first login', async () => {
    const imported = await call(admin.url, 'POST', `${PREFIX}/bindings/import`, {
      body: JSON.stringify([{ issuer, sub: ERIN.sub, localpart: 'erin.legacy' }]),
      contentType: 'application/json',
    });
    assert.equal(imported.body.created, 1);
    const first = await h.passwordLogin(ERIN.username, ERIN.password);
    assert.equal(first.status, 200, JSON.stringify(first.body));
    assert.equal(first.body.user_id, `@erin.legacy:${SERVER_NAME}`, 'not @erin: the imported binding wins over the mapping template');
  });

  test('the CLI calls the same API', async () => {
    const env = { MCP_ADMIN_URL: admin.url, MCP_ADMIN_TOKEN: ADMIN_TOKEN };
    const session = await login(h, 'bob');

    const listing = captureIo({ env });
    assert.equal(await runAdminCli(['list-sessions', 'bob'], listing), 0, listing.err.join(''));
    assert.ok(JSON.parse(listing.out.join('')).sessions.some((entry: any) => entry.session_id === session.sessionId));

    const show = captureIo({ env });
    assert.equal(await runAdminCli(['show-binding', issuer, h.op.users.bob.sub], show), 0, show.err.join(''));
    assert.equal(JSON.parse(show.out.join('')).localpart, 'bob');
    const showByUser = captureIo({ env });
    assert.equal(await runAdminCli(['show-binding', '--localpart', 'bob'], showByUser), 0);

    const dir = await mkdtemp(join(tmpdir(), 'mcp-admin-'));
    try {
      const file = join(dir, 'bindings.csv');
      await writeFile(file, `${issuer},judy-sub,judy\n${issuer},${h.op.users.bob.sub},bobby\n`);
      const dryRun = captureIo({ env, readInput: async (path) => (await import('node:fs/promises')).readFile(path, 'utf8') });
      assert.equal(await runAdminCli(['import-bindings', file, '--dry-run'], dryRun), 1, 'conflicts → exit status 1');
      const report = JSON.parse(dryRun.out.join(''));
      assert.equal(report.dry_run, true);
      assert.equal(report.created, 1);
      assert.equal(report.conflicts[0].reason, 'subject_bound_elsewhere');
      assert.equal(await h.deps.bindings.findByLocalpart('judy'), undefined);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }

    const end = captureIo({ env });
    assert.equal(await runAdminCli(['end-session', session.sessionId], end), 0, end.err.join(''));
    assert.equal(await whoamiStatus(h, session.accessToken), 401);
    const endAgain = captureIo({ env });
    assert.equal(await runAdminCli(['end-session', session.sessionId], endAgain), 1);
    assert.match(endAgain.err.join(''), /HTTP 404/);

    const endAll = captureIo({ env });
    assert.equal(await runAdminCli(['end-user-sessions', 'bob'], endAll), 0);

    const wrongToken = captureIo({ env: { MCP_ADMIN_URL: admin.url } });
    assert.equal(await runAdminCli(['--token', 'wrong', 'list-sessions', 'bob'], wrongToken), 1);
    assert.match(wrongToken.err.join(''), /HTTP 401/);
    const noToken = captureIo({ env: { MCP_ADMIN_URL: admin.url } });
    assert.equal(await runAdminCli(['list-sessions', 'bob'], noToken), 2);
    const unknown = captureIo({ env });
    assert.equal(await runAdminCli(['frobnicate'], unknown), 2);
  });
});

describe('admin API without admin.token', () => {
  let h: Harness;
  let admin: { url: string; close(): Promise<void> };
  before(async () => {
    h = await startProxyHarness({ configure: (config) => delete config['admin'] });
    admin = await serveHomeserverFace(h.deps);
  });
  after(async () => {
    await admin.close();
    await h.stop();
  });

  test('every admin path is 404, with or without a token', async () => {
    for (const token of [ADMIN_TOKEN, null]) {
      assert.equal((await call(admin.url, 'GET', `${PREFIX}/users/alice/sessions`, { token })).status, 404);
      assert.equal((await call(admin.url, 'DELETE', `${PREFIX}/users/alice/sessions`, { token })).status, 404);
    }
  });
});

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect } from 'node:net';
import { startProxyHarness, SERVER_NAME, type Harness } from '../support/proxy-harness.js';
import type { TestOpUser } from '../support/test-op.js';
import { captureLog } from '../support/captured-log.js';

/** Issue 12: canonical account names, credentials decided locally, 0 × 5xx for what the client typed. */

const LOGIN = '/_matrix/client/v3/login';

const MALLORY: TestOpUser = {
  username: 'mallory',
  password: 'mallory-right-password',
  sub: '5f0e8a52-1b7c-4c1e-9a51-ma11ory00001',
  email: 'mallory@example.org',
  name: 'Mallory',
  groups: [],
};

type Body = Record<string, unknown>;
const asUser = (user: string, password: string): Body => ({ type: 'm.login.password', identifier: { type: 'm.id.user', user }, password });
const asEmail = (address: string, password: string): Body => ({ type: 'm.login.password', identifier: { type: 'm.id.thirdparty', medium: 'email', address }, password });

/** Fourteen ways to name mallory that an OP trimming names and taking e-mail logins reads as one account. */
function spellings(password: string): [string, Body][] {
  return [
    ['trailing space', asUser('mallory ', password)],
    ['leading tab', asUser('\tmallory', password)],
    ['upper case', asUser('MALLORY', password)],
    ['capitalised', asUser('Mallory', password)],
    ['full-width (NFKC)', asUser('ｍａｌｌｏｒｙ', password)],
    ['MXID', asUser(`@mallory:${SERVER_NAME}`, password)],
    ['MXID upper case', asUser(`@MALLORY:${SERVER_NAME.toUpperCase()}`, password)],
    ['MXID without server', asUser('@mallory', password)],
    ['legacy top-level user', { type: 'm.login.password', user: ' mallory', password }],
    ['e-mail', asEmail('mallory@example.org', password)],
    ['e-mail upper case, spaces', asEmail(' MALLORY@EXAMPLE.ORG ', password)],
    ['e-mail typed as m.id.user', asUser('mallory@example.org', password)],
    ['legacy medium/address', { type: 'm.login.password', medium: 'email', address: 'Mallory@Example.org', password }],
    ['as typed', asUser('mallory', password)],
  ];
}

describe('one account, one bucket (issue 12 #1)', () => {
  let h: Harness;
  before(async () => {
    h = await startProxyHarness({
      op: { users: [MALLORY] },
      configure: (config) => {
        config['rate_limits'] = { login_per_ip: { burst: 1000, per_second: 100 }, login_per_account: { burst: 1, per_second: 0.0001 } };
      },
    });
  });
  after(async () => {
    await h.stop();
  });

  test('the 14 identifier spellings of one account share one bucket: after the limit, none reaches the OP', async () => {
    // The first login by e-mail teaches the proxy which account the address belongs to (its own bucket: unknown yet).
    const first = await h.request('POST', LOGIN, { body: asEmail('mallory@example.org', MALLORY.password) });
    assert.equal(first.status, 200, JSON.stringify(first.body));
    assert.equal(first.body.user_id, `@mallory:${SERVER_NAME}`);

    const before = h.op.requestCount('/token', 'password');
    const statuses: Record<string, number> = {};
    for (const [name, body] of spellings('a-wrong-guess')) statuses[name] = (await h.request('POST', LOGIN, { body })).status;
    const opCalls = h.op.requestCount('/token', 'password') - before;
    assert.equal(opCalls, 1, `OP password grants for 14 spellings: ${opCalls} (${JSON.stringify(statuses)})`);
    // The first spelling's OP call takes the last token (a second call, to the OP user name the binding remembers,
    // would need one more): every other spelling is limited without reaching the OP.
    assert.ok(Object.values(statuses).filter((status) => status === 429).length >= 13, JSON.stringify(statuses));
    assert.ok(Object.values(statuses).every((status) => status === 403 || status === 429), JSON.stringify(statuses));

    // The right password under another spelling is limited too (it logged in before the fix).
    const spelled = await h.passwordLogin('mallory ', MALLORY.password);
    assert.equal(spelled.status, 429, JSON.stringify(spelled.body));
  });
});

describe('IPv6 clients are counted per /64 (issue 12 #1)', () => {
  let h: Harness;
  before(async () => {
    h = await startProxyHarness({
      configure: (config) => {
        config['trusted_proxies'] = ['127.0.0.1/32'];
        config['rate_limits'] = { login_per_ip: { burst: 3, per_second: 0.0001 }, login_per_account: { burst: 1000, per_second: 100 } };
      },
    });
  });
  after(async () => {
    await h.stop();
  });

  test('addresses of one /64 share a bucket; another /64 has its own; IPv4-mapped counts as IPv4', async () => {
    const from = (ip: string) => h.request('POST', LOGIN, { body: asUser('alice', 'wrong'), headers: { 'x-forwarded-for': ip } });
    const statuses = [];
    for (const suffix of ['1', '2', 'ffff:1:2', 'abcd:0:9']) statuses.push((await from(`2001:db8:0:1::${suffix}`)).status);
    assert.deepEqual(statuses, [403, 403, 403, 429], 'four addresses of 2001:db8:0:1::/64 with a burst of 3');
    assert.equal((await from('2001:db8:0:2::1')).status, 403, 'the neighbouring /64 has its own bucket');
    for (let i = 0; i < 3; i++) assert.equal((await from('198.51.100.7')).status, 403);
    assert.equal((await from('::ffff:198.51.100.7')).status, 429);
  });
});

describe('credentials decided locally: 0 × 5xx for malformed input (issue 12 #4)', () => {
  let h: Harness;
  before(async () => {
    h = await startProxyHarness({ op: { users: [MALLORY], maxUsernameLength: 64 } });
  });
  after(async () => {
    await h.stop();
  });

  test('empty, over-long and control-character names, passwords and e-mails: the same 403, the OP never asked', async () => {
    const long = 'x'.repeat(60_000);
    const cases: [string, Body][] = [
      ['empty user', asUser('', 'secret')],
      ['blank user', asUser('   ', 'secret')],
      ['60,000-character user', asUser(long, 'secret')],
      ['user with NUL', asUser('mal\u0000lory', 'secret')],
      ['user with newline', asUser('mal\nlory', 'secret')],
      ['empty password', asUser('mallory', '')],
      ['60,000-character password', asUser('mallory', long)],
      ['password with NUL', asUser('mallory', 'mallory\u0000right')],
      ['empty e-mail', asEmail('', 'secret')],
      ['60,000-character e-mail', asEmail(`${long}@example.org`, 'secret')],
      ['e-mail with control character', asEmail('mal\u0007lory@example.org', 'secret')],
      ['e-mail without @', asEmail('mallory', 'secret')],
      ['MXID with empty localpart', asUser(`@:${SERVER_NAME}`, 'secret')],
    ];
    const before = h.op.requestCount('/token');
    const reference = await h.passwordLogin('mallory', 'wrong-password');
    assert.equal(reference.status, 403);
    const statuses: Record<string, number> = {};
    const bodies: Record<string, unknown> = {};
    for (const [name, body] of cases) {
      const answer = await h.request('POST', LOGIN, { body });
      statuses[name] = answer.status;
      bodies[name] = answer.body;
    }
    assert.deepEqual(Object.entries(statuses).filter(([, status]) => status !== 403), [], 'every malformed credential is a 403');
    for (const [name] of cases) assert.deepEqual(bodies[name], reference.body, name);
    assert.equal(h.op.requestCount('/token') - before, 1, 'only the reference request reached the OP');
  });

  test("the OP's invalid_request to a password grant is a refusal (403), not an outage (503)", async () => {
    // 100 characters pass the proxy's own checks; this OP refuses names over 64 with invalid_request.
    const answer = await h.passwordLogin('m'.repeat(100), 'secret');
    assert.equal(answer.status, 403, JSON.stringify(answer.body));
    assert.deepEqual(answer.body, { errcode: 'M_FORBIDDEN', error: 'Invalid username/password' });
  });
});

/** OP users whose user names fold onto existing accounts (issue 12 #2). */
function opUser(username: string, preferredUsername: string, n: number): TestOpUser {
  return {
    username,
    password: `${username}-password`,
    sub: `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`,
    email: `${username}@op.example`,
    name: username,
    groups: [],
    extraClaims: { preferred_username: preferredUsername },
  };
}

const FOLDERS = [opUser('evil-alice', 'ALICE', 1), opUser('evil-bob', ' bob ', 2), opUser('evil-kelvin', '\u212Aelvin', 3), opUser('carol', 'carol', 4), opUser('dave', 'Dave', 5)];

async function foldingHarness(options: { allowExistingUsers: boolean; caseFolding?: boolean }): Promise<Harness> {
  const h = await startProxyHarness({
    op: { users: [...FOLDERS, opUser('frank', 'frank', 6), opUser('gina-op', 'gina-op', 7)] },
    configure: (config) => {
      config['oidc_providers'][0]['allow_existing_users'] = options.allowExistingUsers;
      if (options.caseFolding !== undefined) config['oidc_providers'][0]['localpart_case_folding'] = options.caseFolding;
    },
  });
  // Existing, never-bound homeserver accounts (a migration): the names the folders would take over.
  for (const localpart of ['alice', 'bob', 'kelvin', 'carol']) await h.deps.homeserver.provisionUser({ localpart });
  return h;
}

async function outcome(h: Harness, username: string): Promise<string> {
  const answer = await h.passwordLogin(username, `${username}-password`);
  return answer.status === 200 ? String(answer.body.user_id) : `${answer.status}`;
}

describe('localparts that only folding makes equal are never bound to existing accounts (issue 12 #2)', () => {
  test('allow_existing_users on (a migration), case folding off: ALICE, " bob ", KELVIN SIGN and Dave refused; exact carol bound', async () => {
    const h = await foldingHarness({ allowExistingUsers: true });
    try {
      const got = Object.fromEntries(await Promise.all(FOLDERS.map(async (user) => [user.username, await outcome(h, user.username)] as const)));
      assert.deepEqual(got, { 'evil-alice': '403', 'evil-bob': '403', 'evil-kelvin': '403', carol: `@carol:${SERVER_NAME}`, dave: '403' });
      for (const localpart of ['alice', 'bob', 'kelvin']) assert.equal(await h.deps.bindings.ownerOf(localpart), undefined, `${localpart} stays unbound`);
    } finally {
      await h.stop();
    }
  });

  test('allow_existing_users on, case folding on: Dave becomes @dave (new), ALICE still never takes @alice', async () => {
    const h = await foldingHarness({ allowExistingUsers: true, caseFolding: true });
    try {
      const got = Object.fromEntries(await Promise.all(FOLDERS.map(async (user) => [user.username, await outcome(h, user.username)] as const)));
      assert.deepEqual(got, { 'evil-alice': '403', 'evil-bob': '403', 'evil-kelvin': '403', carol: `@carol:${SERVER_NAME}`, dave: `@dave:${SERVER_NAME}` });
      assert.equal(await h.deps.bindings.ownerOf('alice'), undefined);
    } finally {
      await h.stop();
    }
  });

  test("allow_existing_users off: nobody binds an existing name; a squatter's OP user name is never used for what the user typed", async () => {
    const h = await foldingHarness({ allowExistingUsers: false });
    try {
      const got = Object.fromEntries(await Promise.all(FOLDERS.map(async (user) => [user.username, await outcome(h, user.username)] as const)));
      assert.deepEqual(got, { 'evil-alice': '403', 'evil-bob': '403', 'evil-kelvin': '403', carol: '403', dave: '403' });

      // Someone else's subject holds @frank and remembered its own OP user name: frank's login asks the OP about
      // "frank" (his own name) and is told the truth — the name is taken — not "Invalid username/password".
      const squatter = await h.deps.bindings.claim({ issuer: h.op.issuer, sub: 'squatter-sub', localpart: 'frank', idpId: 'testop', opUsername: 'evil-bob' });
      assert.ok(squatter.ok);
      const frank = await h.passwordLogin('frank', 'frank-password');
      assert.equal(frank.status, 403);
      assert.match(frank.body.error, /No Matrix user can be assigned/, JSON.stringify(frank.body));

      // The remembered name still serves its purpose for the account's own subject: @gina made from another claim.
      const gina = h.op.users['gina-op']!;
      assert.ok((await h.deps.bindings.claim({ issuer: h.op.issuer, sub: gina.sub, localpart: 'gina', idpId: 'testop', opUsername: 'gina-op' })).ok);
      const byLocalpart = await h.passwordLogin('gina', gina.password);
      assert.equal(byLocalpart.status, 200, JSON.stringify(byLocalpart.body));
      assert.equal(byLocalpart.body.user_id, `@gina:${SERVER_NAME}`);
    } finally {
      await h.stop();
    }
  });
});

describe('a homeserver refusal during provisioning is a 403 with the reason, the binding released (issue 12 #4)', () => {
  const LONG_NAME: TestOpUser = { ...opUser('longname', 'longname', 8), email: 'not-an-address' };
  let h: Harness;
  before(async () => {
    h = await startProxyHarness({ op: { users: [LONG_NAME] } });
  });
  after(async () => {
    await h.stop();
  });

  test('Synapse refuses the e-mail: 403 M_FORBIDDEN naming the reason on every attempt, no binding kept', async () => {
    for (let attempt = 1; attempt <= 2; attempt++) {
      const answer = await h.passwordLogin('longname', 'longname-password');
      assert.equal(answer.status, 403, `attempt ${attempt}: ${JSON.stringify(answer.body)}`);
      assert.equal(answer.body.errcode, 'M_FORBIDDEN');
      assert.match(answer.body.error, /^The homeserver refused this account: Unable to parse email address/);
      assert.equal(await h.deps.bindings.find(h.op.issuer, LONG_NAME.sub), undefined, 'binding released');
      assert.equal(await h.deps.bindings.ownerOf('longname'), undefined, 'localpart released');
    }
  });
});

describe('/logout does not wait for the OP (issue 12 #8)', () => {
  let h: Harness;
  before(async () => {
    h = await startProxyHarness();
  });
  after(async () => {
    h.op.setDown(false);
    await h.stop();
  });

  test('with the OP hanging, /logout answers at once; the revocation is sent afterwards', async () => {
    const login = await h.passwordLogin('alice', h.op.users.alice.password);
    assert.equal(login.status, 200);
    h.op.setDown('hang');
    const started = Date.now();
    const logout = await h.request('POST', '/_matrix/client/v3/logout', { token: login.body.access_token });
    const ms = Date.now() - started;
    assert.equal(logout.status, 200, JSON.stringify(logout.body));
    assert.ok(ms < 2000, `/logout took ${ms} ms with the OP hanging (its timeout is 10 s)`);
    // The revocation did go out (the OP received it and is sitting on it).
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.ok(h.op.requestCount('/token/revocation') >= 1);
    assert.equal((await h.request('GET', '/_matrix/client/v3/account/whoami', { token: login.body.access_token })).status, 401);
  });
});

describe('rejected requests are counted, and logged at a bounded rate (issue 12 #8)', () => {
  test('300 refused logins: 300 in mcp_rejected_requests_total, at most a few dozen request.rejected lines', async () => {
    const log = captureLog();
    const h = await startProxyHarness({ logger: log.logger });
    try {
      for (let i = 0; i < 300; i++) assert.equal((await h.request('POST', LOGIN, { body: { type: 'm.login.bogus' } })).status, 400);
      const lines = log.lines().filter((line) => line['msg'] === 'request.rejected');
      assert.ok(lines.length <= 40, `${lines.length} request.rejected lines for 300 refusals`);
      assert.ok(lines.length >= 1);
      const counted = (await h.deps.metrics.rejections.get()).values.find((v) => v.labels['code'] === 'M_UNKNOWN' && v.labels['status'] === '400');
      assert.equal(counted?.value, 300);
    } finally {
      await h.stop();
    }
  });
});

describe('pass-through bodies have an idle deadline; client connections are capped (issue 12 #8)', () => {
  let h: Harness;
  before(async () => {
    h = await startProxyHarness({
      configure: (config) => {
        config['passthrough_body_idle_timeout'] = '1s';
        config['max_client_connections'] = 4;
      },
    });
  });
  after(async () => {
    await h.stop();
  });

  test('a pass-through body that stops arriving gets 408 and a closed connection after the idle timeout', async () => {
    const url = new URL(h.url);
    const socket = connect(Number(url.port), url.hostname);
    await once(socket, 'connect');
    const started = Date.now();
    socket.write('PUT /_matrix/client/v3/rooms/!r:example.test/send/m.room.message/t1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"body":');
    let answer = '';
    socket.on('data', (chunk: Buffer) => (answer += chunk.toString('latin1')));
    await Promise.race([once(socket, 'close'), new Promise((resolve) => setTimeout(resolve, 8000))]);
    const ms = Date.now() - started;
    socket.destroy();
    assert.match(answer, /^HTTP\/1\.1 408 /, `after ${ms} ms: ${JSON.stringify(answer.slice(0, 80))}`);
    assert.ok(ms < 4000, `closed after ${ms} ms`);
  });

  test('connections beyond max_client_connections are closed at once', async () => {
    const url = new URL(h.url);
    const open = [];
    for (let i = 0; i < 4; i++) {
      const socket = connect(Number(url.port), url.hostname);
      await once(socket, 'connect');
      open.push(socket);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
    const extra = connect(Number(url.port), url.hostname);
    extra.on('error', () => undefined);
    const closed = await Promise.race([once(extra, 'close').then(() => true), new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 2000))]);
    extra.destroy();
    for (const socket of open) socket.destroy();
    assert.equal(closed, true, 'the fifth connection was closed by the proxy');
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal((await h.request('GET', LOGIN)).status, 200, 'served again once below the cap');
  });
});

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { decideSessionFormat, previewSessionFormat, sessionFormatKeys } from '../../src/sessions/session-format.js';
import { sessionKeys, SessionStore, type SessionWriteFormat } from '../../src/sessions/session-store.js';
import type { Session } from '../../src/sessions/session.js';
import { hashToken } from '../../src/sessions/tokens.js';
import { createStore } from '../../src/store/index.js';
import { MemoryStore } from '../../src/store/memory-store.js';
import type { Store } from '../../src/store/store.js';
import { captureLog, type CapturedLog } from '../support/captured-log.js';
import { FakeClock } from '../support/fake-clock.js';
import { startRedis, type RunningRedis } from '../support/redis-server.js';
import { importedAccessToken, runSessionScenario, scenarioDerivationKeyHex, scenarioStart, type ScenarioStep, type ScenarioTokens } from './fixtures/aaa9c33-session-scenario.js';
import { generated as aaa9c33 } from './fixtures/aaa9c33-sessions.js';

/*
 * Session formats (issue 19, `store.session_format`): release aaa9c33's records and index layout 1 stay readable in
 * both formats; the compatible format writes byte for byte what aaa9c33 writes (so its replicas, mid-upgrade or after a
 * rollback, keep every session); the compact format round-trips; a store holding both layouts finds, lists and ends
 * sessions of both; `auto` decides once per store and remembers it.
 */

let redis: RunningRedis;
before(async () => {
  redis = await startRedis();
});
after(async () => {
  await redis.stop();
});

interface Dump {
  readonly strings: Readonly<Record<string, string>>;
  readonly sets: Readonly<Record<string, readonly string[]>>;
}

interface Backend {
  readonly name: string;
  open(clock: FakeClock, t: { after: (fn: () => Promise<void>) => void }): Promise<{ store: Store; dump: () => Promise<Dump> }>;
}

const memory: Backend = {
  name: 'memory',
  async open(clock, t) {
    const store = new MemoryStore({ clock });
    t.after(() => store.close());
    const dump = async (): Promise<Dump> => {
      const strings: Record<string, string> = {};
      const sets: Record<string, string[]> = {};
      for (const key of [...store['entries'].keys()].sort()) {
        const value = store['entries'].get(key)?.value;
        if (value?.type === 'string') strings[key] = value.data;
        else if (value?.type === 'set') sets[key] = [...value.data].sort();
      }
      return { strings, sets };
    };
    return { store, dump };
  },
};

const onRedis: Backend = {
  name: 'redis',
  async open(_clock, t) {
    const prefix = `format-${randomBytes(4).toString('hex')}:`;
    const store = await createStore({ redis: { url: redis.url, keyPrefix: prefix } });
    const raw = new Redis(redis.url);
    t.after(async () => {
      raw.disconnect();
      await store.close();
    });
    const dump = async (): Promise<Dump> => {
      const strings: Record<string, string> = {};
      const sets: Record<string, string[]> = {};
      const keys = (await raw.keys(`${prefix}*`)).sort();
      for (const full of keys) {
        const key = full.slice(prefix.length);
        if ((await raw.type(full)) === 'set') sets[key] = (await raw.smembers(full)).sort();
        else strings[key] = (await raw.get(full)) ?? '';
      }
      return { strings, sets };
    };
    return { store, dump };
  },
};

const derivationKey = Buffer.from(scenarioDerivationKeyHex, 'hex');
const created = aaa9c33.steps.created;
const ids = aaa9c33.tokens.ids;
const tokens = aaa9c33.tokens.handedOut;
/** What aaa9c33 reads from a record: its JSON without `v`. */
const asReadBefore = (raw: string): Session => {
  const { v: _v, ...value } = JSON.parse(raw) as Record<string, unknown>;
  return value as unknown as Session;
};

async function seed(store: Store, dump: Dump): Promise<void> {
  for (const [key, value] of Object.entries(dump.strings)) await store.set(key, value);
  for (const [key, members] of Object.entries(dump.sets)) for (const member of members) await store.addToSet(key, member);
}

/** Replaces one run's ids and tokens (and their hashes) by the other run's, in keys and values. */
function mapped(dump: Dump, from: ScenarioTokens, to: ScenarioTokens): Dump {
  const pairs: [string, string][] = [];
  for (const name of ['phone', 'laptop', 'bridge', 'jack'] as const) pairs.push([from.ids[name], to.ids[name]]);
  from.handedOut.forEach((token, index) => {
    const other = to.handedOut[index] ?? '';
    pairs.push([hashToken(token), hashToken(other)], [token, other]);
  });
  const swap = (text: string) => pairs.reduce((acc, [a, b]) => acc.replaceAll(a, b), text);
  return {
    strings: Object.fromEntries(Object.entries(dump.strings).map(([key, value]) => [swap(key), swap(value)])),
    sets: Object.fromEntries(Object.entries(dump.sets).map(([key, members]) => [swap(key), members.map(swap).sort()])),
  };
}

const sorted = (dump: Dump): Dump => ({
  strings: Object.fromEntries(Object.entries(dump.strings).sort(([a], [b]) => a.localeCompare(b))),
  sets: Object.fromEntries(Object.entries(dump.sets).sort(([a], [b]) => a.localeCompare(b))),
});

const unreadable = (log: CapturedLog) => log.events('store.record_unreadable');

for (const backend of [memory, onRedis]) {
  describe(`session formats on ${backend.name}`, () => {
    for (const format of ['compatible', 'compact'] as const) {
      test(`${format}: what aaa9c33 stored is read, found by every index and authenticated as before`, async (t) => {
        const clock = new FakeClock(created.at);
        const { store } = await backend.open(clock, t);
        const log = captureLog();
        const sessions = new SessionStore(store, clock, derivationKey, log.logger, { writeFormat: format });
        await seed(store, created);
        for (const id of Object.values(ids)) assert.deepEqual(await sessions.get(id), asReadBefore(created.strings[`session:${id}`]), id);
        for (const [id, token] of [[ids.phone, tokens[0]], [ids.laptop, tokens[2]], [ids.bridge, tokens[3]], [ids.jack, tokens[4]], [ids.imported, importedAccessToken]] as const) {
          const result = await sessions.authenticate(token);
          assert.ok(result.ok, id);
          assert.equal(result.session.id, id);
        }
        const ivy = [ids.phone, ids.laptop, ids.imported].sort();
        assert.deepEqual((await sessions.idsOfUser('ivy')).sort(), ivy);
        assert.deepEqual((await sessions.idsOfSub('op', 'ivy-sub')).sort(), ivy);
        assert.deepEqual((await sessions.idsOfSid('op', 'op-sid-7')).sort(), [ids.phone, ids.laptop].sort());
        assert.equal(await sessions.idOfDevice('ivy', 'IVYTABLET'), ids.imported);
        assert.equal(await sessions.idOfDevice('bridge_kim', 'BRIDGE'), ids.bridge);
        const rotated = await sessions.refresh(tokens[1], 300_000);
        assert.ok(rotated.ok, 'the phone refreshes');
        assert.ok((await store.get(sessionKeys.session(ids.phone)))?.startsWith(format === 'compact' ? '{"v":4,' : '{"v":2,'));
        assert.deepEqual(await sessions.get(ids.phone), rotated.session);
        assert.deepEqual(unreadable(log), []);
      });
    }

    test('compatible: every write is byte for byte what aaa9c33 wrote (its replicas keep every session)', async (t) => {
      const clock = new FakeClock(scenarioStart);
      const { store, dump } = await backend.open(clock, t);
      const log = captureLog();
      const sessions = new SessionStore(store, clock, derivationKey, log.logger, { writeFormat: 'compatible' });
      const dumps: Partial<Record<ScenarioStep, Dump>> = {};
      const ours = await runSessionScenario(sessions as never, clock, async (step) => {
        dumps[step] = await dump();
        assert.equal(clock.now(), aaa9c33.steps[step].at);
      });
      assert.equal(ours.ids.imported, ids.imported, 'an imported session has the same id on every run');
      for (const [step, expected] of Object.entries(aaa9c33.steps)) {
        const { at: _at, ...keys } = expected;
        assert.deepEqual(sorted(mapped(dumps[step as ScenarioStep]!, ours, aaa9c33.tokens)), sorted(keys as Dump), step);
      }
      assert.deepEqual(unreadable(log), []);
    });

    test('compact: the same scenario round-trips, in fewer bytes and without layout-1 keys', async (t) => {
      const clock = new FakeClock(scenarioStart);
      const { store, dump } = await backend.open(clock, t);
      const log = captureLog();
      const sessions = new SessionStore(store, clock, derivationKey, log.logger, { writeFormat: 'compact' });
      const checks: Promise<void>[] = [];
      const ours = await runSessionScenario(sessions as never, clock, async (step) => {
        const now = await dump();
        const theirs = aaa9c33.steps[step];
        for (const key of Object.keys(now.sets)) assert.fail(`${step}: a set was written (${key})`);
        for (const key of Object.keys(now.strings)) assert.ok(/^(session|su|sb|sd|imported-access|imported-refresh):/.test(key), `${step}: ${key}`);
        const bytes = (d: Dump) => Object.entries(d.strings).reduce((sum, [k, v]) => sum + k.length + Buffer.byteLength(v), 0);
        assert.ok(bytes(now) < bytes(theirs as Dump), `${step}: ${bytes(now)} < ${bytes(theirs as Dump)}`);
        checks.push(
          (async () => {
            // Every session this step holds reads back as the one aaa9c33 held at the same step (ids and tokens mapped).
            const sessionKeysNow = Object.keys(now.strings).filter((key) => key.startsWith('session:'));
            assert.equal(sessionKeysNow.length, Object.keys(theirs.strings).filter((key) => key.startsWith('session:')).length, step);
            for (const key of sessionKeysNow) assert.ok(now.strings[key]?.startsWith('{"v":4,'), `${step}: ${key}`);
          })(),
        );
      });
      await Promise.all(checks);
      // The final state, session by session, mapped onto aaa9c33's ids and hashes.
      const last = aaa9c33.steps.imported_removed;
      const mine = mapped(await dump(), ours, aaa9c33.tokens);
      for (const id of [ids.phone, ids.bridge, ids.jack]) {
        const raw = mine.strings[`session:${id}`];
        assert.ok(raw !== undefined, id);
        const view = new MemoryStore();
        await view.set(`session:${id}`, raw);
        assert.deepEqual(await new SessionStore(view, clock, derivationKey, log.logger).get(id), asReadBefore(last.strings[`session:${id}`]), id);
        await view.close();
      }
      assert.equal(mine.strings[`su:ivy`], ids.phone, 'the user index holds the phone alone');
      assert.deepEqual(unreadable(log), []);
    });

    test('a user with sessions of both layouts: listed, found by subject and OP session, ended together', async (t) => {
      const clock = new FakeClock(created.at);
      const { store } = await backend.open(clock, t);
      const log = captureLog();
      const compact = new SessionStore(store, clock, derivationKey, log.logger, { writeFormat: 'compact' });
      const compatible = new SessionStore(store, clock, derivationKey, log.logger, { writeFormat: 'compatible' });
      await seed(store, created);
      clock.advance(1_000);
      const origin = { kind: 'sso', idpId: 'op', issuer: 'https://op.example.org/realms/main', sub: 'ivy-sub', sid: 'op-sid-7', lastValidatedAt: clock.now() } as const;
      const desk = await compact.create({ localpart: 'ivy', deviceId: 'IVYDESK', origin });
      const all = [ids.phone, ids.laptop, ids.imported, desk.session.id].sort();
      for (const sessions of [compact, compatible]) {
        assert.deepEqual((await sessions.idsOfUser('ivy')).sort(), all);
        assert.deepEqual((await sessions.idsOfSub('op', 'ivy-sub')).sort(), all);
        assert.deepEqual((await sessions.idsOfSid('op', 'op-sid-7')).sort(), [ids.phone, ids.laptop, desk.session.id].sort());
        assert.equal(await sessions.idOfDevice('ivy', 'IVYDESK'), desk.session.id);
        assert.equal(await sessions.idOfDevice('ivy', 'IVYPHONE'), ids.phone);
        assert.equal(await sessions.idOfDevice('ivy', 'IVYTABLET'), ids.imported);
        assert.equal(await sessions.idOfDevice('ivy', 'NOSUCH'), undefined);
      }
      // A login on the imported tablet's device, in the compact layout: it owns the device from then on.
      const tablet = await compact.create({ localpart: 'ivy', deviceId: 'IVYTABLET', origin });
      assert.equal(await compact.idOfDevice('ivy', 'IVYTABLET'), tablet.session.id, 'a login before an imported session');
      await compact.remove(tablet.session.id);

      // Ending everything (what /logout/all and the admin's end-sessions do): both layouts' keys are gone.
      for (const id of await compatible.idsOfUser('ivy')) assert.ok(await compatible.remove(id), id);
      assert.deepEqual(await compact.idsOfUser('ivy'), []);
      assert.deepEqual(await compact.idsOfSub('op', 'ivy-sub'), []);
      assert.deepEqual(await compact.idsOfSid('op', 'op-sid-7'), []);
      for (const key of ['user-sessions:ivy', 'sub-sessions:op:ivy-sub', 'sid-sessions:op:op-sid-7']) assert.deepEqual(await store.setMembers(key), [], key);
      for (const device of ['IVYPHONE', 'IVYLAPTOP', 'IVYTABLET']) assert.equal(await store.get(sessionKeys.byDevice('ivy', device)), undefined, device);
      assert.equal(await store.get(sessionKeys.userList('ivy')), '', 'emptied, left to expire');
      // The import marker stays (a later import run must still skip the token), and now names a session that is gone.
      assert.equal(await store.get(sessionKeys.importedAccess(hashToken(importedAccessToken))), ids.imported);
      assert.deepEqual(await compact.authenticate(importedAccessToken), { ok: false, reason: 'unknown' });
      // An add after the removal revives the emptied index for good.
      const again = await compact.create({ localpart: 'ivy', deviceId: 'IVYDESK', origin });
      assert.deepEqual(await compact.idsOfUser('ivy'), [again.session.id]);
      assert.deepEqual(unreadable(log), []);
    });

    test('compact: concurrent logins of one user all land in the index (compare-and-set)', async (t) => {
      const clock = new FakeClock(scenarioStart);
      const { store } = await backend.open(clock, t);
      const sessions = new SessionStore(store, clock, derivationKey, captureLog().logger, { writeFormat: 'compact' });
      const origin = { kind: 'password', idpId: 'op', issuer: 'https://op', sub: 'many', lastValidatedAt: 0 } as const;
      const issued = await Promise.all(Array.from({ length: 20 }, (_, i) => sessions.create({ localpart: 'many', deviceId: `D${i}`, origin })));
      assert.deepEqual((await sessions.idsOfUser('many')).sort(), issued.map((s) => s.session.id).sort());
      await Promise.all(issued.slice(0, 15).map((s) => sessions.remove(s.session.id)));
      assert.deepEqual((await sessions.idsOfSub('op', 'many')).sort(), issued.slice(15).map((s) => s.session.id).sort());
    });

    test('auto: compact on an empty store, compatible on one with sessions or bindings, remembered across restarts', async (t) => {
      const clock = new FakeClock(scenarioStart);
      const log = captureLog();
      const fresh = await backend.open(clock, t);
      const seeded = await backend.open(clock, t);
      await seed(seeded.store, created);
      if (backend.name === 'memory') {
        assert.deepEqual(await decideSessionFormat('auto', seeded.store, clock, log.logger), { format: 'compact', reason: 'memory_store' }, 'the memory store is always fresh');
        return;
      }
      assert.deepEqual(await previewSessionFormat('auto', fresh.store, log.logger), { format: 'compact', reason: 'fresh_store' });
      assert.equal(await fresh.store.get(sessionFormatKeys.decision), undefined, 'a preview writes nothing');
      // Replicas starting together agree.
      const [first, second] = await Promise.all([decideSessionFormat('auto', fresh.store, clock, log.logger), decideSessionFormat('auto', fresh.store, clock, log.logger)]);
      assert.equal(first.format, 'compact');
      assert.equal(second.format, 'compact');
      // A restart with sessions in the store keeps the decision.
      await new SessionStore(fresh.store, clock, derivationKey, log.logger, { writeFormat: 'compact' }).create({ localpart: 'a', deviceId: 'A', origin: { kind: 'appservice', appserviceId: 'x' } });
      assert.deepEqual(await decideSessionFormat('auto', fresh.store, clock, log.logger), { format: 'compact', reason: 'remembered' });

      assert.deepEqual(await decideSessionFormat('auto', seeded.store, clock, log.logger), { format: 'compatible', reason: 'earlier_sessions' });
      // An earlier release's deployment may have no live session at upgrade time, but its bindings stay: not fresh.
      const idle = await backend.open(clock, t);
      await idle.store.set('binding:https%3A%2F%2Fop.example:alice-sub', '{"localpart":"alice"}');
      assert.deepEqual(await previewSessionFormat('auto', idle.store, log.logger), { format: 'compatible', reason: 'earlier_sessions' });
      await seeded.store.delete(...Object.keys(created.strings));
      assert.deepEqual(await decideSessionFormat('auto', seeded.store, clock, log.logger), { format: 'compatible', reason: 'remembered' }, 'does not flip once the sessions are gone');
      // An explicit setting wins, and records nothing.
      assert.deepEqual(await decideSessionFormat('compact', seeded.store, clock, log.logger), { format: 'compact', reason: 'configured' });
      assert.equal(JSON.parse((await seeded.store.get(sessionFormatKeys.decision)) ?? '{}').format, 'compatible');
      assert.deepEqual(unreadable(log), []);
    });
  });
}

describe('session formats: a Redis user without SCAN', () => {
  test('auto cannot tell a fresh store: compatible, the safe answer, remembered', async (t) => {
    const admin = new Redis(redis.url);
    const user = `noscan-${randomBytes(4).toString('hex')}`;
    const prefix = `${user}:`;
    await admin.call('ACL', 'SETUSER', user, 'on', '>secret-pw', `~${prefix}*`, '+@all', '-scan');
    t.after(async () => {
      await admin.call('ACL', 'DELUSER', user);
      admin.disconnect();
    });
    const url = new URL(redis.url);
    url.username = user;
    url.password = 'secret-pw';
    const store = await createStore({ redis: { url: url.toString(), keyPrefix: prefix } });
    t.after(() => store.close());
    const log = captureLog();
    assert.deepEqual(await decideSessionFormat('auto', store, new FakeClock(), log.logger), { format: 'compatible', reason: 'scan_refused' });
    assert.deepEqual(await decideSessionFormat('auto', store, new FakeClock(), log.logger), { format: 'compatible', reason: 'remembered' });
  });
});

describe('session formats: the choice each start makes', () => {
  test('the formats a SessionStore can be given', () => {
    const formats: SessionWriteFormat[] = ['compact', 'compatible'];
    for (const writeFormat of formats) assert.equal(new SessionStore(new MemoryStore(), new FakeClock(), derivationKey, captureLog().logger, { writeFormat }).writeFormat, writeFormat);
    assert.equal(new SessionStore(new MemoryStore(), new FakeClock(), derivationKey, captureLog().logger).writeFormat, 'compatible', 'without a decision: what every replica reads');
  });
});

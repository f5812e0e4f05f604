import assert from 'node:assert/strict';
import { test } from 'node:test';
import { appPasswordKeys, appPasswordRecord, AppPasswords, cleanAppPasswordName, isAppPasswordFormat } from '../../src/sessions/app-passwords.js';
import { MemoryStore } from '../../src/store/memory-store.js';
import { captureLog } from '../support/captured-log.js';
import { FakeClock } from '../support/fake-clock.js';

const input = { localpart: 'alice', name: 'Bot', idpId: 'op', issuer: 'https://op.test/', sub: 'sub-1', sealedOpRefreshToken: 'v1.sealed' };

test('created, verified by its secret only, listed, revoked only by its owner; the limit holds', async () => {
  const clock = new FakeClock(1_700_000_000_000);
  const store = new MemoryStore({ clock });
  const log = captureLog();
  const appPasswords = new AppPasswords(store, clock, log.logger);
  const created = await appPasswords.create(input, 2);
  assert.ok(created.ok);
  assert.ok(isAppPasswordFormat(created.secret));
  assert.equal(isAppPasswordFormat('correct horse battery staple'), false);
  const raw = await store.get(appPasswordKeys.record(created.appPassword.id));
  assert.ok(raw !== undefined && !raw.includes(created.secret.split('_')[2] ?? '-'));
  assert.equal(JSON.parse(raw).v, 1);

  assert.equal((await appPasswords.verify(created.secret))?.id, created.appPassword.id);
  const flipped = created.secret.slice(0, -1) + (created.secret.endsWith('A') ? 'B' : 'A');
  assert.equal(await appPasswords.verify(flipped), undefined);
  assert.equal(await appPasswords.verify('mcpp_short'), undefined);

  assert.ok((await appPasswords.create({ ...input, name: 'Phone' }, 2)).ok);
  assert.deepEqual(await appPasswords.create({ ...input, name: 'Third' }, 2), { ok: false, reason: 'too_many' });
  assert.deepEqual((await appPasswords.list('alice')).map((p) => p.name).sort(), ['Bot', 'Phone']);

  assert.equal(await appPasswords.revoke('bob', created.appPassword.id), undefined, "not bob's");
  assert.equal((await appPasswords.revoke('alice', created.appPassword.id))?.id, created.appPassword.id);
  assert.equal(await appPasswords.verify(created.secret), undefined);
  assert.deepEqual((await appPasswords.list('alice')).map((p) => p.name), ['Phone']);
  assert.equal(log.events('store.record_unreadable').length, 0);
});

test('a record that does not decode is a miss plus a warning', async () => {
  const clock = new FakeClock(1_700_000_000_000);
  const store = new MemoryStore({ clock });
  const log = captureLog();
  const appPasswords = new AppPasswords(store, clock, log.logger);
  await store.set(appPasswordKeys.record('AAAAAAAAAAAAAAAA'), JSON.stringify({ v: 1, id: 'AAAAAAAAAAAAAAAA' }));
  assert.equal(await appPasswords.verify('mcpp_AAAAAAAAAAAAAAAA_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB'), undefined);
  assert.equal(log.events('store.record_unreadable').length, 1);
  assert.equal(appPasswordRecord.decode(JSON.stringify({ v: 2, ...input })), undefined);
});

test('names: trimmed, control characters dropped, 1..64 characters', () => {
  assert.equal(cleanAppPasswordName('  Bot \u0007'), 'Bot');
  assert.equal(cleanAppPasswordName(''), undefined);
  assert.equal(cleanAppPasswordName(null), undefined);
  assert.equal(cleanAppPasswordName('x'.repeat(65)), undefined);
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AccountSessions } from '../../src/sessions/account-sessions.js';
import { opLogoutCheck } from '../../src/sessions/op-logouts.js';
import { MemoryStore } from '../../src/store/memory-store.js';
import { captureLog } from '../support/captured-log.js';
import { FakeClock } from '../support/fake-clock.js';

const origin = { idpId: 'op', sub: 'sub-1', sid: 'sid-1' };
const input = { localpart: 'alice', idpId: origin.idpId, issuer: 'https://op.test/', sub: origin.sub, sid: origin.sid, authTime: 0 };
const seal = (secret: string) => `sealed:${secret}`;

/** The marker a back-channel logout of that OP session leaves (op-logouts.ts applyOpLogout), at `at`. */
async function logoutMarker(store: MemoryStore, at: number): Promise<void> {
  const sidKey = opLogoutCheck(origin, 0).keys[1];
  assert.ok(sidKey !== undefined);
  await store.set(sidKey, String(at), { ttlMs: 3_600_000 });
}

test('a page session ends on a back-channel logout at or after its sign-in, even one stamped before the record was written', async () => {
  const clock = new FakeClock(1_700_000_000_000);
  const store = new MemoryStore({ clock });
  const sessions = new AccountSessions(store, clock, captureLog().logger);
  const signedInAt = clock.now();
  clock.advance(500); // the code exchange, the account's resolution and provisioning
  const { id } = await sessions.create({ ...input, signedInAt }, 60_000, seal);
  assert.ok((await sessions.get(id)) !== undefined);
  // A logout received while the sign-in was resolved, whose marker landed after the sign-in's own check.
  await logoutMarker(store, signedInAt + 200);
  assert.equal(await sessions.get(id), undefined);
});

test('a logout before the sign-in leaves the page session alone; a record without signedInAt falls back to createdAt', async () => {
  const clock = new FakeClock(1_700_000_000_000);
  const store = new MemoryStore({ clock });
  const sessions = new AccountSessions(store, clock, captureLog().logger);
  await logoutMarker(store, clock.now() - 1);
  const signedInAt = clock.now();
  clock.advance(500);
  const current = await sessions.create({ ...input, signedInAt }, 60_000, seal);
  assert.ok((await sessions.get(current.id)) !== undefined);
  // An older release's record: no signedInAt, so a logout stamped before its creation does not end it.
  await logoutMarker(store, clock.now() - 100);
  const older = await sessions.create(input, 60_000, seal);
  assert.ok((await sessions.get(older.id)) !== undefined);
  clock.advance(10);
  await logoutMarker(store, clock.now());
  assert.equal(await sessions.get(older.id), undefined);
});

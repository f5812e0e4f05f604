import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { bindingKeys, bindingRecord, BindingStore, localpartOwnerRecord } from '../../src/identity/bindings.js';
import { loginGrantRecord, loginTokenKeys, LoginTokenStore, type LoginGrant } from '../../src/sessions/login-tokens.js';
import { pendingConfirmationRecord, pendingSsoLoginRecord, ssoLoginKeys, SsoLoginState, type PendingConfirmation } from '../../src/sessions/pending-sso-logins.js';
import { sessionKeys, sessionRecord, sessionRecordAt, SessionStore } from '../../src/sessions/session-store.js';
import { hashToken, mintToken, parseToken } from '../../src/sessions/tokens.js';
import { createStore } from '../../src/store/index.js';
import { MemoryStore } from '../../src/store/memory-store.js';
import type { RecordFormat } from '../../src/store/record-format.js';
import type { Store } from '../../src/store/store.js';
import { captureLog, type CapturedLog } from '../support/captured-log.js';
import { FakeClock } from '../support/fake-clock.js';
import { startRedis, type RunningRedis } from '../support/redis-server.js';
import * as d73999c from './fixtures/d73999c-records.js';

/*
 * Stored records as a format (issue 11, STYLE.md habit 15), on every store backend: what the release before
 * versioned records wrote is read unchanged (a rolling upgrade logs nobody out), new records carry `v: 1` and read
 * back the same, and a record that does not decode is a miss plus one warning — never a throw, never rewritten.
 */

let redis: RunningRedis;
before(async () => {
  redis = await startRedis();
});
after(async () => {
  await redis.stop();
});

const backends: { name: string; make: (clock: FakeClock) => Promise<Store> }[] = [
  { name: 'memory', make: async (clock) => new MemoryStore({ clock }) },
  { name: 'redis', make: async () => createStore({ redis: { url: redis.url, keyPrefix: `test-${randomBytes(4).toString('hex')}:` } }) },
];

const derivationKey = Buffer.from(d73999c.tokenDerivationKeyHex, 'hex');
const legacySessions = [d73999c.sessionMidRotation, d73999c.sessionRotated, d73999c.sessionSoftLoggedOut, d73999c.sessionNoRefresh, d73999c.sessionAppservice];

interface Modules {
  readonly store: Store;
  readonly clock: FakeClock;
  readonly log: CapturedLog;
  readonly sessions: SessionStore;
  readonly loginTokens: LoginTokenStore;
  readonly sso: SsoLoginState;
  readonly bindings: BindingStore;
}

const unreadable = (log: CapturedLog) => log.events('store.record_unreadable');

/** `JSON.parse(raw)`: exactly the value the release before versioned records read from `raw`. */
const asReadBefore = (raw: string): unknown => JSON.parse(raw);

const sessionIdOf = (key: string) => key.slice('session:'.length);

for (const backend of backends) {
  describe(`stored records on ${backend.name}`, () => {
    const open = async (t: { after: (fn: () => Promise<void>) => void }): Promise<Modules> => {
      const clock = new FakeClock(d73999c.writtenAt);
      const store = await backend.make(clock);
      t.after(() => store.close());
      const log = captureLog();
      return {
        store,
        clock,
        log,
        sessions: new SessionStore(store, clock, derivationKey, log.logger),
        loginTokens: new LoginTokenStore(store, log.logger),
        sso: new SsoLoginState(store, clock, log.logger),
        bindings: new BindingStore(store, clock, log.logger),
      };
    };

    test('every record the current release writes (no version) reads as that release read it', async (t) => {
      const { store, log, sessions, loginTokens, sso, bindings } = await open(t);
      for (const fixture of legacySessions) {
        await store.set(fixture.key, fixture.raw);
        assert.deepEqual(await sessions.get(sessionIdOf(fixture.key)), asReadBefore(fixture.raw), fixture.key);
        const authenticated = await sessions.authenticate(fixture.accessToken);
        assert.ok(authenticated.ok, `${fixture.key}: its access token still works`);
        assert.deepEqual(authenticated.session, asReadBefore(fixture.raw));
      }

      for (const fixture of [d73999c.loginGrantFull, d73999c.loginGrantMinimal]) {
        await store.set(fixture.key, fixture.raw, { ttlMs: 120_000 });
        assert.equal(loginTokenKeys.grant(hashToken(fixture.token)), fixture.key);
        assert.deepEqual(await loginTokens.redeem(fixture.token), asReadBefore(fixture.raw));
      }

      await store.set(d73999c.pendingSsoLogin.key, d73999c.pendingSsoLogin.raw, { ttlMs: 1_200_000 });
      assert.deepEqual(await sso.takePending(d73999c.pendingSsoLogin.state), asReadBefore(d73999c.pendingSsoLogin.raw));
      for (const fixture of [d73999c.confirmationFull, d73999c.confirmationMinimal]) {
        await store.set(fixture.key, fixture.raw, { ttlMs: 600_000 });
        assert.deepEqual(await sso.peekConfirmation(fixture.id), asReadBefore(fixture.raw));
        assert.deepEqual(await sso.takeConfirmation(fixture.id), asReadBefore(fixture.raw));
      }

      for (const fixture of [d73999c.bindingMinimal, d73999c.bindingWithOpUsername]) {
        await store.set(fixture.key, fixture.raw);
        assert.deepEqual(await bindings.find('https://op.example.org/realms/main', 'f3b1c2d4-sub'), asReadBefore(fixture.raw));
      }
      await store.set(d73999c.localpartOwner.key, d73999c.localpartOwner.raw);
      assert.deepEqual(await bindings.ownerOf('alice'), asReadBefore(d73999c.localpartOwner.raw));
      assert.deepEqual(await bindings.findByLocalpart('alice'), asReadBefore(d73999c.bindingWithOpUsername.raw));

      assert.deepEqual(unreadable(log), []);
    });

    test('a client that logged in before the upgrade refreshes after it; the first write makes the record version 1', async (t) => {
      const { store, sessions, clock } = await open(t);
      const fixture = d73999c.sessionMidRotation;
      await store.set(fixture.key, fixture.raw);

      // The response to its last refresh was lost: presenting the previous refresh token again gives the same pair.
      const retried = await sessions.refresh(fixture.previousRefreshToken, 300_000);
      assert.ok(retried.ok);
      assert.equal(retried.accessToken, fixture.accessToken);
      assert.equal(retried.refreshToken, fixture.refreshToken);
      assert.equal(await store.get(fixture.key), fixture.raw, 'an idempotent retry writes nothing');

      const used = await sessions.authenticate(fixture.accessToken);
      assert.ok(used.ok);
      await sessions.touch(used.session);
      const migrated = await store.get(fixture.key);
      assert.ok(migrated?.startsWith('{"v":2,'), migrated);
      assert.deepEqual(await sessions.refresh(fixture.previousRefreshToken, 300_000), { ok: false, reason: 'reused', sessionId: sessionIdOf(fixture.key) });

      clock.advance(60_000);
      const rotated = await sessions.refresh(fixture.refreshToken, 300_000);
      assert.ok(rotated.ok);
      assert.equal(rotated.session.refresh?.generation, 3);
      assert.equal((await sessions.authenticate(rotated.accessToken)).ok, true);

      const forever = d73999c.sessionNoRefresh;
      await store.set(forever.key, forever.raw);
      clock.advance(365 * 24 * 3600_000);
      assert.equal((await sessions.authenticate(forever.accessToken)).ok, true, 'a token without expiry stays valid');
    });

    test('bindings the current release wrote keep their subject and localpart', async (t) => {
      const { store, bindings, log } = await open(t);
      await store.set(d73999c.bindingMinimal.key, d73999c.bindingMinimal.raw);
      await store.set(d73999c.localpartOwner.key, d73999c.localpartOwner.raw);
      const issuer = 'https://op.example.org/realms/main';

      const taken = await bindings.claim({ issuer, sub: 'someone-else', localpart: 'alice', idpId: 'op' });
      assert.deepEqual(taken, { ok: false, reason: 'localpart_taken', owner: { issuer, sub: 'f3b1c2d4-sub' } });
      const again = await bindings.claim({ issuer, sub: 'f3b1c2d4-sub', localpart: 'alice', idpId: 'op' });
      assert.deepEqual(again, { ok: true, binding: asReadBefore(d73999c.bindingMinimal.raw) });

      const binding = await bindings.find(issuer, 'f3b1c2d4-sub');
      assert.ok(binding !== undefined);
      await bindings.rememberOpUsername(binding, 'alice@example.org');
      const rewritten = await store.get(d73999c.bindingMinimal.key);
      assert.deepEqual(JSON.parse(rewritten!), { v: 1, ...(asReadBefore(d73999c.bindingWithOpUsername.raw) as object) });

      assert.deepEqual(await bindings.remove(issuer, 'f3b1c2d4-sub'), asReadBefore(d73999c.bindingWithOpUsername.raw));
      assert.equal(await store.get(d73999c.localpartOwner.key), undefined, 'the localpart is free again');
      assert.deepEqual(unreadable(log), []);
    });

    test('new records carry their version (2 for sessions and pending SSO logins, else 1), read back the same, and hold every field the current release reads', async (t) => {
      const { store, sessions, loginTokens, sso, bindings, log } = await open(t);
      // What d73999c does with a record (`JSON.parse(raw) as T`): it sees the same fields, and an unknown `v`.
      const withoutVersion = (raw: string | undefined, version = 1) => {
        assert.ok(raw !== undefined);
        const { v, ...fields } = JSON.parse(raw) as Record<string, unknown>;
        assert.equal(v, version);
        return fields;
      };

      const origin = { kind: 'sso', idpId: 'op', issuer: 'https://op', sub: 'sub-1', sid: 'sid-1', sealedOpRefreshToken: 'v1.sealed', lastValidatedAt: 5 } as const;
      const issued = await sessions.create({ localpart: 'alice', deviceId: 'DEV', deviceDisplayName: 'Phone', origin, ip: '192.0.2.1', userAgent: 'ua', refreshableLifetimeMs: 300_000 });
      const sessionKey = sessionKeys.session(issued.session.id);
      assert.deepEqual(withoutVersion(await store.get(sessionKey), 2), issued.session);
      assert.deepEqual(await sessions.get(issued.session.id), issued.session);
      const rotated = await sessions.refresh(issued.refreshToken!, 300_000);
      assert.ok(rotated.ok);
      assert.deepEqual(withoutVersion(await store.get(sessionKey), 2), rotated.session);
      assert.deepEqual(await sessions.get(issued.session.id), rotated.session);
      const soft = await sessions.update(issued.session.id, (s) => ({ ...s, softLoggedOut: { at: 9, reason: 'backchannel_logout' } }));
      assert.deepEqual(await sessions.get(issued.session.id), soft);
      const appservice = await sessions.create({ localpart: 'bot', deviceId: 'B', origin: { kind: 'appservice', appserviceId: 'as' } });
      assert.deepEqual(await sessions.get(appservice.session.id), appservice.session);

      const grant: LoginGrant = { localpart: 'alice', displayName: 'Alice', origin: { ...origin, kind: 'token' } };
      const loginToken = await loginTokens.mint(grant, 60_000);
      assert.deepEqual(withoutVersion(await store.get(loginTokenKeys.grant(hashToken(loginToken)))), grant);
      assert.deepEqual(await loginTokens.redeem(loginToken), grant);

      const begun = await sso.begin({ idpId: 'op', redirectUrl: 'https://client/', browserHash: 'bh', lifetimeMs: 600_000 });
      const pendingRaw = withoutVersion(await store.get(ssoLoginKeys.pending(begun.state)), 2);
      assert.deepEqual(await sso.takePending(begun.state), pendingRaw);
      assert.equal(pendingRaw.codeVerifier, begun.codeVerifier);
      // Version 2 added the purpose of a re-authentication (an older release reads such a record as unknown).
      const purpose = { kind: 'uia', uiaSessionId: 'u'.repeat(32), requestedAt: 11 } as const;
      const reauth = await sso.begin({ idpId: 'op', redirectUrl: 'https://proxy/fallback', browserHash: 'bh', lifetimeMs: 600_000, purpose });
      assert.deepEqual(withoutVersion(await store.get(ssoLoginKeys.pending(reauth.state)), 2).purpose, purpose);
      assert.deepEqual((await sso.takePending(reauth.state))?.purpose, purpose);
      const confirmation: PendingConfirmation = { idpId: 'op', issuer: 'https://op', sub: 'sub-1', localpart: 'alice', redirectUrl: 'https://client/', browserHash: 'bh', validatedAt: 7 };
      const confirmationId = await sso.saveConfirmation(confirmation, 60_000);
      assert.deepEqual(withoutVersion(await store.get(ssoLoginKeys.confirmation(confirmationId))), confirmation);
      assert.deepEqual(await sso.peekConfirmation(confirmationId), confirmation);
      assert.deepEqual(await sso.takeConfirmation(confirmationId), confirmation);

      const claimed = await bindings.claim({ issuer: 'https://op', sub: 'sub-1', localpart: 'alice', idpId: 'op' });
      assert.ok(claimed.ok);
      assert.deepEqual(withoutVersion(await store.get(bindingKeys.binding('https://op', 'sub-1'))), claimed.binding);
      assert.deepEqual(withoutVersion(await store.get(bindingKeys.owner('alice'))), { issuer: 'https://op', sub: 'sub-1' });
      assert.deepEqual(await bindings.find('https://op', 'sub-1'), claimed.binding);
      assert.deepEqual(await bindings.ownerOf('alice'), { issuer: 'https://op', sub: 'sub-1' });

      assert.deepEqual(unreadable(log), []);
    });

    test('a session record that does not decode is a miss plus one warning, and is never rewritten', async (t) => {
      const { store, sessions, log } = await open(t);
      const valid = JSON.parse(d73999c.sessionNoRefresh.raw) as Record<string, unknown>;
      const refreshable = JSON.parse(d73999c.sessionRotated.raw) as Record<string, unknown>;
      const id = sessionIdOf(d73999c.sessionNoRefresh.key);
      const cases: { raw: string; reason: string }[] = [
        { raw: 'not json {', reason: 'not_json' },
        { raw: '"a string"', reason: 'not_an_object' },
        { raw: '[1,2]', reason: 'not_an_object' },
        { raw: 'null', reason: 'not_an_object' },
        { raw: '{}', reason: 'wrong_shape' },
        { raw: JSON.stringify({ ...valid, origin: { kind: 'ldap', idpId: 'op', issuer: 'x', sub: 's', lastValidatedAt: 1 } }), reason: 'wrong_shape' },
        { raw: JSON.stringify({ ...valid, origin: { kind: 'appservice' } }), reason: 'wrong_shape' },
        { raw: JSON.stringify({ ...valid, createdAt: '1795435382000' }), reason: 'wrong_shape' },
        { raw: JSON.stringify({ ...valid, accessTokenHash: null }), reason: 'wrong_shape' },
        { raw: JSON.stringify({ ...refreshable, refresh: { ...(refreshable.refresh as object), generation: '4' } }), reason: 'wrong_shape' },
        { raw: JSON.stringify({ ...refreshable, refresh: { ...(refreshable.refresh as object), retiredHashes: [1] } }), reason: 'wrong_shape' },
        { raw: JSON.stringify({ ...valid, softLoggedOut: { at: 1, reason: 'admin' } }), reason: 'wrong_shape' },
        // Written by a newer release and read during a rollback: not this release's to interpret, nor to overwrite.
        { raw: JSON.stringify({ v: sessionRecordAt(id).version + 1, ...valid }), reason: 'unknown_version' },
        // The compact version with a field of the wrong type.
        { raw: JSON.stringify({ v: 4, l: 'carol', d: 'CAROL', p: 'op', is: 'x', u: 's', lv: 0, c: 1, s: '0', h: 'hash' }), reason: 'wrong_shape' },
        { raw: JSON.stringify({ v: 4, l: 'carol', d: 'CAROL', k: 'z', c: 1, s: 0, h: 'hash' }), reason: 'wrong_shape' },
        { raw: JSON.stringify({ v: 2, ...valid, homeserverToken: 42 }), reason: 'wrong_shape' },
        { raw: JSON.stringify({ v: '1', ...valid }), reason: 'unknown_version' },
      ];
      const key = sessionKeys.session(id);
      for (const { raw, reason } of cases) {
        await store.set(key, raw);
        const before = unreadable(log).length;
        assert.equal(await sessions.get(id), undefined, raw);
        const warnings = unreadable(log).slice(before);
        assert.equal(warnings.length, 1, `one warning for ${raw}`);
        assert.equal(warnings[0]?.level, 40, 'a warning');
        assert.deepEqual(
          { record: warnings[0]?.record, key: warnings[0]?.key, reason: warnings[0]?.reason },
          { record: 'session', key, reason },
          raw,
        );

        assert.deepEqual(await sessions.authenticate(d73999c.sessionNoRefresh.accessToken), { ok: false, reason: 'unknown' });
        assert.equal(await sessions.sessionOfToken(d73999c.sessionNoRefresh.accessToken), undefined);
        assert.deepEqual(await sessions.refresh(mintToken('refresh', id), 300_000), { ok: false, reason: 'unknown' });
        assert.equal(await sessions.update(id, (s) => ({ ...s, lastSeenAt: 0 })), undefined);
        assert.equal(await store.get(key), raw, 'left exactly as it was');
      }
    });

    test('other records that do not decode are a miss plus one warning each', async (t) => {
      const { store, loginTokens, sso, bindings, log } = await open(t);
      const future = (raw: string) => JSON.stringify({ v: 2, ...(JSON.parse(raw) as object) });
      const expectMiss = async (record: string, key: string, reason: string, read: () => Promise<unknown>) => {
        const before = unreadable(log).length;
        assert.equal(await read(), undefined, `${record} ${reason}`);
        const warnings = unreadable(log).slice(before);
        assert.deepEqual(
          warnings.map((line) => ({ record: line.record, key: line.key, reason: line.reason })),
          [{ record, key, reason }],
        );
      };

      const token = 'A'.repeat(32);
      const grantKey = loginTokenKeys.grant(hashToken(token));
      await store.set(grantKey, '{"localpart":"alice","origin":{"kind":"appservice","appserviceId":"as"}}', { ttlMs: 60_000 });
      await expectMiss('login_grant', grantKey, 'wrong_shape', () => loginTokens.redeem(token));
      await store.set(grantKey, future(d73999c.loginGrantFull.raw), { ttlMs: 60_000 });
      await expectMiss('login_grant', grantKey, 'unknown_version', () => loginTokens.redeem(token));

      const state = 'B'.repeat(32);
      await store.set(ssoLoginKeys.pending(state), JSON.stringify({ ...(JSON.parse(d73999c.pendingSsoLogin.raw) as object), expiresAt: 'soon' }), { ttlMs: 60_000 });
      await expectMiss('sso_pending', ssoLoginKeys.pending(state), 'wrong_shape', () => sso.takePending(state));

      const confirmationId = 'C'.repeat(32);
      const confirmationKey = ssoLoginKeys.confirmation(confirmationId);
      await store.set(confirmationKey, '{"idpId":"op"', { ttlMs: 60_000 });
      await expectMiss('sso_confirmation', confirmationKey, 'not_json', () => sso.peekConfirmation(confirmationId));
      await expectMiss('sso_confirmation', confirmationKey, 'not_json', () => sso.takeConfirmation(confirmationId));

      const issuer = 'https://op.example.org/realms/main';
      const binding = await bindings.claim({ issuer, sub: 'f3b1c2d4-sub', localpart: 'alice', idpId: 'op' });
      assert.ok(binding.ok);
      const bindingKey = bindingKeys.binding(issuer, 'f3b1c2d4-sub');
      const garbage = future(d73999c.bindingMinimal.raw);
      await store.set(bindingKey, garbage);
      await expectMiss('binding', bindingKey, 'unknown_version', () => bindings.find(issuer, 'f3b1c2d4-sub'));
      await bindings.rememberOpUsername(binding.binding, 'alice@example.org');
      assert.equal(await store.get(bindingKey), garbage, 'a binding of a newer release is not overwritten');

      const ownerKey = bindingKeys.owner('alice');
      await store.set(ownerKey, '{"issuer":"https://op.example.org/realms/main"}');
      await expectMiss('localpart_owner', ownerKey, 'wrong_shape', () => bindings.ownerOf('alice'));
      // The localpart still counts as taken: an unreadable owner never lets a second subject bind it.
      const before = unreadable(log).length;
      const claim = await bindings.claim({ issuer, sub: 'intruder', localpart: 'alice', idpId: 'op' });
      assert.equal(claim.ok, false);
      assert.equal(unreadable(log).length, before + 1);
      assert.equal(await store.get(bindingKeys.binding(issuer, 'intruder')), undefined);
    });
  });
}

describe('record formats (no store)', () => {
  const legacy: [RecordFormat<object>, string][] = [
    ...legacySessions.map((fixture) => [sessionRecord, fixture.raw] as [RecordFormat<object>, string]),
    [loginGrantRecord, d73999c.loginGrantFull.raw],
    [loginGrantRecord, d73999c.loginGrantMinimal.raw],
    [pendingSsoLoginRecord, d73999c.pendingSsoLogin.raw],
    [pendingConfirmationRecord, d73999c.confirmationFull.raw],
    [pendingConfirmationRecord, d73999c.confirmationMinimal.raw],
    [bindingRecord, d73999c.bindingMinimal.raw],
    [bindingRecord, d73999c.bindingWithOpUsername.raw],
    [localpartOwnerRecord, d73999c.localpartOwner.raw],
  ];

  test('each version-0 record decodes, and re-encodes in the current version with the same fields', () => {
    for (const [format, raw] of legacy) {
      const value = format.decode(raw);
      assert.deepEqual(value, JSON.parse(raw), `${format.name}: ${raw}`);
      const encoded = format.encode(value!);
      // Sessions: version 3 is written only for imported sessions (issue 14); every other one as version 2.
      const written = format === (sessionRecord as RecordFormat<object>) ? 2 : format.version;
      assert.deepEqual(JSON.parse(encoded), { v: written, ...(JSON.parse(raw) as object) });
      assert.deepEqual(format.decode(encoded), value);
    }
  });

  test('sessions: version 1 (ff2e64a, before token-issuing backends) reads as it was and rewrites as version 2', () => {
    for (const fixture of legacySessions) {
      const v1 = JSON.stringify({ v: 1, ...(JSON.parse(fixture.raw) as object) });
      const value = sessionRecord.decode(v1);
      assert.deepEqual(value, JSON.parse(fixture.raw));
      assert.deepEqual(JSON.parse(sessionRecord.encode(value!)), { v: 2, ...(JSON.parse(fixture.raw) as object) });
    }
    // Version 2 adds the sealed homeserver token of appservice and JWT sessions.
    const withToken = { ...(JSON.parse(d73999c.sessionNoRefresh.raw) as object), homeserverToken: 'v1.c2VhbGVkLWhvbWVzZXJ2ZXItdG9rZW4' };
    assert.deepEqual(sessionRecord.decode(JSON.stringify({ v: 2, ...withToken })), withToken);
  });

  test('the fixtures are what the current code would mint for these tokens', () => {
    for (const fixture of legacySessions) {
      const parsed = parseToken(fixture.accessToken);
      assert.equal(parsed?.sessionId, sessionIdOf(fixture.key));
      assert.equal(hashToken(fixture.accessToken), (JSON.parse(fixture.raw) as { accessTokenHash: string }).accessTokenHash);
    }
  });

  test('imported sessions (issue 14) are version 3; every other session is still written as version 2', () => {
    const normal = JSON.parse(d73999c.sessionNoRefresh.raw) as Record<string, unknown>;
    const imported = { ...normal, origin: { kind: 'imported', importedAt: 1, endsAt: 2, idpId: 'op', issuer: 'https://op.example.org', sub: 's' } };
    const encoded = sessionRecord.encode(imported as never);
    assert.ok(encoded.startsWith('{"v":3,'));
    assert.deepEqual(sessionRecord.decode(encoded), imported);
    assert.ok(sessionRecord.encode(normal as never).startsWith('{"v":2,'), 'a rollback to the release before still reads normal sessions');
    // An imported origin is not valid in an older version (no release before imports wrote one).
    assert.equal(sessionRecord.decode(JSON.stringify({ v: 2, ...imported })), undefined);
    assert.equal(sessionRecord.decode(JSON.stringify({ v: 1, ...imported })), undefined);
    assert.equal(sessionRecord.decode(JSON.stringify({ v: 3, ...imported, origin: { kind: 'imported', importedAt: 1 } })), undefined);
  });
});

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { MatrixError } from '../../src/errors/matrix-error.js';
import { createTokenSwap } from '../../src/proxy/token-swap.js';
import { deriveSessionKeys } from '../../src/sessions/secret-box.js';
import { SessionStore } from '../../src/sessions/session-store.js';
import { secretDigest } from '../../src/security/shared-secret.js';
import { MemoryStore } from '../../src/store/memory-store.js';
import { FakeClock } from '../support/fake-clock.js';

// The swap of issue 16 on real SessionStores over one real store: two SessionStores are two replicas.
const keys = deriveSessionKeys('an-encryption-key-for-tests-only-0123456789abcdef');
const AS_TOKEN = 'the-proxys-own-as-token-0123456789abcdef';
const silent = { warn: () => {} };

function setup() {
  const clock = new FakeClock(1_800_000_000_000);
  const store = new MemoryStore({ clock });
  const replicaA = new SessionStore(store, clock, keys.tokenDerivationKey, silent);
  const replicaB = new SessionStore(store, clock, keys.tokenDerivationKey, silent);
  const swapOn = (sessions: SessionStore) => createTokenSwap({ sessions, keys, clock, cacheTtlMs: 2_000, ownAsTokenDigest: secretDigest(AS_TOKEN) });
  return { clock, store, replicaA, replicaB, swapA: swapOn(replicaA), swapB: swapOn(replicaB) };
}

const request = (url: string, authorization?: string) => ({ url, headers: authorization === undefined ? {} : { authorization } }) as unknown as IncomingMessage;

async function outcome(result: MatrixError | undefined | Promise<MatrixError | undefined>): Promise<MatrixError | undefined> {
  return result instanceof Promise ? await result : result;
}

async function login(sessions: SessionStore, homeserverToken: string, refreshable = false) {
  return sessions.create({
    localpart: 'alice',
    deviceId: 'DEV',
    origin: { kind: 'password', idpId: 'op', issuer: 'https://op', sub: 's', lastValidatedAt: 1 },
    sealedHomeserverToken: keys.seal(homeserverToken),
    ...(refreshable ? { refreshableLifetimeMs: 60_000 } : {}),
  });
}

describe('token swap (appservice and JWT modes)', () => {
  test('header and query parameter carry the homeserver token; other parameters keep their bytes', async () => {
    const { replicaA, swapA } = setup();
    const { accessToken } = await login(replicaA, 'syt_alice_token');
    const byHeader = request('/_matrix/client/v3/account/whoami', `Bearer ${accessToken}`);
    assert.equal(await outcome(swapA(byHeader)), undefined);
    assert.equal(byHeader.headers.authorization, 'Bearer syt_alice_token');
    const byQuery = request(`/_matrix/client/v3/sync?filter=%7B%22a%22%3A1%7D&access_token=${accessToken}&since=s1_2`);
    assert.equal(await outcome(swapA(byQuery)), undefined);
    assert.equal(byQuery.url, '/_matrix/client/v3/sync?filter=%7B%22a%22%3A1%7D&access_token=syt_alice_token&since=s1_2');
  });

  test("tokens that are not the proxy's pass untouched; the proxy's own as_token is refused", async () => {
    const { swapA } = setup();
    const bridge = request('/_matrix/client/v3/account/whoami?user_id=%40bridge_1%3Ax', 'Bearer bridge-as-token');
    assert.equal(await outcome(swapA(bridge)), undefined);
    assert.equal(bridge.headers.authorization, 'Bearer bridge-as-token');
    for (const req of [request('/x', `Bearer ${AS_TOKEN}`), request(`/x?access_token=${AS_TOKEN}`)]) {
      const refused = await outcome(swapA(req));
      assert.equal(refused?.status, 403);
    }
  });

  test('unknown, expired and soft-logged-out proxy tokens are answered by the proxy (nothing to swap)', async () => {
    const { clock, replicaA, swapA } = setup();
    const { accessToken, session } = await login(replicaA, 'syt_x', true);
    const unknown = await outcome(swapA(request('/x', `Bearer ${accessToken.slice(0, -8)}AAAAAAAA`)));
    assert.equal(unknown?.errcode, 'M_UNKNOWN_TOKEN');
    clock.advance(61_000);
    const expired = await outcome(swapA(request('/x', `Bearer ${accessToken}`)));
    assert.deepEqual(expired?.toBody(), { errcode: 'M_UNKNOWN_TOKEN', error: 'Invalid access token', soft_logout: true });
    const other = await login(replicaA, 'syt_y');
    await replicaA.update(other.session.id, (s) => ({ ...s, softLoggedOut: { at: clock.now(), reason: 'backchannel_logout' } }));
    assert.equal((await outcome(swapA(request('/x', `Bearer ${other.accessToken}`))))?.toBody()['soft_logout'], true);
    assert.ok(session);
  });

  test('a hit reads no store; a change on this replica is seen at once, on another within the TTL', async () => {
    const { clock, store, replicaA, swapA, swapB } = setup();
    const { accessToken, session } = await login(replicaA, 'syt_cached');
    assert.equal(await outcome(swapA(request('/x', `Bearer ${accessToken}`))), undefined);
    assert.equal(await outcome(swapB(request('/x', `Bearer ${accessToken}`))), undefined);
    // A hit is synchronous: no promise, so no store round trip.
    assert.equal(swapA(request('/x', `Bearer ${accessToken}`)), undefined);

    // Soft logout (the homeserver token stays valid, so only the proxy can refuse) written through replica A.
    await replicaA.update(session.id, (s) => ({ ...s, softLoggedOut: { at: clock.now(), reason: 'backchannel_logout' } }));
    assert.equal((await outcome(swapA(request('/x', `Bearer ${accessToken}`))))?.status, 401, 'replica A at once');
    const stale = request('/x', `Bearer ${accessToken}`);
    assert.equal(swapB(stale), undefined, 'replica B still serves its entry within the TTL');
    clock.advance(2_001);
    assert.equal((await outcome(swapB(request('/x', `Bearer ${accessToken}`))))?.status, 401, 'replica B after the TTL');
    assert.ok(store);
  });
});

test('a homeserver token sealed before a key rotation is sealed again with the current key at its first swap', async () => {
  const clock = new FakeClock(1_800_000_000_000);
  const store = new MemoryStore({ clock });
  const oldKeys = keys;
  const rotatedKeys = deriveSessionKeys('the-next-encryption-key-0123456789abcdef', ['an-encryption-key-for-tests-only-0123456789abcdef']);
  const before = new SessionStore(store, clock, oldKeys.tokenDerivationKeys, silent);
  const issued = await login(before, 'syt_homeserver_token');
  const after = new SessionStore(store, clock, rotatedKeys.tokenDerivationKeys, silent);
  const swap = createTokenSwap({ sessions: after, keys: rotatedKeys, clock, cacheTtlMs: 2_000, ownAsTokenDigest: secretDigest(AS_TOKEN) });
  const req = request('/_matrix/client/v3/sync', `Bearer ${issued.accessToken}`);
  assert.equal(await outcome(swap(req)), undefined);
  assert.equal(req.headers.authorization, 'Bearer syt_homeserver_token');
  const sealed = (await after.get(issued.session.id))?.homeserverToken ?? '';
  assert.equal(rotatedKeys.sealedWithCurrentKey(sealed), true, 're-sealed with the current key');
  assert.equal(deriveSessionKeys('the-next-encryption-key-0123456789abcdef').open(sealed), 'syt_homeserver_token', 'the new key alone opens it now');
});

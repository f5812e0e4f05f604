import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { buildDeps } from '../../src/build-deps.js';
import type { Config } from '../../src/config/schema.js';
import { introspect } from '../../src/homeserver/introspection.js';
import { acceptedInteractionCsrfTokens, interactionCsrfToken } from '../../src/oauth/interaction.js';
import { createLogger } from '../../src/observability/logger.js';
import { createMetrics } from '../../src/observability/metrics.js';
import { deriveSessionKeys, SealingKeyUnknown } from '../../src/sessions/secret-box.js';
import { opOriginOf } from '../../src/sessions/session.js';
import { parseToken } from '../../src/sessions/tokens.js';
import { FakeClock } from '../support/fake-clock.js';
import { HOMESERVER_SECRET, startProxyHarness, type Harness } from '../support/proxy-harness.js';

/**
 * Rotating `sessions.encryption_key` without logging anyone out (docs/production.md, "Rotating secrets"): a replica
 * configured with the new key and the old one under `previous_encryption_keys` keeps every session made with the old
 * key — re-validation at the real OP (oidc-provider, which here keeps its refresh tokens, so the proxy's stored one is
 * re-sealed rather than replaced), and a refresh retried across the change — while a replica without the old key
 * fails closed without losing anything.
 */

const INTERVAL_MS = 5 * 60_000;
const NEW_KEY = 'the-new-encryption-key-after-a-rotation-0123456789';

function rotated(config: Config, previous: readonly string[]): Config {
  return { ...config, sessions: { ...config.sessions, encryption_key: NEW_KEY, previous_encryption_keys: previous.map((key) => ({ key })) } };
}

describe('sessions.encryption_key rotation (memory store, real OP)', () => {
  const clock = new FakeClock(Date.now());
  let h: Harness;
  before(async () => {
    h = await startProxyHarness({ clock, op: { rotateRefreshTokens: false } });
  });
  after(() => h.stop());

  async function login(refreshable = false) {
    const answer = await h.passwordLogin('alice', h.op.users.alice.password, { refresh_token: refreshable });
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    return { ...answer.body, sessionId: parseToken(answer.body.access_token)?.sessionId ?? '' } as { access_token: string; refresh_token?: string; sessionId: string };
  }

  async function sealedOf(sessionId: string): Promise<string> {
    const session = await h.deps.sessions.get(sessionId);
    const sealed = session === undefined ? undefined : opOriginOf(session)?.sealedOpRefreshToken;
    assert.ok(sealed !== undefined, 'the session keeps a sealed OP refresh token');
    return sealed;
  }

  test('a replica with the new key and the old one listed re-validates an old session and re-seals it with the new key', async () => {
    const metrics = createMetrics({ collectDefaults: false });
    const replica = await buildDeps(rotated(h.config, [h.config.sessions.encryption_key]), h.store, createLogger('silent'), metrics, { clock });
    const alice = await login();
    const sealedBefore = await sealedOf(alice.sessionId);
    const oldKeyOnly = deriveSessionKeys(h.config.sessions.encryption_key);
    const newKeyOnly = deriveSessionKeys(NEW_KEY);
    const opRefreshToken = oldKeyOnly.open(sealedBefore);

    clock.advance(INTERVAL_MS);
    const grantsBefore = h.op.requestCount('/token', 'refresh_token');
    const answer = await introspect(replica, alice.access_token, { hint: undefined, deviceIdSupported: true });
    assert.equal(answer['active'], true, JSON.stringify(answer));
    assert.equal(h.op.requestCount('/token', 'refresh_token'), grantsBefore + 1, 'checked at the OP with the token sealed under the old key');

    const sealedAfter = await sealedOf(alice.sessionId);
    assert.notEqual(sealedAfter, sealedBefore, 're-sealed');
    assert.equal(newKeyOnly.open(sealedAfter), opRefreshToken, 'the same OP token, now under the new key');
    assert.throws(() => oldKeyOnly.open(sealedAfter), SealingKeyUnknown, 'the old key alone no longer opens it');
    assert.equal((await metrics.sealedOpenedWithPreviousKey.get()).values[0]?.value, 1);

    // Next check: opened with the current key, nothing counted.
    clock.advance(INTERVAL_MS);
    assert.equal((await introspect(replica, alice.access_token, { hint: undefined, deviceIdSupported: true }))['active'], true);
    assert.equal((await metrics.sealedOpenedWithPreviousKey.get()).values[0]?.value, 1);
  });

  test('an OP that does not repeat the refresh token (RFC 6749 §6: optional): the kept token is re-sealed, once', async () => {
    // The real OP's answers, without the refresh_token member some OPs leave out when they keep the token.
    const providers = new Map([...h.deps.providers].map(([idpId, provider]) => [
      idpId,
      Object.assign(Object.create(provider) as typeof provider, {
        refreshGrant: async (token: string) => {
          const { refreshToken: _omitted, ...grant } = await provider.refreshGrant(token);
          return grant;
        },
      }),
    ]));
    const replica = await buildDeps(rotated(h.config, [h.config.sessions.encryption_key]), h.store, createLogger('silent'), createMetrics({ collectDefaults: false }), { clock, providers });
    const alice = await login();
    const sealedBefore = await sealedOf(alice.sessionId);
    clock.advance(INTERVAL_MS);
    assert.equal((await introspect(replica, alice.access_token, { hint: undefined, deviceIdSupported: true }))['active'], true);
    const sealedAfter = await sealedOf(alice.sessionId);
    assert.notEqual(sealedAfter, sealedBefore);
    assert.equal(deriveSessionKeys(NEW_KEY).open(sealedAfter), deriveSessionKeys(h.config.sessions.encryption_key).open(sealedBefore));
    clock.advance(INTERVAL_MS);
    assert.equal((await introspect(replica, alice.access_token, { hint: undefined, deviceIdSupported: true }))['active'], true);
    assert.equal(await sealedOf(alice.sessionId), sealedAfter, 'sealed with the current key already: kept as it is');
  });

  test('a replica missing the old key fails closed within the grace and loses nothing; with the key listed it recovers', async () => {
    const alice = await login();
    const sealedBefore = await sealedOf(alice.sessionId);
    const missing = await buildDeps(rotated(h.config, []), h.store, createLogger('silent'), createMetrics({ collectDefaults: false }), { clock });
    clock.advance(INTERVAL_MS);
    const answer = await introspect(missing, alice.access_token, { hint: undefined, deviceIdSupported: true });
    assert.equal(answer['active'], true, 'within sessions.op_unreachable_grace the last check stands');
    assert.equal(await sealedOf(alice.sessionId), sealedBefore, 'the stored OP token is untouched');
    assert.ok(await h.deps.sessions.get(alice.sessionId), 'the session is kept');

    clock.advance(15_000); // past the retry back-off of a failed check
    const fixed = await buildDeps(rotated(h.config, [h.config.sessions.encryption_key]), h.store, createLogger('silent'), createMetrics({ collectDefaults: false }), { clock });
    assert.equal((await introspect(fixed, alice.access_token, { hint: undefined, deviceIdSupported: true }))['active'], true);
    assert.equal(deriveSessionKeys(NEW_KEY).open(await sealedOf(alice.sessionId)), deriveSessionKeys(h.config.sessions.encryption_key).open(sealedBefore));
  });

  test('a refresh retried across the rotation gets the pair the first answer gave', async () => {
    const alice = await login(true);
    assert.ok(alice.refresh_token);
    const first = await h.request('POST', '/_matrix/client/v3/refresh', { body: { refresh_token: alice.refresh_token } });
    assert.equal(first.status, 200, JSON.stringify(first.body));

    const replica = await buildDeps(rotated(h.config, [h.config.sessions.encryption_key]), h.store, createLogger('silent'), createMetrics({ collectDefaults: false }), { clock });
    const retried = await replica.sessions.refresh(alice.refresh_token, 5 * 60_000);
    assert.ok(retried.ok, JSON.stringify(retried));
    assert.equal(retried.accessToken, first.body.access_token);
    assert.equal(retried.refreshToken, first.body.refresh_token);

    // Without the old key the retry cannot be answered with working tokens: what the list is for.
    const missing = await buildDeps(rotated(h.config, []), h.store, createLogger('silent'), createMetrics({ collectDefaults: false }), { clock });
    const blind = await missing.sessions.refresh(alice.refresh_token, 5 * 60_000);
    assert.ok(blind.ok);
    assert.notEqual(blind.accessToken, first.body.access_token);
  });
});

test('sealed values keep the v1 form any release opens; the current key seals, every listed key opens', () => {
  const oldKeys = deriveSessionKeys('o'.repeat(40));
  const during = deriveSessionKeys('o'.repeat(40), ['n'.repeat(40)]);
  const afterRotation = deriveSessionKeys('n'.repeat(40), ['o'.repeat(40)]);
  // Phase one of a rotation: the new key is listed but the old one still seals, so a replica not yet given the new
  // key opens everything sealed meanwhile.
  assert.equal(oldKeys.open(during.seal('secret-1')), 'secret-1');
  assert.match(afterRotation.seal('x'), /^v1\./);
  let previousUsed = 0;
  const counting = deriveSessionKeys('n'.repeat(40), ['o'.repeat(40)], () => previousUsed++);
  assert.equal(counting.open(oldKeys.seal('secret-2')), 'secret-2');
  assert.equal(counting.open(counting.seal('secret-3')), 'secret-3');
  assert.equal(previousUsed, 1);
  assert.equal(counting.sealedWithCurrentKey(oldKeys.seal('y')), false);
  assert.equal(counting.sealedWithCurrentKey(counting.seal('y')), true);
  assert.throws(() => deriveSessionKeys('z'.repeat(40)).open(oldKeys.seal('secret-4')), SealingKeyUnknown);
  assert.throws(() => counting.open('v9.abc'), /unknown sealed value version/);
  assert.deepEqual(afterRotation.tokenDerivationKeys[1], oldKeys.tokenDerivationKey);
});

describe('homeserver.secret rotation, step one: the proxy has the next secret, Synapse (the double) still the current one', () => {
  let h: Harness;
  const NEXT = 'the-next-homeserver-secret-0123456789';
  before(async () => {
    h = await startProxyHarness({
      configure: (raw) => {
        raw['homeserver'].secret = NEXT;
        raw['homeserver'].previous_secrets = [{ secret: HOMESERVER_SECRET }];
      },
    });
  });
  after(() => h.stop());

  test('logins provision at the homeserver and its introspection is answered: nobody notices', async () => {
    const login = await h.passwordLogin('alice', h.op.users.alice.password);
    assert.equal(login.status, 200, JSON.stringify(login.body));
    h.homeserver.forgetIntrospections();
    const whoami = await fetch(`${h.homeserver.url}/_matrix/client/v3/account/whoami`, { headers: { authorization: `Bearer ${login.body.access_token}` } });
    assert.equal(whoami.status, 200, 'the homeserver introspected with the previous secret');
    assert.equal(((await whoami.json()) as Record<string, unknown>)['device_id'], login.body.device_id);
  });

  test('introspection takes the next secret and the previous one, nothing else', async () => {
    const ask = (secret: string) =>
      fetch(`${h.homeserverFacingUrl}/oauth2/introspect`, {
        method: 'POST',
        headers: { authorization: `Bearer ${secret}`, 'content-type': 'application/x-www-form-urlencoded' },
        body: 'token=mcpa_not_a_live_token',
      }).then((response) => response.status);
    assert.equal(await ask(NEXT), 200);
    assert.equal(await ask(HOMESERVER_SECRET), 200);
    assert.equal(await ask('some-other-secret-0123456789'), 401);
  });
});

test("the OAuth sign-in form's CSRF token from a replica still on the previous key is accepted after the rotation", () => {
  const sessionsWith = (key: string, previous: string[]) => ({ sessions: { encryption_key: key, previous_encryption_keys: previous.map((k) => ({ key: k })) } }) as unknown as Config;
  const oldKey = 'the-old-encryption-key-0123456789abcdef';
  const renderedBefore = interactionCsrfToken(sessionsWith(oldKey, []), 'interaction-1');
  const accepted = acceptedInteractionCsrfTokens(sessionsWith(NEW_KEY, [oldKey]), 'interaction-1');
  assert.ok(accepted.includes(renderedBefore));
  assert.ok(!acceptedInteractionCsrfTokens(sessionsWith(NEW_KEY, [oldKey]), 'interaction-2').includes(renderedBefore), 'bound to its interaction');
  assert.ok(!acceptedInteractionCsrfTokens(sessionsWith(NEW_KEY, []), 'interaction-1').includes(renderedBefore), 'not once the old key is gone');
});

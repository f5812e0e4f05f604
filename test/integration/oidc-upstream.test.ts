import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { JWK } from 'jose';
import { pino } from 'pino';
import type { Clock } from '../../src/clock.js';
import { createUpstreamProvider, createUpstreamProviders, type ProviderSettings } from '../../src/oidc/create-upstream-providers.js';
import { UpstreamError, type LogoutTokenClaims, type UpstreamErrorKind, type UpstreamProvider } from '../../src/oidc/upstream.js';
import { freePort } from '../support/free-port.js';
import { startTestOp, type TestOp } from '../support/test-op.js';

const logger = pino({ level: 'silent' });
const BACKCHANNEL_EVENT = 'http://schemas.openid.net/event/backchannel-logout';

/** Real time plus an offset the test moves: the OP signs with real time, the checks under test use this clock. */
class OffsetClock implements Clock {
  offsetMs = 0;
  now(): number {
    return Date.now() + this.offsetMs;
  }
}

function settingsFor(op: TestOp, overrides: Partial<ProviderSettings> = {}): ProviderSettings {
  return {
    idp_id: 'testop',
    idp_name: 'Test OP',
    issuer: op.issuer,
    client_id: op.clientId,
    client_secret: op.clientSecret,
    scopes: ['openid', 'profile', 'email', 'groups', 'offline_access'],
    ...overrides,
  };
}

async function rejectsWith(promise: Promise<unknown>, kind: UpstreamErrorKind, message?: RegExp): Promise<UpstreamError> {
  try {
    await promise;
  } catch (err: unknown) {
    assert.ok(err instanceof UpstreamError, `expected UpstreamError, got ${String(err)}`);
    assert.equal(err.kind, kind, `expected ${kind}, got ${err.kind}: ${err.message}`);
    if (message !== undefined) assert.match(err.message, message);
    return err;
  }
  assert.fail(`expected an UpstreamError(${kind})`);
}

function decodePart(jwt: string, index: 0 | 1): Record<string, unknown> {
  return JSON.parse(Buffer.from(jwt.split('.')[index] ?? '', 'base64url').toString('utf8')) as Record<string, unknown>;
}

/** The proxy side of back-channel logout, reduced to what is under test here: verify every token the OP posts. */
async function startLogoutReceiver(verify: () => UpstreamProvider): Promise<{ url: string; received: Array<LogoutTokenClaims | UpstreamError>; stop(): Promise<void> }> {
  const received: Array<LogoutTokenClaims | UpstreamError> = [];
  const server: Server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const token = new URLSearchParams(Buffer.concat(chunks).toString('utf8')).get('logout_token') ?? '';
    try {
      received.push(await verify().verifyLogoutToken(token));
      res.writeHead(200, { 'cache-control': 'no-store' }).end();
    } catch (err: unknown) {
      received.push(err as UpstreamError);
      res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'invalid_request' }));
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/backchannel-logout`,
    received,
    stop: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

describe('upstream OP through openid-client, against oidc-provider', () => {
  let op: TestOp;
  let provider: UpstreamProvider;
  let receiver: Awaited<ReturnType<typeof startLogoutReceiver>>;
  const clock = new OffsetClock();

  before(async () => {
    receiver = await startLogoutReceiver(() => provider);
    op = await startTestOp({ backchannelLogoutUri: receiver.url, redirectUris: ['http://127.0.0.1:1/callback'] });
    provider = createUpstreamProvider(settingsFor(op), { logger, clock });
  });
  after(async () => {
    await op.stop();
    await receiver.stop();
  });

  describe('password grant', () => {
    test('returns the identity, the OP session id and tokens; discovery happens once', async () => {
      const before = op.requestCount('/.well-known/openid-configuration');
      const grant = await provider.passwordGrant('alice', op.users.alice.password);
      assert.equal(grant.sub, op.users.alice.sub);
      assert.equal(grant.claims['preferred_username'], 'alice');
      assert.equal(grant.claims['email'], 'alice@example.test');
      assert.deepEqual(grant.claims['groups'], ['matrix-users', 'admins']);
      assert.equal(typeof grant.sid, 'string');
      assert.ok(grant.accessToken.length > 20);
      assert.equal(typeof grant.refreshToken, 'string');
      assert.equal(grant.expiresInSeconds, 300);
      await provider.passwordGrant('bob', op.users.bob.password);
      assert.ok(op.requestCount('/.well-known/openid-configuration') - before <= 1, 'metadata is cached');
    });

    test('an email address is a username for the OP', async () => {
      const grant = await provider.passwordGrant('alice@example.test', op.users.alice.password);
      assert.equal(grant.sub, op.users.alice.sub);
    });

    test('a wrong password and an unknown user are both invalid_grant', async () => {
      await rejectsWith(provider.passwordGrant('alice', 'not-her-password'), 'invalid_grant');
      await rejectsWith(provider.passwordGrant('mallory', 'whatever'), 'invalid_grant');
    });

    test('a disabled user is invalid_grant', async () => {
      op.disableUser('bob');
      try {
        await rejectsWith(provider.passwordGrant('bob', op.users.bob.password), 'invalid_grant');
      } finally {
        op.enableUser('bob');
      }
      await provider.passwordGrant('bob', op.users.bob.password);
    });

    test('the error never carries the password', async () => {
      const err = await rejectsWith(provider.passwordGrant('alice', 'hunter2-secret-value'), 'invalid_grant');
      assert.doesNotMatch(`${err.message} ${JSON.stringify(err)}`, /hunter2/);
    });

    test('private_key_jwt client authentication', async () => {
      const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
      const kid = 'client-key-1';
      const jwkOp = await startTestOp({
        clients: [{ clientId: 'jwt-client', authMethod: 'private_key_jwt', jwks: { keys: [{ ...(publicKey.export({ format: 'jwk' }) as JWK), kid, alg: 'RS256', use: 'sig' }] } }],
      });
      try {
        const settings = settingsFor(jwkOp, {
          client_id: 'jwt-client',
          client_secret: undefined,
          client_auth_method: 'private_key_jwt',
          client_secret_jwt_key: { key: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(), jwt_header: { alg: 'RS256', kid } },
        });
        const grant = await createUpstreamProvider(settings, { logger, clock }).passwordGrant('alice', jwkOp.users.alice.password);
        assert.equal(grant.sub, jwkOp.users.alice.sub);
        const otherKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
        const impostor = createUpstreamProvider({ ...settings, client_secret_jwt_key: { key: otherKey, jwt_header: { alg: 'RS256', kid } } }, { logger, clock });
        await rejectsWith(impostor.passwordGrant('alice', jwkOp.users.alice.password), 'invalid_response', /client/);
      } finally {
        await jwkOp.stop();
      }
    });

    test('Matrix API and device scopes are granted by the OP and visible in introspection', async () => {
      const matrixScoped = createUpstreamProvider(settingsFor(op, { scopes: ['openid', 'urn:matrix:client:api:*', 'urn:matrix:client:device:QWERTYUIOP'] }), { logger, clock });
      const grant = await matrixScoped.passwordGrant('alice', op.users.alice.password);
      const scopes = ((await provider.introspect(grant.accessToken)).scope ?? '').split(' ');
      assert.ok(scopes.includes('urn:matrix:client:api:*'), scopes.join(' '));
      assert.ok(scopes.includes('urn:matrix:client:device:QWERTYUIOP'), scopes.join(' '));
    });

    test('user_profile_method userinfo_endpoint merges userinfo (and asks the OP for it)', async () => {
      const viaUserinfo = createUpstreamProvider(settingsFor(op, { user_profile_method: 'userinfo_endpoint' }), { logger, clock });
      const before = op.requestCount('/me');
      const grant = await viaUserinfo.passwordGrant('alice', op.users.alice.password);
      assert.equal(op.requestCount('/me'), before + 1);
      assert.equal(grant.claims['name'], 'Alice Liddell');
      assert.equal(grant.claims['sub'], op.users.alice.sub);
      assert.equal(typeof grant.sid, 'string', 'sid still comes from the ID token');
    });

    test('invalid client credentials are a misconfiguration (invalid_response), not a bad password', async () => {
      const misconfigured = createUpstreamProvider(settingsFor(op, { client_secret: 'not-the-secret' }), { logger, clock });
      await rejectsWith(misconfigured.passwordGrant('alice', op.users.alice.password), 'invalid_response', /client/);
    });

    test('client_secret_basic sends an Authorization header, client_secret_post the secret in the body', async () => {
      const lastTokenRequest = () => op.requests.filter((record) => record.path === '/token').at(-1);
      await provider.passwordGrant('alice', op.users.alice.password);
      assert.equal(lastTokenRequest()?.authorizationHeader, true);
      const post = createUpstreamProvider(settingsFor(op, { client_auth_method: 'client_secret_post' }), { logger, clock });
      assert.equal((await post.passwordGrant('alice', op.users.alice.password)).sub, op.users.alice.sub);
      assert.equal(lastTokenRequest()?.authorizationHeader, false);
    });
  });

  describe('refresh, revocation, introspection', () => {
    test('refresh grant renews the tokens and identity; a disabled user is invalid_grant', async () => {
      const grant = await provider.passwordGrant('bob', op.users.bob.password);
      const refreshed = await provider.refreshGrant(grant.refreshToken as string);
      assert.equal(refreshed.sub, op.users.bob.sub);
      assert.equal(refreshed.claims['preferred_username'], 'bob');
      assert.notEqual(refreshed.accessToken, grant.accessToken);
      op.disableUser('bob');
      try {
        await rejectsWith(provider.refreshGrant(grant.refreshToken as string), 'invalid_grant');
      } finally {
        op.enableUser('bob');
      }
    });

    test('revoked refresh token → invalid_grant', async () => {
      const grant = await provider.passwordGrant('alice', op.users.alice.password);
      await provider.revoke(grant.refreshToken as string, 'refresh_token');
      await rejectsWith(provider.refreshGrant(grant.refreshToken as string), 'invalid_grant');
    });

    test('introspection: active with subject and scope, inactive after revocation', async () => {
      const grant = await provider.passwordGrant('alice', op.users.alice.password);
      const active = await provider.introspect(grant.accessToken);
      assert.equal(active.active, true);
      assert.equal(active.sub, op.users.alice.sub);
      assert.equal(active.clientId, op.clientId);
      assert.equal(active.username, 'alice');
      assert.match(active.scope ?? '', /\bopenid\b/);
      assert.ok((active.exp ?? 0) > Date.now() / 1000);
      await provider.revoke(grant.accessToken, 'access_token');
      assert.equal((await provider.introspect(grant.accessToken)).active, false);
      assert.equal((await provider.introspect('never-issued')).active, false);
    });

    test('a disabled user’s access token introspects inactive', async () => {
      const grant = await provider.passwordGrant('bob', op.users.bob.password);
      op.disableUser('bob');
      try {
        assert.equal((await provider.introspect(grant.accessToken)).active, false);
      } finally {
        op.enableUser('bob');
      }
    });

    test('rotating OP: the new refresh token is returned, the old one dies', async () => {
      const rotating = await startTestOp({ rotateRefreshTokens: true });
      try {
        const upstream = createUpstreamProvider(settingsFor(rotating), { logger, clock });
        const grant = await upstream.passwordGrant('alice', rotating.users.alice.password);
        const refreshed = await upstream.refreshGrant(grant.refreshToken as string);
        assert.equal(typeof refreshed.refreshToken, 'string');
        assert.notEqual(refreshed.refreshToken, grant.refreshToken);
        await upstream.refreshGrant(refreshed.refreshToken as string);
        await rejectsWith(upstream.refreshGrant(grant.refreshToken as string), 'invalid_grant');
      } finally {
        await rotating.stop();
      }
    });
  });

  describe('configuration without discovery', () => {
    test('explicit endpoints work and discovery is never fetched', async () => {
      const explicit = createUpstreamProvider(
        settingsFor(op, {
          discover: false,
          authorization_endpoint: `${op.issuer}/auth`,
          token_endpoint: `${op.issuer}/token`,
          userinfo_endpoint: `${op.issuer}/me`,
          jwks_uri: `${op.issuer}/jwks`,
        }),
        { logger, clock },
      );
      const before = op.requestCount('/.well-known/openid-configuration');
      const grant = await explicit.passwordGrant('alice', op.users.alice.password);
      assert.equal(grant.sub, op.users.alice.sub);
      assert.equal(op.requestCount('/.well-known/openid-configuration'), before);
      const metadata = await explicit.metadata();
      assert.equal(metadata['token_endpoint'], `${op.issuer}/token`);
      assert.equal(metadata['issuer'], op.issuer);
      await rejectsWith(explicit.introspect(grant.accessToken), 'unsupported');
      const revocationsBefore = op.requestCount('/token/revocation');
      await explicit.revoke(grant.refreshToken as string, 'refresh_token');
      assert.equal(op.requestCount('/token/revocation'), revocationsBefore, 'no revocation endpoint: nothing sent');
    });

    test('metadata() is the discovered document', async () => {
      const metadata = await provider.metadata();
      assert.equal(metadata['issuer'], op.issuer);
      assert.equal(metadata['end_session_endpoint'], `${op.issuer}/session/end`);
      assert.equal(metadata['backchannel_logout_supported'], true);
    });
  });

  describe('OP outages', () => {
    test('an OP that never answers is unavailable within the timeout, for discovery and for grants', async () => {
      const warm = createUpstreamProvider(settingsFor(op), { logger, clock, fetchTimeoutMs: 300 });
      await warm.metadata();
      op.setDown('hang');
      try {
        const cold = createUpstreamProvider(settingsFor(op), { logger, clock, fetchTimeoutMs: 300 });
        const started = Date.now();
        await rejectsWith(cold.passwordGrant('alice', op.users.alice.password), 'unavailable');
        await rejectsWith(warm.passwordGrant('alice', op.users.alice.password), 'unavailable', /timed out/);
        const elapsed = Date.now() - started;
        assert.ok(elapsed < 2000, `took ${elapsed} ms`);
      } finally {
        op.setDown(false);
      }
    });

    test('503 and connection resets are unavailable; discovery is retried once the OP is back', async () => {
      const fresh = createUpstreamProvider(settingsFor(op), { logger, clock, fetchTimeoutMs: 1000 });
      op.setDown('error');
      try {
        await rejectsWith(fresh.passwordGrant('alice', op.users.alice.password), 'unavailable');
        await rejectsWith(provider.passwordGrant('alice', op.users.alice.password), 'unavailable', /503/);
        await rejectsWith(provider.refreshGrant('whatever'), 'unavailable');
        op.setDown('reset');
        await rejectsWith(provider.passwordGrant('alice', op.users.alice.password), 'unavailable');
        await rejectsWith(provider.introspect('whatever'), 'unavailable');
      } finally {
        op.setDown(false);
      }
      const grant = await fresh.passwordGrant('alice', op.users.alice.password);
      assert.equal(grant.sub, op.users.alice.sub);
    });

    test('an unreachable port is unavailable', async () => {
      const upstream = createUpstreamProvider(settingsFor(op, { issuer: `http://127.0.0.1:${await freePort()}` }), { logger, clock, fetchTimeoutMs: 1000 });
      await rejectsWith(upstream.passwordGrant('alice', 'x'), 'unavailable', /ECONNREFUSED/);
    });
  });

  describe('ID token checks', () => {
    test('an ID token with alg none is refused, even if the admin lists none', async () => {
      const permissive = createUpstreamProvider(settingsFor(op, { id_token_signing_alg_values_supported: ['none', 'RS256'] }), { logger, clock });
      op.interceptTokenResponses((body) => {
        const idToken = String(body['id_token']);
        const header = Buffer.from(JSON.stringify({ alg: 'none' })).toString('base64url');
        return { ...body, id_token: `${header}.${idToken.split('.')[1]}.` };
      });
      try {
        await rejectsWith(permissive.passwordGrant('alice', op.users.alice.password), 'invalid_response');
        await rejectsWith(provider.passwordGrant('alice', op.users.alice.password), 'invalid_response');
      } finally {
        op.interceptTokenResponses(undefined);
      }
    });

    test('an ID token with a forged signature is refused', async () => {
      const forged = await op.signJwt(
        { iss: op.issuer, aud: op.clientId, sub: op.users.alice.sub, iat: Math.floor(Date.now() / 1000), exp: Math.floor(Date.now() / 1000) + 300 },
        { key: 'unpublished', header: { typ: 'JWT' } },
      );
      op.interceptTokenResponses((body) => ({ ...body, id_token: forged }));
      try {
        await rejectsWith(provider.passwordGrant('alice', op.users.alice.password), 'invalid_response', /signature/);
      } finally {
        op.interceptTokenResponses(undefined);
      }
    });

    test('an ID token for another audience is refused', async () => {
      const foreign = await op.signJwt(
        { iss: op.issuer, aud: 'another-client', sub: op.users.alice.sub, iat: Math.floor(Date.now() / 1000), exp: Math.floor(Date.now() / 1000) + 300 },
        { header: { typ: 'JWT' } },
      );
      op.interceptTokenResponses((body) => ({ ...body, id_token: foreign }));
      try {
        await rejectsWith(provider.passwordGrant('alice', op.users.alice.password), 'invalid_response');
      } finally {
        op.interceptTokenResponses(undefined);
      }
    });

    test('HS256 ID tokens keyed by the client secret: accepted when allowed, refused otherwise', async () => {
      const hmacOp = await startTestOp({ idTokenAlg: 'HS256' });
      try {
        const firstToken = await (async () => {
          const discovered = createUpstreamProvider(settingsFor(hmacOp), { logger, clock });
          const grant = await discovered.passwordGrant('alice', hmacOp.users.alice.password);
          assert.equal(grant.sub, hmacOp.users.alice.sub, 'the OP advertises HS256');
          return grant;
        })();
        assert.ok(firstToken.sid);
        const explicit = createUpstreamProvider(settingsFor(hmacOp, { id_token_signing_alg_values_supported: ['HS256'] }), { logger, clock });
        assert.equal((await explicit.passwordGrant('bob', hmacOp.users.bob.password)).sub, hmacOp.users.bob.sub);
        const rsaOnly = createUpstreamProvider(settingsFor(hmacOp, { id_token_signing_alg_values_supported: ['RS256'] }), { logger, clock });
        await rejectsWith(rsaOnly.passwordGrant('alice', hmacOp.users.alice.password), 'invalid_response');
      } finally {
        await hmacOp.stop();
      }
    });
  });

  describe('authorization code flow', () => {
    const redirectUri = 'http://127.0.0.1:1/callback';

    async function authorize(upstream: UpstreamProvider, browser: ReturnType<TestOp['browser']>, extra: { prompt?: string } = {}) {
      const state = randomBytes(16).toString('base64url');
      const nonce = randomBytes(16).toString('base64url');
      const codeVerifier = randomBytes(32).toString('base64url');
      const url = await upstream.authorizationUrl({ redirectUri, state, nonce, codeVerifier, ...extra });
      const callback = await browser.authorize(url, { login: 'alice', password: op.users.alice.password });
      return { callback, expected: { redirectUri, state, nonce, codeVerifier } };
    }

    test('authorizationUrl carries code, S256 challenge, state, nonce, scope, prompt and admin extras', async () => {
      const withExtras = createUpstreamProvider(settingsFor(op, { additional_authorization_parameters: { acr_values: 'mfa', state: 'attacker' } }), { logger, clock });
      const codeVerifier = randomBytes(32).toString('base64url');
      const url = await withExtras.authorizationUrl({ redirectUri, state: 'the-state', nonce: 'the-nonce', codeVerifier, prompt: 'create' });
      assert.equal(url.origin + url.pathname, `${op.issuer}/auth`);
      const params = url.searchParams;
      assert.equal(params.get('response_type'), 'code');
      assert.equal(params.get('client_id'), op.clientId);
      assert.equal(params.get('redirect_uri'), redirectUri);
      assert.equal(params.get('scope'), 'openid profile email groups offline_access');
      assert.deepEqual(params.getAll('state'), ['the-state']);
      assert.equal(params.get('nonce'), 'the-nonce');
      assert.equal(params.get('code_challenge_method'), 'S256');
      assert.equal(params.get('code_challenge'), createHash('sha256').update(codeVerifier).digest('base64url'));
      assert.equal(params.get('prompt'), 'create');
      assert.equal(params.get('acr_values'), 'mfa');
    });

    test('code + PKCE through the OP login form: identity with sid; replayed code is invalid_grant', async () => {
      const browser = op.browser();
      const { callback, expected } = await authorize(provider, browser);
      assert.equal(callback.searchParams.get('iss'), op.issuer, 'RFC 9207 iss in the callback');
      const grant = await provider.exchangeCode(callback, expected);
      assert.equal(grant.sub, op.users.alice.sub);
      assert.equal(grant.claims['preferred_username'], 'alice');
      assert.equal(typeof grant.sid, 'string');
      assert.equal(typeof grant.refreshToken, 'string');
      await rejectsWith(provider.exchangeCode(callback, expected), 'invalid_grant');
    });

    test('state, nonce, iss and PKCE mismatches are refused', async () => {
      const browser = op.browser();
      let flow = await authorize(provider, browser);
      await rejectsWith(provider.exchangeCode(flow.callback, { ...flow.expected, state: 'other-state' }), 'invalid_response', /state/);

      flow = await authorize(provider, browser);
      await rejectsWith(provider.exchangeCode(flow.callback, { ...flow.expected, nonce: 'other-nonce' }), 'invalid_response', /nonce|claim/);

      flow = await authorize(provider, browser);
      const mixedUp = new URL(flow.callback);
      mixedUp.searchParams.set('iss', 'https://evil.example');
      await rejectsWith(provider.exchangeCode(mixedUp, flow.expected), 'invalid_response', /iss/);
      const noIss = new URL(flow.callback);
      noIss.searchParams.delete('iss');
      await rejectsWith(provider.exchangeCode(noIss, flow.expected), 'invalid_response', /iss/);

      flow = await authorize(provider, browser);
      await rejectsWith(provider.exchangeCode(flow.callback, { ...flow.expected, codeVerifier: randomBytes(32).toString('base64url') }), 'invalid_grant');
    });

    test('an error callback (user refused) is invalid_grant', async () => {
      const callback = new URL(redirectUri);
      callback.searchParams.set('error', 'access_denied');
      callback.searchParams.set('state', 's');
      callback.searchParams.set('iss', op.issuer);
      await rejectsWith(provider.exchangeCode(callback, { redirectUri, state: 's', nonce: 'n', codeVerifier: 'v'.repeat(43) }), 'invalid_grant', /access_denied/);
    });
  });

  describe('back-channel logout tokens (§2.6)', () => {
    const now = () => Math.floor(Date.now() / 1000);

    test('the real OP’s logout token (OP-initiated) verifies, with sub and sid', async () => {
      const grant = await provider.passwordGrant('alice', op.users.alice.password);
      const seen = receiver.received.length;
      await op.sendBackchannelLogout({ sub: grant.sub, sid: grant.sid as string });
      const claims = receiver.received[seen];
      assert.ok(claims !== undefined && !(claims instanceof UpstreamError), `receiver refused: ${String(claims)}`);
      assert.equal(claims.sub, op.users.alice.sub);
      assert.equal(claims.sid, grant.sid);
      assert.equal(claims.iss, op.issuer);
      assert.equal(typeof claims.jti, 'string');
    });

    test('RP-initiated logout at the OP (end_session) sends a logout token for the browser session', async () => {
      const browser = op.browser();
      const state = 'st';
      const nonce = 'no';
      const codeVerifier = randomBytes(32).toString('base64url');
      const url = await provider.authorizationUrl({ redirectUri: 'http://127.0.0.1:1/callback', state, nonce, codeVerifier });
      const callback = await browser.authorize(url, { login: 'bob', password: op.users.bob.password });
      const grant = await provider.exchangeCode(callback, { redirectUri: 'http://127.0.0.1:1/callback', state, nonce, codeVerifier });
      const seen = receiver.received.length;
      await browser.logout();
      const claims = receiver.received[seen];
      assert.ok(claims !== undefined && !(claims instanceof UpstreamError), `receiver refused: ${String(claims)}`);
      assert.equal(claims.sid, grant.sid);
      assert.equal(claims.sub, op.users.bob.sub);
    });

    test('admin-style session end at the OP: logout token by sid, and the session’s refresh token dies', async () => {
      const upstream = createUpstreamProvider(settingsFor(op, { scopes: ['openid', 'profile'] }), { logger, clock });
      const grant = await upstream.passwordGrant('alice', op.users.alice.password);
      const seen = receiver.received.length;
      assert.equal(await op.endSessions({ sid: grant.sid as string }), 1);
      const claims = receiver.received[seen];
      assert.ok(claims !== undefined && !(claims instanceof UpstreamError));
      assert.equal(claims.sid, grant.sid);
      await rejectsWith(upstream.refreshGrant(grant.refreshToken as string), 'invalid_grant');
    });

    test('sid-only and sub-only tokens are valid', async () => {
      const { sub, ...sidOnly } = op.logoutTokenClaims();
      assert.ok(sub);
      assert.equal((await provider.verifyLogoutToken(await op.signJwt(sidOnly))).sub, undefined);
      const { sid, ...subOnly } = op.logoutTokenClaims();
      assert.ok(sid);
      assert.equal((await provider.verifyLogoutToken(await op.signJwt(subOnly))).sid, undefined);
    });

    const negatives: Array<[string, () => Promise<string>, RegExp]> = [
      ['an ID token posted as a logout token', () => idTokenOf('alice'), /events/],
      ['missing events', () => sign({ events: undefined }), /events/],
      ['wrong events key', () => sign({ events: { 'http://schemas.openid.net/event/other': {} } }), /events/],
      ['events member that is not an object', () => sign({ events: { [BACKCHANNEL_EVENT]: 'yes' } }), /events/],
      ['nonce present', () => sign({ nonce: 'n-0S6_WzA2Mj' }), /nonce/],
      ['wrong aud', () => sign({ aud: 'another-client' }), /aud/],
      ['wrong iss', () => sign({ iss: 'https://evil.example' }), /iss/],
      ['iat far in the future', () => sign({ iat: now() + 3600, exp: now() + 3720 }), /iat/],
      ['iat missing', () => sign({ iat: undefined }), /iat/],
      ['expired', () => sign({ iat: now() - 600, exp: now() - 60 }), /expired/],
      ['old token without exp', () => sign({ iat: now() - 3600, exp: undefined }), /iat/],
      ['bad signature', () => op.signJwt(op.logoutTokenClaims(), { key: 'unpublished' }), /signature/],
      ['neither sub nor sid', () => sign({ sub: undefined, sid: undefined }), /neither sub nor sid/],
      ['jti missing', () => sign({ jti: undefined }), /jti/],
      ['alg none', async () => `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'logout+jwt' })).toString('base64url')}.${Buffer.from(JSON.stringify(op.logoutTokenClaims())).toString('base64url')}.`, /none/],
      ['HS256 when the provider does not allow it', () => op.signJwt(op.logoutTokenClaims(), { key: 'client_secret' }), /HS256/],
      ['a typ that is not a logout token', () => op.signJwt(op.logoutTokenClaims(), { header: { typ: 'at+jwt' } }), /typ/],
      ['not a JWS at all', async () => 'not.a.jws', /malformed|JWS/],
    ];

    async function sign(overrides: Record<string, unknown>): Promise<string> {
      const claims = op.logoutTokenClaims();
      for (const [key, value] of Object.entries(overrides)) {
        if (value === undefined) delete claims[key];
        else claims[key] = value;
      }
      return op.signJwt(claims);
    }

    async function idTokenOf(username: 'alice' | 'bob'): Promise<string> {
      const response = await fetch(`${op.issuer}/token`, {
        method: 'POST',
        headers: { authorization: `Basic ${Buffer.from(`${op.clientId}:${op.clientSecret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'password', username, password: op.users[username].password, scope: 'openid profile' }),
      });
      const idToken = String(((await response.json()) as Record<string, unknown>)['id_token']);
      assert.equal(decodePart(idToken, 1)['sub'], op.users[username].sub);
      return idToken;
    }

    for (const [name, token, message] of negatives) {
      test(`refused: ${name}`, async () => {
        await rejectsWith(provider.verifyLogoutToken(await token()), 'invalid_token', message);
      });
    }

    test('iat within 5 minutes ahead is tolerated, beyond is not (injected clock)', async () => {
      const token = await sign({ iat: now() + 240, exp: now() + 600 });
      await provider.verifyLogoutToken(token);
      clock.offsetMs = -120_000;
      try {
        await rejectsWith(provider.verifyLogoutToken(token), 'invalid_token', /future/);
      } finally {
        clock.offsetMs = 0;
      }
    });

    test('an unknown kid refetches the JWKS once, at most once a minute', async () => {
      const keyed = createUpstreamProvider(settingsFor(op), { logger, clock });
      await keyed.verifyLogoutToken(await op.signJwt(op.logoutTokenClaims()));
      const fetches = () => op.requestCount('/jwks');
      const before = fetches();

      clock.offsetMs = 61_000;
      try {
        const rotated = op.publishNewKey();
        assert.ok(await keyed.verifyLogoutToken(await op.signJwt(op.logoutTokenClaims({ iat: now() + 61, exp: now() + 300 }), { key: rotated })));
        assert.equal(fetches(), before + 1, 'one refetch for the new kid');

        const another = op.publishNewKey();
        await rejectsWith(keyed.verifyLogoutToken(await op.signJwt(op.logoutTokenClaims({ iat: now() + 61, exp: now() + 300 }), { key: another })), 'invalid_token', /kid/);
        assert.equal(fetches(), before + 1, 'no second refetch within a minute');

        clock.offsetMs = 122_000;
        assert.ok(await keyed.verifyLogoutToken(await op.signJwt(op.logoutTokenClaims({ iat: now() + 122, exp: now() + 300 }), { key: another })));
        assert.equal(fetches(), before + 2);
      } finally {
        clock.offsetMs = 0;
      }
    });

    test('HS256 logout tokens keyed by the client secret verify when the provider allows HS256', async () => {
      const hmac = createUpstreamProvider(settingsFor(op, { id_token_signing_alg_values_supported: ['RS256', 'HS256'] }), { logger, clock });
      const claims = await hmac.verifyLogoutToken(await op.signJwt(op.logoutTokenClaims(), { key: 'client_secret' }));
      assert.equal(claims.iss, op.issuer);
      // A public client has no secret, hence no HMAC key: HS256 is refused even when listed.
      const keyless = createUpstreamProvider(settingsFor(op, { client_auth_method: 'none', client_secret: undefined, id_token_signing_alg_values_supported: ['RS256', 'HS256'] }), { logger, clock });
      await rejectsWith(keyless.verifyLogoutToken(await op.signJwt(op.logoutTokenClaims(), { key: 'client_secret' })), 'invalid_token', /HS256/);
    });
  });
});

describe('provider construction', () => {
  test('createUpstreamProviders keys by idp_id and refuses duplicates', () => {
    const base = { issuer: 'https://op.example', client_id: 'c', client_secret: 's' };
    const providers = createUpstreamProviders(
      [
        { ...base, idp_id: 'one', idp_name: 'One' },
        { ...base, idp_id: 'two' },
      ],
      { logger },
    );
    assert.deepEqual([...providers.keys()], ['one', 'two']);
    assert.equal(providers.get('one')?.idpName, 'One');
    assert.equal(providers.get('two')?.idpName, 'two');
    assert.throws(() => createUpstreamProviders([{ ...base, idp_id: 'one' }, { ...base, idp_id: 'one' }], { logger }), /twice/);
  });

  test('plain http is refused off loopback unless skip_verification', () => {
    const base = { idp_id: 'x', client_id: 'c', client_secret: 's' };
    assert.throws(() => createUpstreamProvider({ ...base, issuer: 'http://op.example' }, { logger }), /http/);
    createUpstreamProvider({ ...base, issuer: 'http://op.example', skip_verification: true }, { logger });
    createUpstreamProvider({ ...base, issuer: 'http://localhost:8080/realms/matrix' }, { logger });
  });
});

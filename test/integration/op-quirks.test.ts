import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { compactVerify, importSPKI } from 'jose';
import { pino } from 'pino';
import { basicAuthorizationValue } from '../../src/oidc/client-authentication.js';
import { createUpstreamProvider, type ProviderSettings } from '../../src/oidc/create-upstream-providers.js';
import { UpstreamError } from '../../src/oidc/upstream.js';
import { parseToken } from '../../src/sessions/tokens.js';
import { FakeClock } from '../support/fake-clock.js';
import { startProxyHarness, type Harness } from '../support/proxy-harness.js';
import { startTestOp, type TestOp } from '../support/test-op.js';

/**
 * Issue 13: the same `oidc_providers` block that works with Synapse must work with the proxy, against OPs that bend
 * the RFCs. The OP is the real oidc-provider, with the quirks of OPs met in the field switched on
 * (test/support/test-op.ts `quirks`): Basic credentials read without form-decoding, refused credentials answered
 * 403 with an empty body, profile claims only in userinfo, a token endpoint answering 400 with nothing to say.
 */

const logger = pino({ level: 'silent' });
const WRONG_PASSWORD_BODY = { errcode: 'M_FORBIDDEN', error: 'Invalid username/password' };

function settingsFor(op: TestOp, overrides: Partial<ProviderSettings> = {}): ProviderSettings {
  return { idp_id: 'quirky', issuer: op.issuer, client_id: op.clientId, client_secret: op.clientSecret, scopes: ['openid', 'profile', 'offline_access'], ...overrides };
}

function lastTokenRequest(op: TestOp) {
  const found = [...op.requests].reverse().find((record) => record.path === '/token');
  assert.ok(found !== undefined, 'the OP saw no token request');
  return found;
}

describe('client authentication behaves like Synapse (authlib) for the same block', () => {
  let op: TestOp;
  before(async () => {
    op = await startTestOp({
      quirks: { rawBasicCredentials: true },
      redirectUris: ['http://127.0.0.1:1/callback'],
      clients: [
        { clientId: 'post-client', clientSecret: 'post+secret%41~', authMethod: 'client_secret_post' },
        { clientId: 'public-client', authMethod: 'none' },
      ],
    });
  });
  after(() => op.stop());

  test('the quirk is real: openid-client’s RFC 6749 form-encoding (matrix%2Dcompat%2Dproxy) gets 400 with an empty body', async () => {
    const encoded = `${encodeURIComponent(op.clientId).replace(/-/g, '%2D')}:${encodeURIComponent(op.clientSecret).replace(/-/g, '%2D')}`;
    const response = await fetch(`${op.issuer}/token`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(encoded).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'password', username: 'alice', password: op.users.alice.password, scope: 'openid' }).toString(),
    });
    assert.equal(response.status, 400);
    assert.equal(await response.text(), '');
  });

  test('client_secret_basic: the raw header is Basic base64(client_id:client_secret), unescaped, and the OP accepts it', async () => {
    assert.match(op.clientId, /-/, 'the client id has a character openid-client would escape');
    const provider = createUpstreamProvider(settingsFor(op, { client_auth_method: 'client_secret_basic' }), { logger });
    const grant = await provider.passwordGrant('alice', op.users.alice.password);
    assert.equal(grant.sub, op.users.alice.sub);
    assert.equal(lastTokenRequest(op).authorization, `Basic ${Buffer.from(`${op.clientId}:${op.clientSecret}`).toString('base64')}`);
    await provider.refreshGrant(grant.refreshToken ?? '');
    assert.equal(lastTokenRequest(op).authorization, `Basic ${Buffer.from(`${op.clientId}:${op.clientSecret}`).toString('base64')}`);
  });

  test('client_secret_post: credentials in the body, no Authorization header (even with + and % in the secret)', async () => {
    const provider = createUpstreamProvider(settingsFor(op, { client_id: 'post-client', client_secret: 'post+secret%41~', client_auth_method: 'client_secret_post' }), { logger });
    const grant = await provider.passwordGrant('bob', op.users.bob.password);
    assert.equal(grant.sub, op.users.bob.sub);
    assert.equal(lastTokenRequest(op).authorizationHeader, false);
  });

  test('none: a public client sends only its client_id', async () => {
    const provider = createUpstreamProvider(settingsFor(op, { client_id: 'public-client', client_secret: undefined, client_auth_method: 'none' }), { logger });
    const grant = await provider.passwordGrant('alice', op.users.alice.password);
    assert.equal(grant.sub, op.users.alice.sub);
    assert.equal(lastTokenRequest(op).authorizationHeader, false);
  });

  test('client_secret_jwt_key (Synapse’s Apple-style secret): a signed JWT with sub, aud, an hour of validity, reused while fresh', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const clock = new FakeClock(Date.now());
    const provider = createUpstreamProvider(
      settingsFor(op, {
        client_secret: undefined,
        client_auth_method: 'client_secret_basic',
        client_secret_jwt_key: {
          key: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
          jwt_header: { alg: 'ES256', kid: 'apple-key-1' },
          jwt_payload: { iss: 'TEAMID' },
        },
      }),
      { logger, clock },
    );
    // The OP cannot know a secret the proxy signs itself, so it refuses the client; what matters is what was sent.
    await assert.rejects(provider.passwordGrant('alice', op.users.alice.password), UpstreamError);
    const first = Buffer.from((lastTokenRequest(op).authorization ?? '').slice(6), 'base64').toString();
    const [clientId, secret] = [first.slice(0, first.indexOf(':')), first.slice(first.indexOf(':') + 1)];
    assert.equal(clientId, op.clientId);
    const verified = await compactVerify(secret, await importSPKI(publicKey.export({ format: 'pem', type: 'spki' }).toString(), 'ES256'));
    const claims = JSON.parse(new TextDecoder().decode(verified.payload)) as Record<string, number | string>;
    assert.equal(verified.protectedHeader.kid, 'apple-key-1');
    assert.equal(claims['sub'], op.clientId);
    assert.equal(claims['aud'], op.issuer);
    assert.equal(claims['iss'], 'TEAMID');
    assert.equal(Number(claims['exp']) - Number(claims['iat']), 3600);

    clock.advance(49 * 60_000);
    await assert.rejects(provider.passwordGrant('alice', op.users.alice.password), UpstreamError);
    assert.equal(lastTokenRequest(op).authorization, `Basic ${Buffer.from(first).toString('base64')}`, 'reused with more than 10 minutes left');
    clock.advance(2 * 60_000);
    await assert.rejects(provider.passwordGrant('alice', op.users.alice.password), UpstreamError);
    assert.notEqual(lastTokenRequest(op).authorization, `Basic ${Buffer.from(first).toString('base64')}`, 're-signed with less than 10 minutes left');
  });

  test('only what cannot travel as it is gets escaped: a colon in the client id, control and non-ASCII characters', () => {
    const decode = (value: string) => Buffer.from(value.slice(6), 'base64').toString('ascii');
    assert.equal(decode(basicAuthorizationValue('matrix-proxy', 'a-b_c.d~e+f%g:h/i')), 'matrix-proxy:a-b_c.d~e+f%g:h/i');
    assert.equal(decode(basicAuthorizationValue('tenant:app', 's')), 'tenant%3Aapp:s');
    assert.equal(decode(basicAuthorizationValue('app', 'pässwörd\n')), 'app:p%C3%A4ssw%C3%B6rd%0A');
  });
});

describe('token endpoint answers mapped by meaning, through the proxy', () => {
  const clock = new FakeClock(Date.now());
  let h: Harness;
  before(async () => {
    h = await startProxyHarness({
      clock,
      captureLogs: true,
      op: { quirks: { refusedGrantStatus: 403 } },
      configure: (config) => {
        config['log'] = { level: 'info' };
        config['sessions'] = { ...config['sessions'], revalidate_interval: '5m', op_unreachable_grace: '1h' };
      },
    });
  });
  after(() => h.stop());

  const warnings = () => h.logs().filter((line) => line['event'] === 'oidc.op_answer_unusable');

  test('403 with an empty body for a wrong password is a wrong password (403 M_FORBIDDEN), not an outage', async () => {
    const wrong = await h.passwordLogin('alice', 'not-her-password');
    assert.equal(h.op.requests.at(-1)?.status, 403, 'the OP answered 403');
    assert.equal(wrong.status, 403);
    assert.deepEqual(wrong.body, WRONG_PASSWORD_BODY);
    const unknown = await h.passwordLogin('mallory', 'whatever');
    assert.deepEqual(unknown.body, WRONG_PASSWORD_BODY);
    const right = await h.passwordLogin('alice', h.op.users.alice.password);
    assert.equal(right.status, 200, JSON.stringify(right.body));
  });

  test('400 with an empty body is unavailable (503), with one log line quoting it and naming the likely causes', async () => {
    const before = warnings().length;
    h.op.answerTokenRequests({ status: 400 });
    try {
      for (let attempt = 0; attempt < 3; attempt += 1) {
        const answer = await h.passwordLogin('alice', h.op.users.alice.password);
        assert.equal(answer.status, 503, JSON.stringify(answer.body));
        assert.equal(answer.body.errcode, 'M_UNKNOWN');
      }
    } finally {
      h.op.answerTokenRequests(undefined);
    }
    const logged = warnings().slice(before);
    assert.equal(logged.length, 1, 'one line for three identical answers');
    assert.equal(logged[0]?.['status'], 400);
    assert.equal(logged[0]?.['body_start'], '');
    assert.match(String(logged[0]?.['likely_cause']), /client authentication, a disabled grant type or an unknown scope/);
    assert.match(String(logged[0]?.['msg']), /HTTP 400 with an empty body/);
  });

  test('a 401 HTML page names client authentication and quotes the body start', async () => {
    h.op.answerTokenRequests({ status: 401, body: '<html><body><h1>Unauthorized client</h1></body></html>', contentType: 'text/html' });
    try {
      const answer = await h.passwordLogin('bob', h.op.users.bob.password);
      assert.equal(answer.status, 503);
    } finally {
      h.op.answerTokenRequests(undefined);
    }
    const logged = warnings().at(-1);
    assert.equal(logged?.['status'], 401);
    assert.match(String(logged?.['body_start']), /Unauthorized client/);
    assert.match(String(logged?.['likely_cause']), /client authentication/);
  });

  test('re-validation: a 400 quirk keeps the session (grace); a 403 for the refresh token ends it like invalid_grant', async () => {
    const login = await h.passwordLogin('bob', h.op.users.bob.password);
    assert.equal(login.status, 200, JSON.stringify(login.body));
    const sessionId = parseToken(login.body.access_token)?.sessionId ?? '';
    const whoami = async () => {
      h.homeserver.forgetIntrospections();
      const response = await fetch(`${h.homeserver.url}/_matrix/client/v3/account/whoami`, { headers: { authorization: `Bearer ${login.body.access_token}` } });
      await response.body?.cancel();
      return response.status;
    };

    clock.advance(6 * 60_000);
    h.op.answerTokenRequests({ status: 400, body: 'Bad Request', contentType: 'text/plain' });
    try {
      assert.equal(await whoami(), 200, 'an OP quirk never logs a user out');
    } finally {
      h.op.answerTokenRequests(undefined);
    }
    assert.ok((await h.deps.sessions.get(sessionId)) !== undefined);

    // The OP now refuses the refresh token (revoked at the OP) — with its quirk, 403 and an empty body.
    const origin = (await h.deps.sessions.get(sessionId))?.origin;
    assert.ok(origin !== undefined && origin.kind === 'password' && origin.sealedOpRefreshToken !== undefined);
    await h.deps.providers.get('testop')?.revoke(h.deps.keys.open(origin.sealedOpRefreshToken), 'refresh_token');
    clock.advance(6 * 60_000);
    assert.equal(await whoami(), 401);
    assert.equal(h.op.requests.filter((record) => record.path === '/token').at(-1)?.status, 403);
    assert.equal(await h.deps.sessions.get(sessionId), undefined);
  });
});

describe('profile claims only in userinfo (OIDC Core §5.4)', () => {
  let h: Harness;
  before(async () => {
    h = await startProxyHarness({
      captureLogs: true,
      op: { quirks: { profileClaimsOnlyInUserinfo: true } },
      configure: (config) => {
        config['log'] = { level: 'info' };
      },
    });
  });
  after(() => h.stop());

  test('the refusal names the missing claim and suggests user_profile_method: userinfo_endpoint', async () => {
    const answer = await h.passwordLogin('alice', h.op.users.alice.password);
    assert.equal(answer.status, 403);
    const line = h.logs().find((entry) => entry['missing_claims'] !== undefined);
    assert.ok(line !== undefined, 'a log line names the missing claims');
    assert.deepEqual(line['missing_claims'], ['preferred_username', 'name', 'email']);
    assert.match(String(line['msg']), /preferred_username/);
    assert.match(String(line['msg']), /set user_profile_method: userinfo_endpoint/);
  });

  test('with user_profile_method: userinfo_endpoint the same OP logs users in', async () => {
    const fixed = await startProxyHarness({
      op: { quirks: { profileClaimsOnlyInUserinfo: true } },
      configure: (config) => {
        config['oidc_providers'][0]['user_profile_method'] = 'userinfo_endpoint';
      },
    });
    try {
      const answer = await fixed.passwordLogin('alice', fixed.op.users.alice.password);
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      assert.equal(answer.body.user_id, '@alice:example.test');
    } finally {
      await fixed.stop();
    }
  });
});

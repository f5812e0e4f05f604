import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { checkClientMetadata } from '../../src/oauth/client-registration-rules.js';
import { parseMatrixScopes } from '../../src/oauth/matrix-scopes.js';

// The examples are MSC2966's own lists of valid and invalid redirect URIs (client_uri https://example.com/).
const base = {
  client_uri: 'https://example.com/',
  response_types: ['code'],
  grant_types: ['authorization_code', 'refresh_token'],
  token_endpoint_auth_method: 'none',
};
const web = (redirect: string, extra: Record<string, unknown> = {}) => checkClientMetadata({ ...base, redirect_uris: [redirect], ...extra });
const native = (redirect: string) => checkClientMetadata({ ...base, application_type: 'native', redirect_uris: [redirect] });

describe('MSC2966 client registration rules', () => {
  test('web redirect URIs: the MSC valid examples pass', () => {
    for (const uri of ['https://example.com/callback', 'https://app.example.com/callback', 'https://example.com:5173/?query=value']) {
      assert.equal(web(uri).ok, true, uri);
    }
  });

  test('web redirect URIs: the MSC invalid examples, and foreign hosts, are invalid_redirect_uri', () => {
    for (const uri of ['https://example.com/callback#fragment', 'http://example.com/callback', 'http://localhost/', 'https://app.com/callback', 'https://evilexample.com/cb', 'https://user:pw@example.com/cb', 'com.example:/cb']) {
      const result = web(uri);
      assert.equal(result.ok, false, uri);
      if (!result.ok) assert.equal(result.error, 'invalid_redirect_uri', uri);
    }
  });

  test('native redirect URIs: the MSC valid examples pass, claimed https too', () => {
    for (const uri of ['com.example.app:/callback', 'com.example:/', 'com.example:callback', 'http://localhost/callback', 'http://127.0.0.1/callback', 'http://[::1]/callback', 'https://example.com/native']) {
      assert.equal(native(uri).ok, true, uri);
    }
  });

  test('native redirect URIs: the MSC invalid examples are refused', () => {
    for (const uri of ['example:/callback', 'com.example.app://callback', 'https://localhost/callback', 'http://localhost:1234/callback', 'http://localhost:80/callback', 'http://192.168.1.1/cb', 'com.examplex:/cb', 'org.example:/cb', 'com.example:/cb#x']) {
      const result = native(uri);
      assert.equal(result.ok, false, uri);
    }
  });

  test('client_uri is required, https, without user info; other URIs share its host', () => {
    const { client_uri: _dropped, ...withoutClientUri } = base;
    assert.equal(checkClientMetadata({ ...withoutClientUri, redirect_uris: ['https://example.com/cb'] }).ok, false);
    assert.equal(web('https://example.com/cb', { client_uri: 'http://example.com/' }).ok, false);
    assert.equal(web('https://example.com/cb', { client_uri: 'https://u:p@example.com/' }).ok, false);
    assert.equal(web('https://example.com/cb', { logo_uri: 'https://cdn.example.com/logo.png', tos_uri: 'https://example.com/tos', policy_uri: 'https://example.com:8443/p' }).ok, true);
    for (const field of ['logo_uri', 'tos_uri', 'policy_uri', 'tos_uri#fr']) {
      const result = web('https://example.com/cb', { [field]: 'https://other.org/x' });
      assert.equal(result.ok, false, field);
      if (!result.ok) assert.equal(result.error, 'invalid_client_metadata');
      assert.equal(web('https://example.com/cb', { [field]: 'http://example.com/x' }).ok, false, `${field} over http`);
    }
  });

  test('grants: code + refresh required, unknown grant types ignored, public clients only, application_type checked', () => {
    const ok = web('https://example.com/cb', { grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:token-exchange'] });
    assert.ok(ok.ok);
    if (ok.ok) assert.deepEqual(ok.metadata['grant_types'], ['authorization_code', 'refresh_token']);
    assert.equal(web('https://example.com/cb', { grant_types: ['authorization_code'] }).ok, false);
    assert.equal(web('https://example.com/cb', { response_types: ['token'] }).ok, false);
    assert.equal(web('https://example.com/cb', { token_endpoint_auth_method: 'client_secret_basic' }).ok, false);
    assert.equal(web('https://example.com/cb', { application_type: 'desktop' }).ok, false);
    assert.equal(checkClientMetadata({ ...base, redirect_uris: [] }).ok, false);
  });
});

describe('device authorization grant clients (RFC 8628, MSC4341)', () => {
  const DEVICE = 'urn:ietf:params:oauth:grant-type:device_code';
  const device = (extra: Record<string, unknown> = {}) =>
    checkClientMetadata({ client_uri: 'https://example.com/', application_type: 'native', grant_types: [DEVICE, 'refresh_token'], token_endpoint_auth_method: 'none', ...extra });

  test('a device-only client registers without redirect URIs or response types', () => {
    const result = device();
    assert.ok(result.ok);
    if (result.ok) {
      assert.deepEqual(result.metadata['grant_types'], [DEVICE, 'refresh_token']);
      assert.deepEqual(result.metadata['response_types'], []);
      assert.deepEqual(result.metadata['redirect_uris'], []);
    }
    // oidc-provider hands over its client default, an empty list, when none was sent.
    assert.equal(device({ response_types: [] }).ok, true);
  });

  test('refresh is required; code needs the code grant; redirect URIs named anyway follow MSC2966', () => {
    assert.equal(device({ grant_types: [DEVICE] }).ok, false);
    assert.equal(device({ response_types: ['code'] }).ok, false);
    const foreign = device({ redirect_uris: ['https://evil.example/cb'] });
    assert.equal(foreign.ok, false);
    if (!foreign.ok) assert.equal(foreign.error, 'invalid_redirect_uri');
    assert.equal(device({ grant_types: ['refresh_token'] }).ok, false);
  });

  test('code and device grants together: the code rules apply (redirect URIs required)', () => {
    assert.equal(device({ grant_types: ['authorization_code', DEVICE, 'refresh_token'] }).ok, false);
    const both = device({ grant_types: ['authorization_code', DEVICE, 'refresh_token'], redirect_uris: ['com.example:/cb'], response_types: [] });
    assert.ok(both.ok);
    if (both.ok) assert.deepEqual(both.metadata['response_types'], ['code']);
  });
});

describe('MSC2967 scopes', () => {
  test('api and one device scope, both spellings', () => {
    assert.deepEqual(parseMatrixScopes('openid urn:matrix:client:api:* urn:matrix:client:device:ABCDEFGHIJ'), { ok: true, api: true, deviceId: 'ABCDEFGHIJ', others: ['openid'] });
    assert.deepEqual(parseMatrixScopes('urn:matrix:org.matrix.msc2967.client:api:* urn:matrix:org.matrix.msc2967.client:device:a-b.c_d~e'), { ok: true, api: true, deviceId: 'a-b.c_d~e', others: [] });
    assert.deepEqual(parseMatrixScopes('openid'), { ok: true, api: false, deviceId: undefined, others: ['openid'] });
  });

  test('a second device scope is refused, in either spelling, even for the same id', () => {
    for (const scope of [
      'urn:matrix:client:device:AAAAAAAAAA urn:matrix:client:device:BBBBBBBBBB',
      'urn:matrix:client:device:AAAAAAAAAA urn:matrix:org.matrix.msc2967.client:device:AAAAAAAAAA',
    ]) {
      const result = parseMatrixScopes(scope);
      assert.equal(result.ok, false, scope);
      if (!result.ok) assert.equal(result.problem, 'two_device_scopes');
    }
  });

  test('device ids outside the unreserved set, empty or longer than 255 are refused', () => {
    for (const id of ['', 'a/b', 'a:b', 'A@B', 'x'.repeat(256), 'é']) {
      const result = parseMatrixScopes(`urn:matrix:client:device:${id}`);
      assert.equal(result.ok, false, id);
      if (!result.ok) assert.equal(result.problem, 'bad_device_id');
    }
  });
});

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { destinationLabel, formActionSource, isWhitelisted, parseRedirectUrl, withLoginToken } from '../../src/compat/sso/redirect-url.js';

/** Values as the route sees them: already query-decoded (so `%0d%0a` in the request arrives as CR LF here). */
const ACCEPTED: readonly [string, string][] = [
  ['https://app.element.io/#/login', 'a web client with a fragment'],
  ['https://client.evil/', 'a foreign but well-formed URL: the confirmation page protects, not this check'],
  ['http://127.0.0.1:8080/callback?x=1', 'a loopback client with a query'],
  ['im.app://callback', 'a custom scheme (mobile app)'],
  ['io.element.app:/callback', 'a custom scheme without authority'],
  ['https://client.example/cb?name=John%20Doe', 'an encoded space inside a query value'],
  ['HTTPS://Client.Example/', 'an upper-case scheme and host'],
];

const REJECTED: readonly [string | undefined, 'missing' | 'invalid', string][] = [
  [undefined, 'missing', 'no redirectUrl'],
  ['', 'missing', 'an empty redirectUrl'],
  ['//evil.example/', 'invalid', 'a scheme-relative URL'],
  ['/\\evil.example/', 'invalid', 'slash-backslash (browsers read it as //evil)'],
  ['/login', 'invalid', 'a relative path'],
  ['evil.example', 'invalid', 'no scheme'],
  ['javascript:alert(1)', 'invalid', 'javascript:'],
  ['JaVaScRiPt:alert(1)', 'invalid', 'javascript: in mixed case'],
  ['data:text/html,<script>alert(1)</script>', 'invalid', 'data:'],
  ['vbscript:msgbox(1)', 'invalid', 'vbscript:'],
  ['file:///etc/passwd', 'invalid', 'file:'],
  ['https://client.example/\r\nSet-Cookie: x=y', 'invalid', 'CR LF (decoded %0d%0a)'],
  ['https://client.example/%0d%0aSet-Cookie:%20x=y', 'invalid', 'still-encoded CR LF (double encoding)'],
  ['https://client.example/%0D%0A', 'invalid', 'still-encoded CR LF, upper case'],
  ['https://client.example/\t/evil', 'invalid', 'a decoded tab'],
  ['https:/%09/evil.example', 'invalid', 'encoded tab between the slashes (CVE-2020-11053)'],
  ['https://%09/evil.example', 'invalid', 'encoded tab as the host'],
  [' https://client.example/', 'invalid', 'leading whitespace'],
  ['\thttps://client.example/', 'invalid', 'a leading tab'],
  ['https://client.example/\u2028', 'invalid', 'a Unicode line separator'],
  ['https://user:pass@client.example/', 'invalid', 'userinfo'],
  ['https://client.example@evil.example/', 'invalid', 'userinfo that looks like the host'],
  ['https://@evil.example/', 'invalid', 'an empty userinfo'],
  ['im.app://user@callback', 'invalid', 'userinfo in a custom scheme'],
  ['https://', 'invalid', 'https without a host'],
  ['https:evil.example', 'invalid', 'https without slashes (WHATWG would repair it)'],
  ['https:/evil.example', 'invalid', 'https with one slash'],
  ['https:///evil.example', 'invalid', 'https with three slashes'],
  ['https:\\\\evil.example', 'invalid', 'https with backslashes'],
  [`https://client.example/${'a'.repeat(2100)}`, 'invalid', 'longer than 2048 characters'],
];

describe('parseRedirectUrl', () => {
  for (const [raw, why] of ACCEPTED) {
    test(`accepts ${why}: ${raw}`, () => {
      const result = parseRedirectUrl(raw);
      assert.equal(result.ok, true, `${raw} should be accepted`);
    });
  }
  for (const [raw, reason, why] of REJECTED) {
    test(`rejects ${why}`, () => {
      const result = parseRedirectUrl(raw);
      assert.deepEqual(result, { ok: false, reason });
    });
  }
});

describe('withLoginToken', () => {
  test('appends to a URL without a query', () => {
    assert.equal(withLoginToken('https://client.example/cb', 'TOKEN'), 'https://client.example/cb?loginToken=TOKEN');
  });
  test('keeps the existing query byte for byte and appends last', () => {
    assert.equal(
      withLoginToken('https://client.example/cb?a=1&b=%20x+y&c', 'TOKEN'),
      'https://client.example/cb?a=1&b=%20x+y&c&loginToken=TOKEN',
    );
  });
  test('replaces every existing loginToken (plain or encoded name)', () => {
    assert.equal(
      withLoginToken('https://client.example/cb?loginToken=old&a=1&login%54oken=older&loginToken', 'NEW'),
      'https://client.example/cb?a=1&loginToken=NEW',
    );
  });
  test('keeps a parameter that only starts like loginToken', () => {
    assert.equal(withLoginToken('https://c.example/?loginTokens=1', 'T'), 'https://c.example/?loginTokens=1&loginToken=T');
  });
  test('puts the token before the fragment', () => {
    assert.equal(withLoginToken('https://app.example/?x=1#/login?y=2', 'T'), 'https://app.example/?x=1&loginToken=T#/login?y=2');
  });
  test('works for custom schemes', () => {
    assert.equal(withLoginToken('im.app://callback', 'T'), 'im.app://callback?loginToken=T');
  });
  test('drops empty query parts', () => {
    assert.equal(withLoginToken('https://c.example/?', 'T'), 'https://c.example/?loginToken=T');
  });
});

describe('client whitelist and confirmation helpers', () => {
  test('whitelist entries are plain prefixes', () => {
    assert.equal(isWhitelisted('https://app.example/cb', ['https://app.example/']), true);
    assert.equal(isWhitelisted('https://app.example.evil/cb', ['https://app.example/']), false);
    assert.equal(isWhitelisted('https://app.example/cb', []), false);
  });
  test('the confirmation names the host of web URLs and the scheme of apps', () => {
    assert.equal(destinationLabel(new URL('https://Client.Example:8443/x?y')), 'client.example:8443');
    assert.equal(destinationLabel(new URL('im.app://callback')), 'im.app://callback');
    assert.equal(destinationLabel(new URL('io.element.app:/callback')), 'io.element.app');
    assert.equal(destinationLabel(new URL('https://bücher.example/')), 'xn--bcher-kva.example');
  });
  test('form-action allows the origin of web URLs and the scheme otherwise', () => {
    assert.equal(formActionSource(new URL('http://127.0.0.1:8080/cb')), 'http://127.0.0.1:8080');
    assert.equal(formActionSource(new URL('https://client.example/cb')), 'https://client.example');
    assert.equal(formActionSource(new URL('http://[::1]:8080/cb')), 'http:');
    assert.equal(formActionSource(new URL('im.app://callback')), 'im.app:');
  });
});

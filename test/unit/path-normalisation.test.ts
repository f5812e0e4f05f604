import { test } from 'node:test';
import assert from 'node:assert/strict';
import { normaliseMatrixPath, splitRequestTarget } from '../../src/http/path-normalisation.js';

const LOGIN = '/_matrix/client/v3/login';

test('plain paths come back unchanged', () => {
  for (const path of [LOGIN, '/_matrix/client/r0/logout/all', '/_matrix/client/v3/rooms/!a:example.org/messages', '/']) {
    assert.equal(normaliseMatrixPath(path), path);
  }
});

test('variants of an owned route all normalise to it', () => {
  const variants = [
    '/_matrix/client/v3//login',
    '//_matrix///client/v3/login',
    '/_matrix/client/v3/login/',
    '/_matrix/client/v3/login//',
    '/_matrix/client/v3/./login',
    '/_matrix/client/v3/rooms/../login',
    '/_matrix/client/r0/../v3/x/y/../../login',
    '/_matrix/client/v3%2Flogin',
    '/_matrix/client/v3%2flogin',
    '/_matrix/client/v3/%6Cogin',
    '/_matrix/client/v3%252Flogin',
    '/_matrix/client/v3%25252Flogin',
    '/%5Fmatrix/client/v3/login',
    '/_matrix/client/v3/x%2F..%2Flogin',
    '/_matrix/client/v3/x/%2E%2E/login',
    '/_matrix/client/v3/x/%252E%252E/login',
    '/_matrix/client/v3\\login',
    '/_matrix/client/v3%5Clogin',
    '/../_matrix/client/v3/login',
  ];
  for (const variant of variants) assert.equal(normaliseMatrixPath(variant), LOGIN, variant);
});

test('case is significant, so other-case paths are not owned routes', () => {
  assert.equal(normaliseMatrixPath('/_matrix/client/v3/Login'), '/_matrix/client/v3/Login');
  assert.equal(normaliseMatrixPath('/_MATRIX/client/v3/login'), '/_MATRIX/client/v3/login');
});

test('malformed or non-UTF-8 escapes in the raw path are refused', () => {
  for (const path of ['/_matrix/client/v3/login%', '/_matrix/client/v3/log%zzin', '/_matrix/client/v3/%C0%AFlogin', '/a%FF', '/a%E2%9C']) {
    assert.equal(normaliseMatrixPath(path), undefined, path);
  }
});

test('a literal percent sign encoded once stays a percent sign', () => {
  // Room alias #100%:example.org, as a client encodes it in a path.
  assert.equal(normaliseMatrixPath('/_matrix/client/v3/directory/room/%23100%25%3Aexample.org'), '/_matrix/client/v3/directory/room/#100%:example.org');
});

test('unicode escapes decode', () => {
  assert.equal(normaliseMatrixPath('/_matrix/client/v3/directory/room/%23caf%C3%A9%3Ax'), '/_matrix/client/v3/directory/room/#café:x');
});

test('more than three layers of encoding are refused rather than guessed', () => {
  assert.equal(normaliseMatrixPath('/_matrix/client/v3%2525252Flogin'), undefined);
});

test('control characters once decoded are refused', () => {
  for (const path of ['/_matrix/client/v3/login%00', '/_matrix/client/v3/login%0A', '/_matrix/client/v3/login%250D', '/a%7F']) {
    assert.equal(normaliseMatrixPath(path), undefined, path);
  }
});

test('anything but an origin-form path is refused', () => {
  for (const path of ['*', '', 'http://evil.example/_matrix/client/v3/login', '_matrix/client/v3/login', 'example.org:443']) {
    assert.equal(normaliseMatrixPath(path), undefined, path);
  }
});

test('a raw # ends the path, as a hop in front of the homeserver would read it (issue 12 #6)', () => {
  for (const variant of [`${LOGIN}#x`, `${LOGIN}#`, `${LOGIN}#/../../x`, '/_matrix/client/v3//login#?a=b']) assert.equal(normaliseMatrixPath(variant), LOGIN, variant);
  assert.deepEqual(splitRequestTarget(`${LOGIN}#x?y=1`), { rawPath: LOGIN, query: '' });
  assert.deepEqual(splitRequestTarget(`${LOGIN}?a=1#x`), { rawPath: LOGIN, query: '?a=1' });
  assert.deepEqual(splitRequestTarget('/a%23b?c'), { rawPath: '/a%23b', query: '?c' });
});

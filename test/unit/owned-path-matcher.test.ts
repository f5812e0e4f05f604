import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ownedPathMatcher, type OwnedRoute } from '../../src/http/owned-routes.js';
import { OWN_PREFIX } from '../../src/http/own-prefix.js';

/**
 * Which paths the client listener keeps for itself. Parameterised routes are tried only on paths that start with
 * their literal prefix, and the method is compared only for method-only routes: the answers must be those of the
 * patterns alone.
 */

const handler = () => undefined;
const route = (method: OwnedRoute<unknown>['method'], path: string, methodOnly?: true): OwnedRoute<unknown> => ({
  method,
  path,
  listener: 'client',
  style: 'matrix',
  metric: 'other',
  handler,
  ...(methodOnly === undefined ? {} : { methodOnly }),
});

const owns = ownedPathMatcher(
  [
    route('POST', '/_matrix/client/v3/login'),
    route('GET', '/_matrix/client/v3/login/sso/redirect/:idpId'),
    route('DELETE', '/_matrix/client/v3/devices/:deviceId', true),
    route('GET', '/a.b/:x/c'),
    { ...route('GET', '/_matrix/client/v3/homeserver-only'), listener: 'homeserver' },
  ],
  'client',
);

test('exact paths are owned whatever the method, the own prefix and everything under it too', () => {
  assert.equal(owns('/_matrix/client/v3/login', 'GET'), true);
  assert.equal(owns('/_matrix/client/v3/login', 'POST'), true);
  assert.equal(owns(OWN_PREFIX), true);
  assert.equal(owns(`${OWN_PREFIX}/anything`, 'PUT'), true);
  assert.equal(owns(`${OWN_PREFIX}x`), false);
  assert.equal(owns('/_matrix/client/v3/homeserver-only'), false);
});

test('a parameterised route owns its paths with one non-empty segment in the parameter, and nothing near them', () => {
  assert.equal(owns('/_matrix/client/v3/login/sso/redirect/oidc-main'), true);
  assert.equal(owns('/_matrix/client/v3/login/sso/redirect/oidc-main', 'POST'), true);
  assert.equal(owns('/_matrix/client/v3/login/sso/redirect/'), false);
  assert.equal(owns('/_matrix/client/v3/login/sso/redirect/a/b'), false);
  assert.equal(owns('/_matrix/client/v3/login/sso/redirect'), false);
  assert.equal(owns('/_matrix/client/v3/login/sso/redirectx/a'), false);
  // Literal parts are matched literally: `.` is no wildcard.
  assert.equal(owns('/a.b/1/c'), true);
  assert.equal(owns('/aXb/1/c'), false);
  assert.equal(owns('/a.b/1/cd'), false);
});

test('a method-only route owns its method alone, in any case, and passes the others through', () => {
  assert.equal(owns('/_matrix/client/v3/devices/ABC', 'DELETE'), true);
  assert.equal(owns('/_matrix/client/v3/devices/ABC', 'delete'), true);
  assert.equal(owns('/_matrix/client/v3/devices/ABC', 'GET'), false);
  assert.equal(owns('/_matrix/client/v3/devices/ABC', 'PUT'), false);
  assert.equal(owns('/_matrix/client/v3/devices', 'DELETE'), false);
  assert.equal(owns('/_matrix/client/v3/devices/ABC'), false);
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { claimsReadBy, compileUserMapper } from '../../src/identity/user-mapping.js';
import { missingClaimsAdvice } from '../../src/oidc/missing-claims.js';

test('the claims a template reads: dotted, bracketed, filtered and called', () => {
  assert.deepEqual(claimsReadBy('{{ user.preferred_username }}'), ['preferred_username']);
  assert.deepEqual(claimsReadBy("{{ user.email.split('@')[0] }}"), ['email']);
  assert.deepEqual(claimsReadBy('{{ user.first_name }} {{ user["last name"] }} {{ user.name|capitalize }}'), ['first_name', 'last name', 'name']);
  assert.deepEqual(claimsReadBy('{{ username }} {{ other.user }}'), []);
});

test('missing claims: absent, null and empty count; the subject claim too', () => {
  const mapper = compileUserMapper('op', { localpart_template: '{{ user.preferred_username }}', display_name_template: '{{ user.name }}', subject_claim: 'oid' }, 'example.org');
  assert.deepEqual(mapper.missingClaims({ sub: 's', preferred_username: 'alice', name: 'Alice', oid: 'x' }), []);
  assert.deepEqual(mapper.missingClaims({ sub: 's', preferred_username: '', name: null }), ['oid', 'preferred_username', 'name']);
});

test('the advice names the claims and the setting, or the scopes when userinfo was already asked', () => {
  assert.match(missingClaimsAdvice('zitadel', ['preferred_username'], { userinfoSkipped: true }), /no preferred_username claim .* set user_profile_method: userinfo_endpoint/);
  assert.match(missingClaimsAdvice('zitadel', ['email'], { userinfoSkipped: false }), /sent no email claim: request the scope/);
});

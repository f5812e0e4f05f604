import { test } from 'node:test';
import assert from 'node:assert/strict';
import { deriveSessionKeys } from '../../src/sessions/secret-box.js';
import { looksLikeOurToken, mintToken, newSessionId, parseToken, randomString, successorTokens } from '../../src/sessions/tokens.js';

test('minted tokens parse back to their kind and session id', () => {
  const id = newSessionId();
  const access = parseToken(mintToken('access', id));
  const refresh = parseToken(mintToken('refresh', id));
  assert.equal(access?.kind, 'access');
  assert.equal(refresh?.kind, 'refresh');
  assert.equal(access?.sessionId, id);
});

test('garbage, foreign and truncated tokens are rejected without a lookup', () => {
  const token = mintToken('access', newSessionId());
  for (const bad of ['', 'syt_abc_def', token.slice(0, -1), `${token}x`, token.replace('mcpa_', 'mcpr_'), 'mat_' + token.slice(5)]) {
    assert.equal(parseToken(bad), undefined, bad);
  }
  assert.equal(looksLikeOurToken('eyJhbGciOi.native.jwt'), false);
});

test('secrets carry at least 160 bits and do not repeat', () => {
  const seen = new Set<string>();
  for (let i = 0; i < 2000; i++) seen.add(mintToken('access', 'AAAAAAAAAAAAAAAA'));
  assert.equal(seen.size, 2000);
  // 32 base62 characters = 32 * log2(62) ≈ 190 bits.
  assert.ok(32 * Math.log2(62) >= 160);
});

test('randomString draws uniformly from its alphabet', () => {
  const counts = new Map<string, number>();
  const sample = randomString('ABCDEFGHIJKLMNOPQRSTUVWXYZ', 26_000);
  for (const c of sample) counts.set(c, (counts.get(c) ?? 0) + 1);
  assert.equal(counts.size, 26);
  for (const count of counts.values()) assert.ok(count > 800 && count < 1200, `count ${count}`);
});

test('successor tokens are deterministic per refresh token and key, and differ across keys', () => {
  const keysA = deriveSessionKeys('a'.repeat(40));
  const keysB = deriveSessionKeys('b'.repeat(40));
  const id = newSessionId();
  const refresh = mintToken('refresh', id);
  const one = successorTokens(refresh, id, keysA.tokenDerivationKey);
  assert.deepEqual(successorTokens(refresh, id, keysA.tokenDerivationKey), one);
  assert.notDeepEqual(successorTokens(refresh, id, keysB.tokenDerivationKey), one);
  assert.equal(parseToken(one.accessToken)?.sessionId, id);
  assert.equal(parseToken(one.refreshToken)?.kind, 'refresh');
});

test('sealed OP refresh tokens round-trip and detect tampering', () => {
  const keys = deriveSessionKeys('k'.repeat(40));
  const sealed = keys.seal('op-refresh-token-value');
  assert.ok(!sealed.includes('op-refresh-token-value'));
  assert.equal(keys.open(sealed), 'op-refresh-token-value');
  const tampered = sealed.slice(0, -2) + (sealed.endsWith('A') ? 'BB' : 'AA');
  assert.throws(() => keys.open(tampered));
  assert.throws(() => deriveSessionKeys('z'.repeat(40)).open(sealed));
});

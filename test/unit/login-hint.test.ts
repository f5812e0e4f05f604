import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseLoginHint, upstreamLoginHint } from '../../src/identity/login-hint.js';
import type { Binding } from '../../src/identity/bindings.js';

// MSC4198: `mxid:` + a Matrix user id; everything else a hint is allowed to be is ignored, a foreign server refused.
test('parseLoginHint: mxid of this server, another server, and what is ignored', () => {
  assert.deepEqual(parseLoginHint('mxid:@alice:example.test', 'example.test'), { kind: 'user', localpart: 'alice' });
  assert.deepEqual(parseLoginHint('mxid:@Alice:Example.Test', 'example.test'), { kind: 'user', localpart: 'alice' });
  assert.deepEqual(parseLoginHint('mxid:@bob:example.test:8448', 'example.test:8448'), { kind: 'user', localpart: 'bob' });
  assert.deepEqual(parseLoginHint('mxid:@mallory:elsewhere.example', 'example.test'), { kind: 'foreign_server', userId: '@mallory:elsewhere.example' });
  assert.deepEqual(parseLoginHint(undefined, 'example.test'), { kind: 'none' });
  assert.deepEqual(parseLoginHint('', 'example.test'), { kind: 'none' });
  for (const hint of ['alice', 'MXID:@alice:example.test', 'email:alice@example.test', 'mxid:alice', 'mxid:@alice', 'mxid:@:example.test', 'mxid:@alice:', 'mxid:@al ice:example.test', 'mxid:@alice:example.test\n', `mxid:@${'a'.repeat(300)}:example.test`, ['mxid:@alice:example.test'], 42]) {
    assert.deepEqual(parseLoginHint(hint, 'example.test'), { kind: 'ignored' }, JSON.stringify(hint));
  }
});

test("upstreamLoginHint: the localpart by default (no lookup); op_username: the binding's OP user name at this OP, nothing for another OP's account; off", async () => {
  const lookups: string[] = [];
  const bindings = (found: Partial<Binding> | undefined) => ({
    findByLocalpart: async (localpart: string) => {
      lookups.push(localpart);
      return found === undefined ? undefined : ({ issuer: 'https://op', sub: 's', localpart: 'alice', idpId: 'op', createdAt: 0, ...found } as Binding);
    },
  });
  assert.equal(await upstreamLoginHint('localpart', bindings({ opUsername: 'alice@corp.example' }), 'https://op', 'alice'), 'alice');
  assert.deepEqual(lookups, [], 'localpart mode reads no binding (the redirect reveals nothing about the account)');
  assert.equal(await upstreamLoginHint('off', bindings({}), 'https://op', 'alice'), undefined);
  assert.equal(await upstreamLoginHint('op_username', bindings({ opUsername: 'alice@corp.example' }), 'https://op', 'alice'), 'alice@corp.example');
  assert.equal(await upstreamLoginHint('op_username', bindings({}), 'https://op', 'alice'), 'alice');
  assert.equal(await upstreamLoginHint('op_username', bindings({ issuer: 'https://other-op', opUsername: 'x' }), 'https://op', 'alice'), undefined);
  assert.equal(await upstreamLoginHint('op_username', bindings(undefined), 'https://op', 'alice'), 'alice');
});

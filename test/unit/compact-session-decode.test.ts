import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeCompactSession, encodeCompactSession } from '../../src/sessions/compact-session-record.js';
import type { Session } from '../../src/sessions/session.js';
import type { Fields } from '../../src/store/record-format.js';

// decodeCompactSession builds the session field by field (issue 19: no temporary objects per introspection); it must
// give the very object the spread form gave before: same fields, same values, same order (a rewrite re-encodes in
// that order), a newer release's fields kept — an own "__proto__" too, as a field, never as the prototype.

const COMPACT = new Set(['v', 'l', 'd', 'n', 'oc', 'k', 'p', 'is', 'u', 'o', 'r', 'ap', 'lv', 'as', 'ia', 'en', 'ox', 'c', 's', 'a', 'ua', 'h', 'e', 'f', 'x', 'ht']);

/** The spread form of the previous decoder, as the oracle (origin and refresh taken from the decoder's own result). */
function spreadForm(f: Fields, id: string, decoded: Session): unknown {
  const c = f['c'] as number;
  const extra = Object.fromEntries(Object.entries(f).filter(([key]) => !COMPACT.has(key)));
  return {
    ...extra,
    id,
    localpart: f['l'],
    deviceId: f['d'],
    ...(f['n'] === undefined ? {} : { deviceDisplayName: f['n'] }),
    origin: decoded.origin,
    ...(f['oc'] === undefined ? {} : { oauthClientId: f['oc'] }),
    createdAt: c,
    lastSeenAt: c + (f['s'] as number),
    ...(f['a'] === undefined ? {} : { ip: f['a'] }),
    ...(f['ua'] === undefined ? {} : { userAgent: f['ua'] }),
    accessTokenHash: f['h'],
    ...(f['e'] === undefined ? {} : { accessExpiresAt: c + (f['e'] as number) }),
    ...(decoded.refresh === undefined ? {} : { refresh: decoded.refresh }),
    ...(f['ht'] === undefined ? {} : { homeserverToken: f['ht'] }),
    ...(f['x'] === undefined ? {} : { softLoggedOut: { at: c + (f['x'] as number), reason: 'backchannel_logout' } }),
  };
}

const RECORDS: string[] = [
  '{"v":4,"l":"alice","d":"DEV1","p":"op","is":"https://op.example","u":"sub-1","lv":5,"c":1700000000000,"s":10,"h":"hash"}',
  '{"v":4,"l":"bob","d":"DEV2","n":"Phone","oc":"client","k":"s","p":"op","is":"https://op.example","u":"sub-2","o":"sid","r":"sealed","ap":"app","lv":1,"ox":{"later":1},"c":1700000000000,"s":20,"a":"192.0.2.1","ua":"Agent","h":"hash2","e":3600000,"f":[3,"cur",0,1,"old1","old2"],"x":7,"ht":"hstoken"}',
  '{"v":4,"l":"carol","d":"DEV3","k":"a","as":"bridge","c":1,"s":0,"h":"h3","newField":{"a":1},"2":"two","1":"one"}',
  '{"v":4,"l":"dave","d":"DEV4","k":"i","ia":1,"en":99,"c":5,"s":1,"h":"h4","localpart":"shadowed","deviceDisplayName":"from a newer release","id":"not the id"}',
  '{"v":4,"l":"erin","d":"DEV5","p":"op","is":"iss","u":"sub","lv":0,"c":5,"s":1,"h":"h5","__proto__":{"polluted":true},"zzz":null}',
];

test('decodeCompactSession gives the same object, in the same field order, as the spread form', () => {
  for (const raw of RECORDS) {
    const fields = JSON.parse(raw) as Fields;
    const decoded = decodeCompactSession(fields, 'session-id');
    assert.ok(decoded !== undefined, raw);
    const expected = spreadForm(fields, 'session-id', decoded);
    assert.equal(JSON.stringify(decoded), JSON.stringify(expected), raw);
    assert.deepEqual(Object.keys(decoded), Object.keys(expected as object), raw);
    assert.equal(Object.getPrototypeOf(decoded), Object.prototype, raw);
    assert.equal((decoded as unknown as { polluted?: unknown }).polluted, undefined, raw);
    // And a rewrite carries every field through (in the encoder's order: a newer release's field under a known name
    // comes back at the known field's place).
    // (Not for a "__proto__" field: the encoder's `out[key] = value` does not write one — unchanged here.)
    if (!raw.includes('__proto__')) assert.deepEqual(decodeCompactSession(JSON.parse(encodeCompactSession(decoded)) as Fields, 'session-id'), decoded, raw);
  }
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { canonicalIp } from '../../src/http/trusted-proxies.js';

// One client, one spelling: socket addresses (bare, checked first) and X-Forwarded-For entries (brackets, ports,
// spaces) reduce to the same IP, IPv4-mapped IPv6 as IPv4 (http/trusted-proxies.ts).
test('addresses as sockets and X-Forwarded-For give them, reduced to one spelling', () => {
  const cases: [string, string | undefined][] = [
    ['10.0.0.1', '10.0.0.1'],
    [' 10.0.0.1 ', '10.0.0.1'],
    ['10.0.0.1:8080', '10.0.0.1'],
    ['::1', '::1'],
    ['FD00::1', 'fd00::1'],
    ['[fd00::1]', 'fd00::1'],
    ['[FD00::1]:443', 'fd00::1'],
    ['::ffff:10.0.0.1', '10.0.0.1'],
    ['::FFFF:10.0.0.1', '10.0.0.1'],
    ['[::ffff:10.0.0.1]:80', '10.0.0.1'],
    ['::ffff:a00:1', '::ffff:a00:1'],
    ['unknown', undefined],
    ['10.0.0.1:', undefined],
    ['', undefined],
  ];
  for (const [text, expected] of cases) assert.equal(canonicalIp(text), expected, JSON.stringify(text));
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { downstreamResponseHeaders, upstreamRequestHeaders } from '../../src/proxy/forwarded-headers.js';
import { trustedProxies } from '../../src/http/trusted-proxies.js';

/**
 * The hop-by-hop filter of both directions (RFC 9110 §7.6.1), on its fast paths too: a Connection header of just
 * `keep-alive` or `close` names nothing beyond the fixed set, and with the fixed set only a response header is
 * lowered (and looked up) only when its name has the length of one of the set's names.
 */

const FIXED_SET_RESPONSE = [
  'Content-Type', 'application/json',
  'KEEP-ALIVE', 'timeout=5',
  'Transfer-Encoding', 'chunked',
  'Proxy-Authenticate', 'Basic realm="x"',
  'proxy-connection', 'keep-alive',
  'Upgrade', 'h2c',
  'Trailer', 'X-Checksum',
  'TE', 'trailers',
  'X-Private', 'kept: not named in Connection',
  'Set-Cookie', 'a=1',
  'Set-Cookie', 'b=2',
];
const END_TO_END = ['Content-Type', 'application/json', 'X-Private', 'kept: not named in Connection', 'Set-Cookie', 'a=1', 'Set-Cookie', 'b=2'];

test('a response with Connection: keep-alive or close loses the fixed hop-by-hop set whatever its case, and keeps the rest in order', () => {
  for (const connection of [[], ['Connection', 'keep-alive'], ['Connection', 'close'], ['connection', 'keep-alive']]) {
    assert.deepEqual(downstreamResponseHeaders([...connection, ...FIXED_SET_RESPONSE]), END_TO_END, JSON.stringify(connection));
  }
});

test('a response whose Connection names other fields loses those too, however often and in whatever case Connection comes', () => {
  const withPrivate = END_TO_END.filter((_, index) => index !== 2 && index !== 3);
  assert.deepEqual(downstreamResponseHeaders(['Connection', 'Keep-Alive, x-private', ...FIXED_SET_RESPONSE]), withPrivate);
  assert.deepEqual(downstreamResponseHeaders(['Connection', 'keep-alive', 'CONNECTION', 'X-PRIVATE', ...FIXED_SET_RESPONSE]), withPrivate);
  assert.deepEqual(downstreamResponseHeaders(['Connection', 'close', ...FIXED_SET_RESPONSE, 'Connection', 'x-private']), withPrivate);
});

/** The headers upstreamRequestHeaders makes of a real request sent with these headers. */
async function forwardedHeadersOf(headers: Record<string, string>): Promise<IncomingHttpHeaders> {
  let seen: IncomingHttpHeaders | undefined;
  const server = createServer((req, res) => {
    seen = upstreamRequestHeaders(req, trustedProxies([]));
    res.end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const { port } = server.address() as AddressInfo;
    await new Promise<void>((resolve, reject) => {
      const sent = request({ host: '127.0.0.1', port, path: '/', headers, agent: false }, (response) => {
        response.resume();
        response.on('end', resolve);
      });
      sent.on('error', reject);
      sent.end();
    });
  } finally {
    server.close();
  }
  assert.ok(seen !== undefined);
  return seen;
}

test('a request with Connection: keep-alive or close loses the fixed hop-by-hop set, and a field Connection names goes too', async () => {
  const sent = { 'Keep-Alive': 'timeout=9', 'Proxy-Authorization': 'Basic Zm9vOmJhcg==', 'Proxy-Connection': 'keep-alive', TE: 'trailers', Upgrade: 'websocket', 'X-Private': 'p', 'X-End-To-End': 'kept' };
  for (const connection of ['keep-alive', 'close', 'Keep-Alive, X-Private']) {
    const headers = await forwardedHeadersOf({ ...sent, Connection: connection });
    for (const name of ['connection', 'keep-alive', 'proxy-authorization', 'proxy-connection', 'te', 'upgrade']) assert.equal(headers[name], undefined, `${connection}: ${name}`);
    assert.equal(headers['x-end-to-end'], 'kept');
    assert.equal(headers['x-private'], connection.includes('X-Private') ? undefined : 'p', connection);
    assert.equal(headers['x-forwarded-for'], '127.0.0.1');
  }
});

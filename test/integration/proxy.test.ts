import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { Agent, createServer, request, type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pipeline } from 'node:stream/promises';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { pino } from 'pino';
import { clientIp } from '../../src/http/client-address.js';
import { createHomeserverProxy, type HomeserverProxyOptions, type UpstreamErrorKind } from '../../src/proxy/homeserver-proxy.js';
import { freePort } from '../support/free-port.js';
import { hashStream, patternStream, startUpstream, type RecordedRequest, type Upstream } from '../support/upstream-server.js';

interface Forwarder {
  readonly url: string;
  readonly port: number;
  readonly upstreamErrors: UpstreamErrorKind[];
  /** clientIp() of every request, as the app would compute it for rate limiting. */
  readonly clientIps: string[];
  close(): Promise<void>;
}

/** A bare node:http server that hands every request to the proxy (the app's routing is tested elsewhere). */
async function startForwarder(options: Partial<HomeserverProxyOptions> & { target: string }): Promise<Forwarder> {
  const upstreamErrors: UpstreamErrorKind[] = [];
  const clientIps: string[] = [];
  const trustedProxies = options.trustedProxies ?? [];
  const proxy = createHomeserverProxy({
    trustedProxies,
    upstreamTimeoutMs: 10_000,
    syncTimeoutMs: 10_000,
    logger: pino({ level: process.env['MCP_TEST_LOG'] === '1' ? 'debug' : 'silent' }),
    onUpstreamError: (kind) => upstreamErrors.push(kind),
    ...options,
  });
  const server = createServer((req, res) => {
    clientIps.push(clientIp(req, trustedProxies));
    proxy.forward(req, res);
  });
  server.requestTimeout = 0;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    upstreamErrors,
    clientIps,
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
      proxy.close();
    },
  };
}

interface Reply {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly rawHeaders: readonly string[];
  readonly trailers: NodeJS.Dict<string>;
  readonly body: Buffer;
}

/** One request with node:http, which (unlike fetch) sends paths and headers exactly as given. */
async function send(
  port: number,
  path: string,
  options: { method?: string; headers?: OutgoingHttpHeaders; body?: string | Buffer } = {},
): Promise<Reply> {
  const req = request({ host: '127.0.0.1', port, path, method: options.method ?? 'GET', headers: options.headers ?? {}, agent: false });
  req.end(options.body);
  const [res] = (await once(req, 'response')) as [IncomingMessage];
  const chunks: Buffer[] = [];
  for await (const chunk of res) chunks.push(chunk as Buffer);
  return { status: res.statusCode ?? 0, headers: res.headers, rawHeaders: res.rawHeaders, trailers: res.trailers, body: Buffer.concat(chunks) };
}

function json(reply: Reply): any {
  return JSON.parse(reply.body.toString('utf8'));
}

function lastRequest(upstream: Upstream): RecordedRequest {
  const recorded = upstream.requests.at(-1);
  assert.ok(recorded, 'the upstream saw no request');
  return recorded;
}

describe('homeserver proxy against a real upstream', () => {
  let upstream: Upstream;
  let forwarder: Forwarder;

  before(async () => {
    upstream = await startUpstream();
    forwarder = await startForwarder({ target: upstream.url });
  });
  after(async () => {
    await forwarder.close();
    await upstream.close();
  });

  test('GET of a JSON body passes status, headers and body through', async () => {
    const reply = await send(forwarder.port, '/_upstream/json');
    assert.equal(reply.status, 200);
    assert.equal(reply.headers['content-type'], 'application/json');
    assert.equal(Number(reply.headers['content-length']), reply.body.length);
    assert.ok(reply.body.length > 2000);
    assert.equal(json(reply).start, 's1');
  });

  test('paths and query strings arrive byte for byte', async () => {
    const targets = [
      '/_matrix/client/v3/rooms/%21room%3Aexample.org/messages?from=t1%2F2&dir=b&filter=%7B%22a%22%3A1%7D',
      '/_matrix/client/v3/search?q=a+b%20c&next=%2F%2f&u=%E2%9C%93&empty=&flag',
      '/_matrix/media/v3/download/example.org/abc/caf%C3%A9.png?allow_redirect=true',
      '/_matrix/client/v3//double//slashes/?x=1?y=2',
      '/_matrix/media/v3/preview_url/http:/example.org?url=https%3A%2F%2Fexample.org%2F%3Fa%3Db',
      '/_matrix/client/v3/x/../y/./z\\w',
    ];
    for (const target of targets) {
      const reply = await send(forwarder.port, target);
      assert.equal(reply.status, 200, target);
      assert.equal(lastRequest(upstream).url, target);
    }
  });

  test('a path prefix in the target is kept in front of the request path', async () => {
    const prefixed = await startForwarder({ target: `${upstream.url}/homeserver/` });
    try {
      const reply = await send(prefixed.port, '/_matrix/client/versions?x=%2F');
      assert.equal(reply.status, 200);
      assert.equal(lastRequest(upstream).url, '/homeserver/_matrix/client/versions?x=%2F');
    } finally {
      await prefixed.close();
    }
  });

  test('HEAD, PUT and DELETE keep their method and body', async () => {
    const head = await send(forwarder.port, '/_matrix/client/v3/pushrules/', { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.headers['x-echo-method'], 'HEAD');
    assert.ok(Number(head.headers['content-length']) > 0);
    assert.equal(head.body.length, 0);
    assert.equal(lastRequest(upstream).method, 'HEAD');

    const putBody = JSON.stringify({ msgtype: 'm.text', body: 'héllo' });
    const put = await send(forwarder.port, '/_matrix/client/v3/rooms/%21r%3Ax/send/m.room.message/txn1', {
      method: 'PUT',
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(putBody) },
      body: putBody,
    });
    assert.equal(put.status, 200);
    assert.equal(json(put).method, 'PUT');
    assert.equal(json(put).bodyLength, Buffer.byteLength(putBody));

    const deleteBody = JSON.stringify({ auth: { type: 'm.login.password' } });
    const del = await send(forwarder.port, '/_matrix/client/v3/devices/ABC', {
      method: 'DELETE',
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(deleteBody) },
      body: deleteBody,
    });
    assert.equal(json(del).method, 'DELETE');
    assert.equal(json(del).bodyLength, Buffer.byteLength(deleteBody));
  });

  test('a chunked request body stays framed, whatever the method', async () => {
    for (const method of ['PUT', 'POST', 'DELETE', 'OPTIONS', 'GET']) {
      const before = upstream.requests.length;
      // Bytes that would be read as a second request if the proxy dropped the framing.
      const body = `{"a":1}GET /_matrix/smuggled HTTP/1.1\r\nHost: x\r\n\r\n`;
      const reply = await send(forwarder.port, `/_matrix/client/v3/chunked-${method}`, {
        method,
        headers: { 'transfer-encoding': 'chunked', 'content-type': 'application/json' },
        body,
      });
      assert.equal(reply.status, 200, method);
      const seen = upstream.requests.slice(before);
      assert.deepEqual(seen.map((entry) => entry.url), [`/_matrix/client/v3/chunked-${method}`], method);
      assert.equal(seen[0]?.bodyLength, Buffer.byteLength(body), method);
      assert.equal(seen[0]?.headers['transfer-encoding'], 'chunked', method);
      assert.equal(seen[0]?.headers['content-length'], undefined, method);
    }
  });

  test('a body keeps its framing when the client names Content-Length in Connection', async () => {
    const before = upstream.requests.length;
    const body = `{"a":1}GET /_matrix/smuggled HTTP/1.1\r\nHost: x\r\n\r\n`;
    const reply = await send(forwarder.port, '/_matrix/client/v3/named-length', {
      headers: { Connection: 'Content-Length', 'Content-Length': Buffer.byteLength(body) },
      body,
    });
    assert.equal(reply.status, 200);
    const seen = upstream.requests.slice(before);
    assert.deepEqual(seen.map((entry) => entry.url), ['/_matrix/client/v3/named-length']);
    assert.equal(seen[0]?.bodyLength, Buffer.byteLength(body));
  });

  test('transfer codings before chunked still reach the upstream', async () => {
    const reply = await send(forwarder.port, '/_matrix/client/v3/coded', {
      method: 'POST',
      headers: { 'Transfer-Encoding': 'gzip, chunked' },
      body: 'pretend this is gzip',
    });
    assert.equal(reply.status, 200);
    assert.equal(lastRequest(upstream).headers['transfer-encoding'], 'gzip, chunked');
    assert.equal(lastRequest(upstream).bodyLength, 'pretend this is gzip'.length);
  });

  test('a client expecting 100-continue gets it, and the upstream gets the body', async () => {
    const body = JSON.stringify({ hello: 'world' });
    const req = request({
      host: '127.0.0.1',
      port: forwarder.port,
      path: '/_matrix/client/v3/expects',
      method: 'POST',
      headers: { Expect: '100-continue', 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) },
      agent: false,
    });
    req.once('continue', () => req.end(body));
    const [res] = (await once(req, 'response')) as [IncomingMessage];
    res.resume();
    assert.equal(res.statusCode, 200);
    assert.equal(lastRequest(upstream).bodyLength, Buffer.byteLength(body));
    assert.equal(lastRequest(upstream).headers.expect, undefined);
  });

  test('a chunked response streams through before the upstream has finished it', { timeout: 5000 }, async () => {
    const req = request({ host: '127.0.0.1', port: forwarder.port, path: '/_upstream/chunked?chunks=3&hold=1', agent: false });
    req.end();
    const [res] = (await once(req, 'response')) as [IncomingMessage];
    assert.equal(res.headers['content-length'], undefined);
    assert.equal(res.headers['transfer-encoding'], 'chunked');
    const received: string[] = [];
    for await (const chunk of res) {
      received.push(String(chunk));
      // The last chunk is only sent once we have seen the first two: a buffering proxy would hang here.
      if (received.join('') === 'chunk-0\nchunk-1\n') upstream.release();
    }
    assert.equal(received.join(''), 'chunk-0\nchunk-1\nchunk-2\n');
  });

  test('hop-by-hop request headers, and those named in Connection, do not reach the upstream', async () => {
    // POST with a chunked body: Node only lets a request declare a Trailer when its body is chunked.
    await send(forwarder.port, '/_matrix/client/v3/hop', {
      method: 'POST',
      body: '{}',
      headers: {
        'Transfer-Encoding': 'chunked',
        Connection: 'keep-alive, X-Client-Private',
        'X-Client-Private': 'for the proxy only',
        'Keep-Alive': 'timeout=9',
        'Proxy-Authorization': 'Basic Zm9vOmJhcg==',
        'Proxy-Connection': 'keep-alive',
        TE: 'trailers',
        Trailer: 'X-Client-Checksum',
        Upgrade: 'websocket',
        'X-End-To-End': 'kept',
        Authorization: 'Bearer end-to-end',
      },
    });
    const headers = lastRequest(upstream).headers;
    for (const name of ['x-client-private', 'keep-alive', 'proxy-authorization', 'proxy-connection', 'te', 'trailer', 'upgrade']) {
      assert.equal(headers[name], undefined, name);
    }
    assert.doesNotMatch(String(headers.connection), /x-client-private/i);
    assert.equal(headers['x-end-to-end'], 'kept');
    assert.equal(headers.authorization, 'Bearer end-to-end');
  });

  test('hop-by-hop response headers, those named in Connection, and trailers do not reach the client', async () => {
    const reply = await send(forwarder.port, '/_upstream/hop-by-hop');
    assert.equal(reply.status, 200);
    assert.equal(reply.body.toString(), 'hop-by-hop body');
    for (const name of ['x-upstream-private', 'proxy-authenticate', 'proxy-connection', 'upgrade', 'trailer']) {
      assert.equal(reply.headers[name], undefined, name);
    }
    // Our own hop may send Keep-Alive and Connection, but not the upstream's values.
    assert.notEqual(reply.headers['keep-alive'], 'timeout=77');
    assert.doesNotMatch(String(reply.headers.connection), /x-upstream-private/i);
    assert.deepEqual(reply.trailers, {});
    assert.equal(reply.headers['x-end-to-end'], 'kept');
    assert.deepEqual(reply.headers['set-cookie'], ['a=1', 'b=2']);
  });

  test('X-Forwarded-* from an untrusted peer are replaced, Forwarded and X-Real-IP dropped', async () => {
    await send(forwarder.port, '/_matrix/client/v3/whoami', {
      headers: {
        'X-Forwarded-For': '6.6.6.6',
        'X-Forwarded-Proto': 'https',
        'X-Forwarded-Host': 'evil.example',
        'X-Forwarded-Port': '1',
        Forwarded: 'for=6.6.6.6;proto=https',
        'X-Real-IP': '6.6.6.6',
      },
    });
    const headers = lastRequest(upstream).headers;
    assert.equal(headers['x-forwarded-for'], '127.0.0.1');
    assert.equal(headers['x-forwarded-proto'], 'http');
    assert.equal(headers['x-forwarded-host'], `127.0.0.1:${forwarder.port}`);
    assert.equal(headers['x-forwarded-port'], undefined);
    assert.equal(headers.forwarded, undefined);
    assert.equal(headers['x-real-ip'], undefined);
    assert.equal(forwarder.clientIps.at(-1), '127.0.0.1');
  });

  test('the upstream connection is kept alive across sequential requests', async () => {
    const before = upstream.connectionCount;
    for (let index = 0; index < 20; index++) {
      const reply = await send(forwarder.port, `/_matrix/client/v3/keepalive/${index}`);
      assert.equal(reply.status, 200);
    }
    const opened = upstream.connectionCount - before;
    assert.ok(opened <= 2, `opened ${opened} upstream connections for 20 requests`);
    const used = new Set(upstream.requests.slice(-20).map((entry) => entry.connection));
    assert.ok(used.size <= 2, `20 requests used ${used.size} upstream connections`);
  });

  test('a client that leaves a waiting request makes the proxy drop the upstream request', async () => {
    const abandoned = once(upstream.events, 'abandoned');
    const seen = once(upstream.events, 'request');
    const req = request({ host: '127.0.0.1', port: forwarder.port, path: '/_upstream/hang', agent: false });
    req.on('error', () => {});
    req.end();
    await seen;
    const left = performance.now();
    req.destroy();
    assert.deepEqual(await abandoned, ['/_upstream/hang']);
    // Far below the 10 s upstream timeout, which would also end it eventually.
    const waited = performance.now() - left;
    assert.ok(waited < 1000, `the upstream request lived on for ${waited} ms`);
    assert.deepEqual(forwarder.upstreamErrors, []);
  });
});

describe('homeserver proxy with 100 MB bodies', () => {
  const SIZE = 100 * 1024 * 1024;
  // Buffering a body would add 100 MB or more; streaming stays within a few socket buffers plus GC slack.
  const MAX_RSS_GROWTH_MB = 20;
  let upstream: Upstream;
  let forwarder: Forwarder;
  let expected: { length: number; sha256: string };
  let gc: CollectGarbage;

  before(async () => {
    upstream = await startUpstream();
    forwarder = await startForwarder({ target: upstream.url });
    expected = await hashStream(patternStream(SIZE));
    gc = exposeGc();
    // Warm up both directions so one-off allocations (parsers, agent, JIT, malloc arenas) do not count as growth.
    await upload(forwarder.port, 16 * 1024 * 1024);
    await download(forwarder.port, 16 * 1024 * 1024);
  });
  after(async () => {
    await forwarder.close();
    await upstream.close();
  });

  test('a 100 MB upload arrives intact while memory stays flat', async () => {
    const memory = new MemoryProbe(gc);
    const result = await upload(forwarder.port, SIZE, () => memory.step());
    assert.equal(result.bodyLength, SIZE);
    assert.equal(result.bodySha256, expected.sha256);
    memory.assertFlat('upload', MAX_RSS_GROWTH_MB);
  });

  test('a 100 MB download arrives intact while memory stays flat', async () => {
    const memory = new MemoryProbe(gc);
    const result = await download(forwarder.port, SIZE, () => memory.step());
    assert.deepEqual(result, expected);
    memory.assertFlat('download', MAX_RSS_GROWTH_MB);
  });
});

/** The client reports progress every PROGRESS_STEP bytes; every FULL_GC_EVERY steps the probe also runs a full GC. */
const PROGRESS_STEP = 1024 * 1024;
const FULL_GC_EVERY = 16;

/**
 * Peak RSS above a collected baseline while a transfer runs. Every socket read lands in a fresh 64 KiB buffer that V8
 * frees late (tens of MB later, more on a busy machine: 0 to 55 MB measured with or without the proxy in the path),
 * and malloc keeps the pages. So the probe collects as the transfer goes, at fixed points of the client's progress
 * rather than on a timer: a scavenge per step for the buffers that die young, a full collection now and then for
 * the few promoted while in flight. What remains is what the proxy holds.
 */
class MemoryProbe {
  private readonly baselineRss: number;
  private peakRss: number;
  private steps = 0;

  constructor(private readonly gc: CollectGarbage) {
    gc();
    this.baselineRss = process.memoryUsage.rss();
    this.peakRss = this.baselineRss;
  }

  step(): void {
    this.steps += 1;
    this.gc(this.steps % FULL_GC_EVERY === 0 ? undefined : { type: 'minor' });
    this.peakRss = Math.max(this.peakRss, process.memoryUsage.rss());
  }

  assertFlat(label: string, maxGrowthMb: number): void {
    const growthMb = (this.peakRss - this.baselineRss) / 1024 / 1024;
    console.log(`# 100 MB ${label} through the proxy: peak RSS +${growthMb.toFixed(1)} MB (${this.steps} samples)`);
    assert.ok(this.steps >= 90, `only ${this.steps} samples`);
    assert.ok(growthMb < maxGrowthMb, `${label}: RSS grew by ${growthMb.toFixed(1)} MB`);
  }
}

/** V8's gc() as exposed by --expose-gc: a full collection, or a scavenge of the young generation only. */
type CollectGarbage = (options?: { type: 'minor' | 'major' }) => void;

/** Calls `onStep` each time another PROGRESS_STEP bytes have gone by. */
function progressMeter(onStep: () => void): (bytes: number) => void {
  let total = 0;
  return (bytes) => {
    const stepsBefore = Math.floor(total / PROGRESS_STEP);
    total += bytes;
    for (let step = stepsBefore; step < Math.floor(total / PROGRESS_STEP); step++) onStep();
  };
}

async function upload(port: number, bytes: number, onStep: () => void = () => {}): Promise<RecordedRequest> {
  const req = request({
    host: '127.0.0.1',
    port,
    path: '/_matrix/media/v3/upload?filename=big.bin',
    method: 'POST',
    headers: { 'content-type': 'application/octet-stream', 'content-length': bytes },
    agent: false,
  });
  const response = once(req, 'response') as Promise<[IncomingMessage]>;
  const progress = progressMeter(onStep);
  await pipeline(
    patternStream(bytes),
    async function* (source: AsyncIterable<Buffer>) {
      for await (const chunk of source) {
        progress(chunk.length);
        yield chunk;
      }
    },
    req,
  );
  const [res] = await response;
  assert.equal(res.statusCode, 200);
  const chunks: Buffer[] = [];
  for await (const chunk of res) chunks.push(chunk as Buffer);
  return JSON.parse(Buffer.concat(chunks).toString('utf8')) as RecordedRequest;
}

async function download(port: number, bytes: number, onStep: () => void = () => {}): Promise<{ length: number; sha256: string }> {
  const req = request({ host: '127.0.0.1', port, path: `/_upstream/download?bytes=${bytes}`, agent: false });
  req.end();
  const [res] = (await once(req, 'response')) as [IncomingMessage];
  assert.equal(res.statusCode, 200);
  assert.equal(Number(res.headers['content-length']), bytes);
  const progress = progressMeter(onStep);
  return hashStream(
    (async function* () {
      for await (const chunk of res) {
        progress((chunk as Buffer).length);
        yield chunk as Buffer;
      }
    })(),
  );
}

/** The test runner does not start node with --expose-gc. */
function exposeGc(): CollectGarbage {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as CollectGarbage;
}

describe('homeserver proxy timeouts and failures', () => {
  let upstream: Upstream;
  let forwarder: Forwarder;

  before(async () => {
    upstream = await startUpstream();
    forwarder = await startForwarder({ target: upstream.url, upstreamTimeoutMs: 300, syncTimeoutMs: 2000 });
  });
  after(async () => {
    await forwarder.close();
    await upstream.close();
  });

  test('a slow upstream within the timeout is answered normally', async () => {
    const reply = await send(forwarder.port, '/_upstream/slow?delay=100');
    assert.equal(reply.status, 200);
    assert.deepEqual(json(reply), { slow: true });
    assert.deepEqual(forwarder.upstreamErrors, []);
  });

  test('a silent upstream gets 504 M_UNKNOWN as JSON', async () => {
    const started = performance.now();
    const reply = await send(forwarder.port, '/_upstream/hang');
    const elapsed = performance.now() - started;
    assert.equal(reply.status, 504);
    assert.equal(reply.headers['content-type'], 'application/json');
    assert.equal(json(reply).errcode, 'M_UNKNOWN');
    assert.equal(typeof json(reply).error, 'string');
    assert.ok(elapsed >= 250 && elapsed < 2000, `answered after ${elapsed} ms`);
    assert.deepEqual(forwarder.upstreamErrors.splice(0), ['timeout']);
  });

  test('/sync waits for the long-poll timeout, other requests do not', async () => {
    const sync = await send(forwarder.port, '/_matrix/client/v3/sync?timeout=30000&upstream_delay_ms=600');
    assert.equal(sync.status, 200);
    const slidingSync = await send(forwarder.port, '/_matrix/client/unstable/org.matrix.simplified_msc3575/sync?upstream_delay_ms=600');
    assert.equal(slidingSync.status, 200);
    const other = await send(forwarder.port, '/_matrix/client/v3/rooms?upstream_delay_ms=600');
    assert.equal(other.status, 504);
    assert.deepEqual(forwarder.upstreamErrors.splice(0), ['timeout']);
  });

  test('an upstream that stalls after the headers makes the proxy cut the client connection', async () => {
    const req = request({ host: '127.0.0.1', port: forwarder.port, path: '/_upstream/stall?bytes=4096', agent: false });
    req.end();
    const [res] = (await once(req, 'response')) as [IncomingMessage];
    assert.equal(res.statusCode, 200);
    await assert.rejects(async () => {
      for await (const _chunk of res) {
        // drain until the proxy gives up
      }
    });
    assert.deepEqual(forwarder.upstreamErrors.splice(0), ['timeout']);
  });

  test('a closed upstream port gets 502 M_UNKNOWN as JSON', async () => {
    const closed = await startForwarder({ target: `http://127.0.0.1:${await freePort()}` });
    const keepAlive = new Agent({ keepAlive: true });
    try {
      const reply = await send(closed.port, '/_matrix/client/v3/sync');
      assert.equal(reply.status, 502);
      assert.equal(reply.headers['content-type'], 'application/json');
      assert.equal(json(reply).errcode, 'M_UNKNOWN');
      assert.deepEqual(closed.upstreamErrors, ['unreachable']);

      // The answer comes while the body is still on its way: the socket must not be reused with it half read.
      const upload = request({
        host: '127.0.0.1',
        port: closed.port,
        path: '/_matrix/media/v3/upload',
        method: 'POST',
        headers: { 'content-length': 100_000 },
        // A keep-alive client: with agent: false node would ask for Connection: close itself.
        agent: keepAlive,
      });
      upload.on('error', () => {});
      upload.write('x'.repeat(10));
      const [partial] = (await once(upload, 'response')) as [IncomingMessage];
      assert.equal(partial.statusCode, 502);
      assert.equal(partial.headers.connection, 'close');
      upload.destroy();
    } finally {
      keepAlive.destroy();
      await closed.close();
    }
  });
});

describe('homeserver proxy behind trusted proxies', () => {
  let upstream: Upstream;
  let forwarder: Forwarder;

  before(async () => {
    upstream = await startUpstream();
    forwarder = await startForwarder({ target: upstream.url, trustedProxies: ['127.0.0.1/32', '10.0.0.0/8', '::1/128'] });
  });
  after(async () => {
    await forwarder.close();
    await upstream.close();
  });

  test("a trusted peer's chain is kept and extended with the peer", async () => {
    await send(forwarder.port, '/_matrix/client/v3/whoami', {
      headers: { 'X-Forwarded-For': '203.0.113.9, 10.1.1.1', 'X-Forwarded-Proto': 'https', 'X-Forwarded-Host': 'matrix.example.org' },
    });
    const headers = lastRequest(upstream).headers;
    assert.equal(headers['x-forwarded-for'], '203.0.113.9, 10.1.1.1, 127.0.0.1');
    assert.equal(headers['x-forwarded-proto'], 'https');
    assert.equal(headers['x-forwarded-host'], 'matrix.example.org');
    assert.equal(forwarder.clientIps.at(-1), '203.0.113.9');
  });

  test('without a chain the trusted peer starts one', async () => {
    await send(forwarder.port, '/_matrix/client/v3/whoami');
    assert.equal(lastRequest(upstream).headers['x-forwarded-for'], '127.0.0.1');
    assert.equal(lastRequest(upstream).headers['x-forwarded-proto'], 'http');
    assert.equal(forwarder.clientIps.at(-1), '127.0.0.1');
  });

  test('clientIp is the right-most address that is not a trusted proxy', async () => {
    const cases: Array<[string, string]> = [
      ['198.51.100.1, 203.0.113.9, 10.1.1.1', '203.0.113.9'],
      ['10.2.2.2, 10.1.1.1', '10.2.2.2'],
      ['203.0.113.9:4711, 10.1.1.1', '203.0.113.9'],
      ['2001:db8::1, ::1', '2001:db8::1'],
      ['[2001:db8::2]:443', '2001:db8::2'],
      ['::ffff:203.0.113.7', '203.0.113.7'],
      ['not-an-address, 10.1.1.1', '10.1.1.1'],
      ['203.0.113.9, not-an-address', '127.0.0.1'],
    ];
    for (const [chain, expected] of cases) {
      await send(forwarder.port, '/_matrix/client/v3/whoami', { headers: { 'X-Forwarded-For': chain } });
      assert.equal(forwarder.clientIps.at(-1), expected, chain);
    }
  });
});

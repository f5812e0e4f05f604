import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { Readable } from 'node:stream';

/** One request as the upstream saw it: the request line and headers as received, the body as length and hash. */
export interface RecordedRequest {
  readonly method: string;
  /** The request-target exactly as it arrived (Node decodes the request line as latin1, byte for byte). */
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly rawHeaders: readonly string[];
  readonly bodyLength: number;
  readonly bodySha256: string;
  /** Which TCP connection carried it (1 = the first one accepted). */
  readonly connection: number;
}

export interface Upstream {
  readonly url: string;
  readonly port: number;
  /** Every request whose body was read to the end, in order. */
  readonly requests: RecordedRequest[];
  /** TCP connections accepted so far. */
  readonly connectionCount: number;
  /** 'request' (RecordedRequest) for every recorded request; 'abandoned' (url) when a client left a hung request. */
  readonly events: EventEmitter;
  /** Lets responses waiting with `hold=1` finish. */
  release(): void;
  close(): Promise<void>;
}

/**
 * A real HTTP server on 127.0.0.1 standing in for the homeserver in proxy tests and benchmarks.
 *
 * Any path not under /_upstream/ is echoed: JSON of the recorded request (HEAD: headers only); the query parameter
 * `upstream_delay_ms` delays the answer. Special routes:
 *   /_upstream/json                         a fixed ~2 KB JSON body
 *   /_upstream/download?bytes=N             N bytes of patternStream(N), generated as the client reads
 *   /_upstream/chunked?chunks=N[&hold=1]    N chunks without Content-Length; with hold, the last waits for release()
 *   /_upstream/slow?delay=MS                JSON after MS milliseconds
 *   /_upstream/hang                         reads the request, never answers
 *   /_upstream/stall?bytes=N                headers announcing N bytes, half of them, then nothing
 *   /_upstream/hop-by-hop                   a response full of hop-by-hop headers and a trailer
 */
export async function startUpstream(): Promise<Upstream> {
  const requests: RecordedRequest[] = [];
  const events = new EventEmitter();
  const connectionIds = new WeakMap<Socket, number>();
  let connectionCount = 0;
  let releaseHeld: () => void = () => {};
  let held = new Promise<void>((resolve) => (releaseHeld = resolve));

  const server = createServer((req, res) => {
    void hashStream(req).then(({ length, sha256 }) => {
      const recorded: RecordedRequest = {
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        rawHeaders: req.rawHeaders,
        bodyLength: length,
        bodySha256: sha256,
        connection: connectionIds.get(req.socket) ?? 0,
      };
      requests.push(recorded);
      events.emit('request', recorded);
      return route(req, res, recorded);
    }).catch(() => res.destroy());
  });
  server.on('connection', (socket: Socket) => {
    connectionCount += 1;
    connectionIds.set(socket, connectionCount);
  });

  async function route(req: IncomingMessage, res: ServerResponse, recorded: RecordedRequest): Promise<void> {
    const url = new URL(recorded.url, 'http://upstream.invalid');
    const number = (name: string, fallback: number) => Number(url.searchParams.get(name) ?? fallback);
    switch (url.pathname) {
      case '/_upstream/json':
        return sendJson(res, 200, TWO_KB_JSON);
      case '/_upstream/download': {
        const bytes = number('bytes', 0);
        res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': bytes });
        patternStream(bytes).pipe(res);
        return;
      }
      case '/_upstream/chunked': {
        const chunks = number('chunks', 3);
        res.writeHead(200, { 'Content-Type': 'text/plain' });
        for (let index = 0; index < chunks; index++) {
          if (index === chunks - 1 && url.searchParams.get('hold') === '1') await held;
          res.write(`chunk-${index}\n`);
          await new Promise((resolve) => setImmediate(resolve));
        }
        res.end();
        return;
      }
      case '/_upstream/slow':
        await delay(number('delay', 0));
        return sendJson(res, 200, { slow: true });
      case '/_upstream/hang':
        res.once('close', () => events.emit('abandoned', recorded.url));
        return;
      case '/_upstream/stall': {
        const bytes = number('bytes', 1024);
        res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': bytes });
        res.write(Buffer.alloc(Math.floor(bytes / 2), 0x61));
        return;
      }
      case '/_upstream/hop-by-hop':
        res.writeHead(200, [
          'Content-Type', 'text/plain',
          'Connection', 'X-Upstream-Private',
          'X-Upstream-Private', 'only for the proxy',
          'Keep-Alive', 'timeout=77',
          'Proxy-Authenticate', 'Basic realm="upstream"',
          'Proxy-Connection', 'keep-alive',
          'Upgrade', 'h2c',
          'Trailer', 'X-Checksum',
          'X-End-To-End', 'kept',
          'Set-Cookie', 'a=1',
          'Set-Cookie', 'b=2',
        ]);
        res.addTrailers({ 'X-Checksum': 'abc' });
        res.end('hop-by-hop body');
        return;
      default: {
        await delay(number('upstream_delay_ms', 0));
        const body = JSON.stringify(recorded);
        if (req.method === 'HEAD') {
          res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), 'X-Echo-Method': 'HEAD' });
          res.end();
          return;
        }
        return sendJson(res, 200, recorded);
      }
    }
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    requests,
    get connectionCount() {
      return connectionCount;
    },
    events,
    release() {
      releaseHeld();
      held = new Promise<void>((resolve) => (releaseHeld = resolve));
    },
    async close() {
      releaseHeld();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
    },
  };
}

const CHUNK_BYTES = 64 * 1024;
const PATTERN = (() => {
  const pattern = Buffer.alloc(CHUNK_BYTES);
  let block = createHash('sha256').update('upstream-pattern').digest();
  for (let offset = 0; offset < CHUNK_BYTES; offset += block.length) {
    block.copy(pattern, offset);
    block = createHash('sha256').update(block).digest();
  }
  return pattern;
})();

/**
 * `bytes` deterministic bytes, produced as they are read (nothing is held beyond one 64 KiB chunk). Each chunk
 * carries its index, so reordered or repeated chunks change the hash.
 */
export function patternStream(bytes: number): Readable {
  let produced = 0;
  let index = 0;
  return new Readable({
    highWaterMark: CHUNK_BYTES,
    read() {
      if (produced >= bytes) {
        this.push(null);
        return;
      }
      const size = Math.min(CHUNK_BYTES, bytes - produced);
      const chunk = Buffer.allocUnsafe(size);
      PATTERN.copy(chunk, 0, 0, size);
      if (size >= 8) chunk.writeUInt32BE(index, 0);
      produced += size;
      index += 1;
      this.push(chunk);
    },
  });
}

/** Length and SHA-256 of a stream, consumed as it flows. */
export async function hashStream(stream: AsyncIterable<Buffer | string>): Promise<{ length: number; sha256: string }> {
  const hash = createHash('sha256');
  let length = 0;
  for await (const chunk of stream) {
    const buffer = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    hash.update(buffer);
    length += buffer.length;
  }
  return { length, sha256: hash.digest('hex') };
}

const TWO_KB_JSON = {
  chunk: [],
  start: 's1',
  end: 's2',
  padding: 'x'.repeat(2000),
};

function sendJson(res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

function delay(ms: number): Promise<void> {
  return ms > 0 ? new Promise((resolve) => setTimeout(resolve, ms)) : Promise.resolve();
}

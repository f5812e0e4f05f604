import { test } from 'node:test';
import assert from 'node:assert/strict';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { outboundFetch, outboundRequest } from '../../src/outbound/http-client.js';

/** The outbound client against a real local server: what callers relied on from fetch still holds. */

type Handler = (request: IncomingMessage, response: ServerResponse, body: string) => void;

async function withServer(handler: Handler, run: (base: string, server: http.Server) => Promise<void>): Promise<void> {
  const sockets = new Set<Socket>();
  const server = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => handler(request, response, Buffer.concat(chunks).toString('utf8')));
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    await run(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, server);
  } finally {
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

test('status, headers and body come back; a JSON POST arrives with its body, headers and length', async () => {
  await withServer(
    (request, response, body) => {
      response.setHeader('content-type', 'application/json');
      response.setHeader('set-cookie', ['a=1', 'b=2']);
      response.statusCode = 201;
      response.end(JSON.stringify({ method: request.method, body, type: request.headers['content-type'], length: request.headers['content-length'], auth: request.headers['authorization'], agent: request.headers['user-agent'] }));
    },
    async (base) => {
      const answer = await outboundFetch(`${base}/x`, { method: 'POST', headers: { 'Content-Type': 'application/json', authorization: 'Bearer s' }, body: '{"é":1}' });
      assert.equal(answer.status, 201);
      assert.equal(answer.headers.get('content-type'), 'application/json');
      assert.deepEqual(answer.headers.getSetCookie(), ['a=1', 'b=2']);
      assert.deepEqual(await answer.json(), { method: 'POST', body: '{"é":1}', type: 'application/json', length: '8', auth: 'Bearer s', agent: 'matrix-compat-proxy' });
    },
  );
});

test('a form body (URLSearchParams) is sent form-encoded, as fetch does', async () => {
  await withServer(
    (request, response, body) => response.end(JSON.stringify({ type: request.headers['content-type'], body })),
    async (base) => {
      const answer = await outboundRequest(`${base}/token`, { method: 'POST', body: new URLSearchParams({ grant_type: 'password', username: 'a b' }) });
      assert.deepEqual(JSON.parse(answer.body.toString()), { type: 'application/x-www-form-urlencoded;charset=UTF-8', body: 'grant_type=password&username=a+b' });
    },
  );
});

test('204 has a null body; a 3xx is refused with redirect "error" and returned as it is with "manual"', async () => {
  await withServer(
    (request, response) => {
      if (request.url === '/empty') {
        response.statusCode = 204;
        response.end();
        return;
      }
      response.statusCode = 302;
      response.setHeader('location', 'http://127.0.0.1:9/elsewhere');
      response.end('moved');
    },
    async (base) => {
      const empty = await outboundFetch(`${base}/empty`);
      assert.equal(empty.status, 204);
      assert.equal(empty.body, null);
      await assert.rejects(outboundFetch(`${base}/moved`), (error: unknown) => error instanceof TypeError && error.message === 'fetch failed' && /unexpected redirect \(302\)/.test(String((error.cause as Error).message)));
      const manual = await outboundFetch(`${base}/moved`, { redirect: 'manual' });
      assert.equal(manual.status, 302);
      assert.equal(manual.headers.get('location'), 'http://127.0.0.1:9/elsewhere');
    },
  );
});

test('a timeout rejects with the signal reason (TimeoutError); an unreachable server with TypeError("fetch failed") and the socket error as cause', async () => {
  await withServer(
    () => {
      /* never answers */
    },
    async (base) => {
      await assert.rejects(outboundFetch(`${base}/slow`, { signal: AbortSignal.timeout(50) }), (error: unknown) => error instanceof Error && error.name === 'TimeoutError');
    },
  );
  const closed = http.createServer();
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
  const port = (closed.address() as AddressInfo).port;
  await new Promise<void>((resolve) => closed.close(() => resolve()));
  await assert.rejects(outboundFetch(`http://127.0.0.1:${port}/`), (error: unknown) => error instanceof TypeError && error.message === 'fetch failed' && (error.cause as NodeJS.ErrnoException).code === 'ECONNREFUSED');
  await assert.rejects(outboundFetch('ftp://127.0.0.1/'), (error: unknown) => error instanceof TypeError && error.message === 'fetch failed');
});

test('an answer cut off before its end rejects instead of returning a truncated body', async () => {
  await withServer(
    (_request, response) => {
      response.setHeader('content-length', '100');
      response.write('{"partial":');
      setTimeout(() => response.socket?.destroy(), 20);
    },
    async (base) => {
      await assert.rejects(outboundRequest(`${base}/cut`), (error: unknown) => error instanceof TypeError && error.message === 'fetch failed');
    },
  );
});

test('connections are kept alive and reused; a reused socket reset before any answer is retried once only when the request may be sent twice', async () => {
  const portsSeen: number[] = [];
  const handled: string[] = [];
  let dropNextReused = false;
  await withServer(
    (request, response) => {
      const port = request.socket.remotePort ?? 0;
      if (dropNextReused && portsSeen.includes(port)) {
        // The server's side of an idle-timeout race: the kept-alive socket is closed as the request arrives.
        dropNextReused = false;
        request.socket.destroy();
        return;
      }
      portsSeen.push(port);
      handled.push(`${request.method} ${request.url}`);
      response.end('ok');
    },
    async (base) => {
      assert.equal((await outboundRequest(`${base}/1`)).body.toString(), 'ok');
      assert.equal((await outboundRequest(`${base}/2`)).body.toString(), 'ok');
      assert.equal(portsSeen[0], portsSeen[1], 'the second call reused the first call’s connection');
      // GET: idempotent by definition, retried on a new connection.
      dropNextReused = true;
      assert.equal((await outboundRequest(`${base}/3`)).body.toString(), 'ok');
      assert.notEqual(portsSeen.at(-1), portsSeen[0], 'the retry went out on a new connection');
      // A POST (a password or refresh grant) is never sent twice: the reset is the caller's failure, as with fetch.
      dropNextReused = true;
      await assert.rejects(outboundRequest(`${base}/grant`, { method: 'POST', body: 'x' }), (error: unknown) => error instanceof TypeError && (error.cause as NodeJS.ErrnoException).code === 'ECONNRESET');
      assert.equal(handled.includes('POST /grant'), false);
      // A POST its caller declares idempotent (Synapse's /_synapse/mas upserts) is retried.
      await outboundRequest(`${base}/warm`);
      dropNextReused = true;
      assert.equal((await outboundRequest(`${base}/upsert`, { method: 'POST', body: 'x', idempotent: true })).body.toString(), 'ok');
      assert.equal(handled.filter((line) => line === 'POST /upsert').length, 1);
    },
  );
});

test('an answer reset after it began is never retried, even for a GET; answers over 2 MiB are refused', async () => {
  let calls = 0;
  await withServer(
    (request, response) => {
      calls += 1;
      if (request.url === '/big') {
        response.end(Buffer.alloc(3 * 1024 * 1024, 0x61));
        return;
      }
      if (calls === 1) {
        response.end('warm');
        return;
      }
      response.setHeader('content-length', '100');
      response.write('half');
      setTimeout(() => request.socket.resetAndDestroy(), 20);
    },
    async (base) => {
      await outboundRequest(`${base}/warm`);
      await assert.rejects(outboundRequest(`${base}/cut`), (error: unknown) => error instanceof TypeError && error.message === 'fetch failed');
      assert.equal(calls, 2);
      await assert.rejects(outboundRequest(`${base}/big`), (error: unknown) => error instanceof TypeError && /larger than/.test(String((error.cause as Error).message)));
    },
  );
});

test('requests ask for an uncompressed answer', async () => {
  await withServer(
    (request, response) => response.end(String(request.headers['accept-encoding'])),
    async (base) => {
      assert.equal((await outboundRequest(`${base}/`, { headers: { 'accept-encoding': 'gzip' } })).body.toString(), 'identity');
    },
  );
});

/**
 * outboundFetch keeps the answer's bytes in memory and reads them without a web stream (BufferedResponse); every
 * sequence of body operations below must come out as it does on the platform's own `new Response(bytes)`: values,
 * errors (by class), and `bodyUsed` after each step. These are the Fetch semantics oauth4webapi relies on (a second
 * read rejected, `clone().json()` then `body?.cancel()` on an error answer, `bodyUsed` checked before a read).
 */
type BodyStep = 'json' | 'text' | 'arrayBuffer' | 'bytes' | 'blob' | 'formData' | 'clone' | 'clone+json' | 'clone+text' | 'cancel' | 'stream' | 'body-null';

async function runStep(response: Response, step: BodyStep): Promise<unknown> {
  switch (step) {
    case 'json':
      return response.json();
    case 'text':
      return response.text();
    case 'arrayBuffer':
      return [...new Uint8Array(await response.arrayBuffer())];
    case 'bytes':
      return [...(await response.bytes())];
    case 'blob': {
      const blob = await response.blob();
      return { type: blob.type, text: await blob.text() };
    }
    case 'formData':
      return [...(await response.formData()).entries()];
    case 'clone': {
      const copy = response.clone();
      return { instance: copy instanceof Response, status: copy.status, type: copy.headers.get('content-type'), used: copy.bodyUsed };
    }
    case 'clone+json':
      return response.clone().json();
    case 'clone+text':
      return response.clone().text();
    case 'cancel':
      return response.body?.cancel();
    case 'stream': {
      const chunks: number[] = [];
      const reader = response.body!.getReader();
      for (let part = await reader.read(); !part.done; part = await reader.read()) chunks.push(...part.value);
      reader.releaseLock();
      return chunks;
    }
    case 'body-null':
      return { nullBody: response.body === null, locked: response.body?.locked };
  }
}

async function outcomes(response: Response, steps: readonly BodyStep[]): Promise<unknown[]> {
  const seen: unknown[] = [{ used: response.bodyUsed, instance: response instanceof Response, tag: Object.prototype.toString.call(response) }];
  for (const step of steps) {
    let outcome: unknown;
    try {
      outcome = { value: await runStep(response, step) };
    } catch (error: unknown) {
      outcome = { error: (error as Error).constructor.name };
    }
    seen.push({ step, ...(outcome as object), used: response.bodyUsed });
  }
  return seen;
}

const BODIES: readonly { readonly name: string; readonly type: string; readonly bytes: Buffer }[] = [
  { name: 'JSON', type: 'application/json', bytes: Buffer.from('{"access_token":"a","token_type":"Bearer","é":[1,2]}') },
  { name: 'JSON with a BOM', type: 'application/json;charset=utf-8', bytes: Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('{"a":"ü"}')]) },
  { name: 'not JSON', type: 'text/html', bytes: Buffer.from('<html>Bad Gateway</html>') },
  { name: 'malformed UTF-8', type: 'application/json', bytes: Buffer.from([0x22, 0xc3, 0x28, 0xe2, 0x82, 0x22, 0xff, 0xf0, 0x9f, 0x98]) },
  { name: 'empty', type: 'application/json', bytes: Buffer.alloc(0) },
  { name: 'a form', type: 'application/x-www-form-urlencoded', bytes: Buffer.from('a=1&b=%C3%A9&a=2') },
];

const SEQUENCES: readonly (readonly BodyStep[])[] = [
  ['json', 'json', 'text', 'clone'],
  ['text', 'arrayBuffer', 'bytes', 'blob'],
  ['clone+json', 'cancel', 'json', 'clone'],
  ['clone+text', 'clone', 'text', 'json'],
  ['arrayBuffer', 'stream', 'body-null', 'cancel'],
  ['bytes', 'body-null', 'clone'],
  ['body-null', 'json', 'text'],
  ['stream', 'json', 'clone', 'body-null'],
  ['cancel', 'text', 'clone'],
  ['blob', 'json', 'body-null'],
  ['formData', 'text'],
  ['clone', 'clone+json', 'clone+text', 'json', 'clone+json'],
];

test('the Response outboundFetch returns reads its body as a platform Response does: once, clone, cancel, bodyUsed', async () => {
  await withServer(
    (request, response) => {
      const body = BODIES.find((candidate) => `/${encodeURIComponent(candidate.name)}` === request.url)!;
      response.writeHead(200, 'Fine', { 'content-type': body.type, 'content-length': body.bytes.length });
      response.end(body.bytes);
    },
    async (base) => {
      for (const body of BODIES) {
        for (const steps of SEQUENCES) {
          const answer = await outboundFetch(`${base}/${encodeURIComponent(body.name)}`);
          assert.equal(answer.statusText, 'Fine');
          const reference = new Response(new Uint8Array(body.bytes), { status: answer.status, statusText: answer.statusText, headers: answer.headers });
          assert.deepEqual(await outcomes(answer, steps), await outcomes(reference, steps), `${body.name}: ${steps.join(', ')}`);
        }
      }
    },
  );
});

test('a clone of an unread answer reads independently of the original; each reads once', async () => {
  await withServer(
    (_request, response) => {
      response.setHeader('content-type', 'application/json');
      response.end('{"error":"invalid_grant"}');
    },
    async (base) => {
      const answer = await outboundFetch(`${base}/token`);
      const copy = answer.clone();
      assert.deepEqual(await copy.json(), { error: 'invalid_grant' });
      assert.equal(copy.bodyUsed, true);
      assert.equal(answer.bodyUsed, false);
      assert.equal(await answer.text(), '{"error":"invalid_grant"}');
      await assert.rejects(answer.json(), TypeError);
      await assert.rejects(copy.text(), TypeError);
      assert.throws(() => answer.clone(), TypeError);
    },
  );
});

test('timeoutMs: past it the call rejects with the TimeoutError AbortSignal.timeout gives; an answer in time clears the timer', async () => {
  await withServer(
    (request, response) => {
      if (request.url === '/slow') return; // never answers
      response.end('{"ok":true}');
    },
    async (base) => {
      const started = performance.now();
      await assert.rejects(outboundRequest(`${base}/slow`, { timeoutMs: 80 }), (error: unknown) => error instanceof DOMException && error.name === 'TimeoutError' && error.message === 'The operation was aborted due to timeout');
      assert.ok(performance.now() - started >= 75, 'not before the limit');
      await assert.rejects(outboundFetch(`${base}/slow`, { timeoutMs: 50, signal: new AbortController().signal }), (error: unknown) => error instanceof DOMException && error.name === 'TimeoutError');
      const timers = () => process.getActiveResourcesInfo().filter((kind) => kind === 'Timeout').length;
      const before = timers();
      assert.deepEqual(await (await outboundFetch(`${base}/fast`, { timeoutMs: 60_000 })).json(), { ok: true });
      assert.equal(timers(), before);
    },
  );
});

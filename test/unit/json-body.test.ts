import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import type { AddressInfo } from 'node:net';
import Koa from 'koa';
import { renderErrors } from '../../src/errors/render.js';
import { readBodyText } from '../../src/http/body.js';

test('a body trickled slower than its deadline gets a 408 before the connection is closed', async () => {
  const app = new Koa();
  app.use(renderErrors(() => 'matrix'));
  app.use(async (ctx) => {
    ctx.body = { length: (await readBodyText(ctx, { maxBytes: 1024, deadlineMs: 200 })).length };
  });
  const server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const { port } = server.address() as AddressInfo;
  try {
    const started = Date.now();
    const socket = connect(port, '127.0.0.1');
    socket.write('POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{');
    const received = await new Promise<string>((resolve) => {
      let text = '';
      socket.on('data', (chunk) => (text += chunk.toString()));
      socket.on('close', () => resolve(text));
    });
    assert.ok(Date.now() - started < 5000, 'the connection was released');
    assert.match(received, /^HTTP\/1\.1 408 /);
    assert.match(received, /connection: close/i);
    assert.match(received, /"errcode":"M_UNKNOWN"/);
  } finally {
    server.close();
  }
});

/** A Koa app answering the length of the body it read (or the error), on loopback; closed by the caller. */
async function bodyLengthServer(maxBytes: number, options: { readLater?: boolean } = {}) {
  const app = new Koa();
  app.use(renderErrors(() => 'matrix'));
  app.use(async (ctx) => {
    // As a route that awaits something first: by then Node's parser has seen the whole message (`complete`).
    if (options.readLater === true) await new Promise((resolve) => setTimeout(resolve, 20));
    const text = await readBodyText(ctx, { maxBytes, deadlineMs: 2000 });
    ctx.body = { length: text.length, text };
  });
  const server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  return { server, port: (server.address() as AddressInfo).port };
}

/** Writes `parts` with a pause between them and returns everything the server sent until it closed or answered. */
async function exchange(port: number, parts: readonly string[], latin1: boolean): Promise<string> {
  const socket = connect(port, '127.0.0.1');
  let text = '';
  socket.on('data', (chunk) => (text += chunk.toString()));
  const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
  for (const [index, part] of parts.entries()) {
    if (index > 0) await new Promise((resolve) => setTimeout(resolve, 50));
    // Chunked pieces carry raw bytes (latin1 strings); a Content-Length body is UTF-8 text.
    socket.write(part, latin1 ? 'latin1' : 'utf8');
  }
  await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, 500))]);
  socket.destroy();
  return text;
}

// Two ways a body is read (http/body.ts): whole in the request's buffer when the route asks (a small body in the
// packet of its headers), or still arriving. Both must give the same text and the same limit.
const FRAMINGS = {
  'Content-Length': { head: (body: string) => `POST / HTTP/1.1\r\nHost: x\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n`, body: (text: string) => text },
  chunked: {
    head: () => 'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n',
    // In pieces of 4 bytes at most, so a multi-byte character may be split across chunks.
    body: (text: string) => {
      const bytes = Buffer.from(text);
      let out = '';
      for (let at = 0; at < bytes.length; at += 4) {
        const piece = bytes.subarray(at, at + 4);
        out += `${piece.length.toString(16)}\r\n${piece.toString('latin1')}\r\n`;
      }
      return `${out}0\r\n\r\n`;
    },
  },
} as const;

for (const arrival of ['with its headers', 'after them'] as const) {
  const send = (head: string, body: string) => (arrival === 'with its headers' ? [head + body] : [head, body]);

  for (const [framing, frame] of Object.entries(FRAMINGS)) for (const readLater of [false, true]) {
    test(`a ${framing} body that arrives ${arrival} is read whole, multi-byte characters intact${readLater ? ', read later' : ''}`, async () => {
      const { server, port } = await bodyLengthServer(1024, { readLater });
      try {
        const text = 'token=mcpa_\u00e9\u20ac_x&token_type_hint=access_token';
        const received = await exchange(port, send(frame.head(text), frame.body(text)), framing === 'chunked');
        assert.match(received, /^HTTP\/1\.1 200 /);
        assert.ok(received.includes(JSON.stringify({ length: text.length, text })), received);
      } finally {
        server.close();
      }
    });
  }

  for (const readLater of [false, true])
  test(`a chunked body larger than the limit that arrives ${arrival} is 413 M_TOO_LARGE and closes the connection${readLater ? ', read later' : ''}`, async () => {
    const { server, port } = await bodyLengthServer(16, { readLater });
    try {
      const received = await exchange(port, send(FRAMINGS.chunked.head(), FRAMINGS.chunked.body('a'.repeat(20))), false);
      assert.match(received, /^HTTP\/1\.1 413 /);
      assert.match(received, /connection: close/i);
      assert.match(received, /"errcode":"M_TOO_LARGE"/);
    } finally {
      server.close();
    }
  });
}

test('a request without a body reads as the empty string', async () => {
  const { server, port } = await bodyLengthServer(16);
  try {
    const received = await exchange(port, ['POST / HTTP/1.1\r\nHost: x\r\n\r\n'], false);
    assert.match(received, /^HTTP\/1\.1 200 /);
    assert.ok(received.includes('{"length":0,"text":""}'), received);
  } finally {
    server.close();
  }
});

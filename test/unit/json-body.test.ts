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

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import type { AddressInfo } from 'node:net';
import Koa from 'koa';
import { renderMatrixErrors } from '../../src/errors/error-middleware.js';
import { readBodyText } from '../../src/http/body.js';

test('a body trickled slower than its deadline gets 408 and the connection is not held', async () => {
  const app = new Koa();
  app.use(renderMatrixErrors);
  app.use(async (ctx) => {
    ctx.body = { length: (await readBodyText(ctx, 1024, 200)).length };
  });
  const server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const { port } = server.address() as AddressInfo;
  try {
    const started = Date.now();
    const socket = connect(port, '127.0.0.1');
    socket.write('POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{');
    const closed = await new Promise<string>((resolve) => {
      let received = '';
      socket.on('data', (chunk) => (received += chunk.toString()));
      socket.on('close', () => resolve(received));
    });
    assert.ok(Date.now() - started < 5000, 'the connection was released');
    assert.ok(closed === '' || /^HTTP\/1\.1 408/.test(closed), closed);
  } finally {
    server.close();
  }
});

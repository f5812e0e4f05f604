import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';
import { createLogger } from '../../src/observability/logger.js';

/**
 * The logger's redaction against pino's own, configured as the proxy had it before: the same secret names at the
 * top of a line, the same names one level inside every field through pino's wildcard paths (`*.token`), and the
 * request and response header paths. Every line below must come out byte for byte the same from both loggers
 * (the time field aside), and no value marked SECRET may appear in either unless it sits deeper than the paths reach.
 */
const PINO_WILDCARD_PATHS = [
  'authorization',
  'password',
  'access_token',
  'refresh_token',
  'login_token',
  'loginToken',
  'token',
  'client_secret',
  'secret',
  '*.authorization',
  '*.password',
  '*.access_token',
  '*.refresh_token',
  '*.token',
  '*.client_secret',
  '*.secret',
  'req.headers.authorization',
  'req.headers.cookie',
  'res.headers["set-cookie"]',
];

function capture(): { sink: Writable; lines: string[] } {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      lines.push(String(chunk).replace(/"time":"[^"]*",/, ''));
      done();
    },
  });
  return { sink, lines };
}

function pinoReference(sink: Writable): Logger {
  return pino({ level: 'trace', base: { service: 'matrix-compat-proxy' }, redact: { paths: PINO_WILDCARD_PATHS, censor: '[redacted]' }, timestamp: pino.stdTimeFunctions.isoTime }, sink);
}

class Credentials {
  token = 'SECRET-class-token';
  user = 'alice';
  get derived(): string {
    return 'from the prototype';
  }
}

function errorWith(message: string, extra: Record<string, unknown>): Error {
  return Object.assign(new Error(message), extra);
}

// Made once, so that both loggers log the same stacks.
const BOOM = errorWith('boom', { token: 'SECRET-et', code: 'E_BOOM', status: 401, nested: { password: 'deeper-than-the-paths' } });
const DIRECT = errorWith('direct', { secret: 'SECRET-ds', detail: 'x' });
const CAUSED = new Error('outer', { cause: errorWith('inner', { access_token: 'SECRET-cause' }) });

/** Representative lines: what the proxy logs, and every case the wildcard paths exist for. */
function logEverything(log: Logger): void {
  log.info({ event: 'login.ok', localpart: 'alice', device_id: 'DEV', idp_id: 'op' }, 'login.ok');
  log.info({
    event: 'all.top',
    authorization: 'SECRET-a',
    password: 'SECRET-p',
    access_token: 'SECRET-at',
    refresh_token: 'SECRET-rt',
    login_token: 'SECRET-lt',
    loginToken: 'SECRET-lT',
    token: 'SECRET-t',
    client_secret: 'SECRET-cs',
    secret: 'SECRET-s',
  });
  log.warn(
    {
      body: { password: 'SECRET-bp', username: 'alice', token: 'SECRET-bt', nested: { token: 'deeper-than-the-paths' } },
      headers: { authorization: 'Bearer SECRET-h', 'x-other': '1' },
      upstream: { client_secret: 'SECRET-ucs', secret: 'SECRET-us', access_token: 'SECRET-uat', refresh_token: 'SECRET-urt', login_token: 'not-a-nested-name' },
      plain: { ok: true, count: 2 },
    },
    'nested',
  );
  log.info({ list: [{ token: 'in-an-array-not-a-path' }], empty: [], number: 3, text: 'token=abc', nothing: null, yes: true, nan: Number.NaN, inf: Infinity, undef: undefined, fn: () => 1 }, 'values');
  log.info({ token: { a: 1 }, password: 42, secret: null, authorization: ['a'], client_secret: undefined, access_token: () => 1, refresh_token: Number.NaN }, 'top secrets of every type');
  log.error({ err: BOOM }, 'failed');
  log.error(DIRECT);
  log.error({ err: CAUSED, event: 'caused' }, 'with a cause');
  log.error({ err: 'not an error', token: 'SECRET-t2' }, 'err as a string');
  log.info({ req: { method: 'GET', url: '/x', headers: { authorization: 'Bearer SECRET-rq', cookie: 'SECRET-c', host: 'h' }, password: 'SECRET-rqp' } }, 'request-shaped');
  log.info({ res: { statusCode: 200, headers: { 'set-cookie': ['SECRET-sc'], 'content-type': 'application/json' }, token: 'SECRET-rst' } }, 'response-shaped');
  log.info({ req: { headers: 'not an object' }, res: null }, 'odd request and response');
  const inherited = Object.create({ token: 'inherited-not-own' }) as Record<string, unknown>;
  inherited['x'] = 1;
  const hidden = { y: 2 };
  Object.defineProperty(hidden, 'token', { value: 'non-enumerable', enumerable: false });
  log.info({ inherited, hidden, instance: new Credentials(), when: Object.assign(new Date(0), { token: 'on-a-date' }) }, 'prototypes');
  log.info({ custom: { token: 'SECRET-json', toJSON(this: { token: string }) { return { shown: this.token }; } }, bare: Object.assign(Object.create(null) as object, { password: 'SECRET-np', keep: 1 }) }, 'toJSON and no prototype');
  const child = log.child({ token: 'SECRET-bound', context: { password: 'SECRET-bcp', ok: 1 }, component: 'x' });
  child.info({ a: 1, inner: { secret: 'SECRET-cis' } }, 'child');
  child.child({ request_id: 'r1' }).warn('grandchild');
  // Bindings set later, and a child's own log formatter and serializers: pino's paths ran after all of them.
  const rebound = log.child({ component: 'y' });
  rebound.setBindings({ context: { token: 'SECRET-set-bindings' } });
  rebound.info('set bindings');
  log.child({}, { formatters: { log: (fields: object) => fields } }).info({ body: { token: 'SECRET-child-formatter' } }, 'child formatter');
  log
    .child({}, { serializers: { err: (error: Error) => ({ message: error.message, ...(error as unknown as Record<string, unknown>) }), upstream: (value: { raw: unknown }) => value.raw } })
    .error({ err: Object.assign(new Error('m'), { token: 'SECRET-child-err' }), upstream: { raw: { password: 'SECRET-child-serializer' } } }, 'child serializers');
  log.info('value %j and %o', { token: 'SECRET-ft', inner: { secret: 'SECRET-fis' }, deep: { a: { token: 'deeper-than-the-paths' } } }, [{ password: 'SECRET-fap' }, 'plain']);
  log.info({ a: 1 }, 'with %j', { body: { token: 'SECRET-fbt' }, list: [{ token: 'in-an-array-not-a-path' }] });
  log.info('line "quoted"\n\ttabbed \\ back');
  log.debug({ event: 'é ü 😀', value: 'x'.repeat(150) }, 'unicode and long');
}

test('redaction: every line comes out exactly as with pino’s wildcard paths', async () => {
  const ours = capture();
  const theirs = capture();
  logEverything(createLogger('trace', ours.sink));
  logEverything(pinoReference(theirs.sink));

  // A real request logged as it is (pino turns it into `req` with its headers).
  const server = http.createServer((request, response) => {
    createLogger('trace', ours.sink).info(request, 'incoming');
    pinoReference(theirs.sink).info(request, 'incoming');
    response.end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const { port } = server.address() as AddressInfo;
    await fetch(`http://127.0.0.1:${port}/path?q=1`, { headers: { authorization: 'Bearer SECRET-real', cookie: 'SECRET-real-cookie', 'x-kept': 'yes' } }).then((response) => response.text());
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  assert.equal(ours.lines.length, theirs.lines.length);
  assert.ok(ours.lines.length >= 20);
  for (const [index, line] of ours.lines.entries()) assert.equal(line, theirs.lines[index], `line ${index}`);
  const all = ours.lines.join('');
  assert.ok(!/SECRET/.test(all), all.match(/.{40}SECRET.{20}/)?.[0]);
  for (const deeper of ['deeper-than-the-paths', 'in-an-array-not-a-path', 'x-kept']) assert.ok(all.includes(deeper), deeper);
  assert.ok((all.match(/\[redacted\]/g) ?? []).length >= 40);
});

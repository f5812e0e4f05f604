import { Agent, createServer, request, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import httpProxy from 'http-proxy';
import type { ProxyProcessReady, ProxyProcessRequest } from './harness/proxy-protocol.js';

/**
 * The baselines the pass-through scenario measures the proxy against besides nginx (issue 19): a reverse proxy in
 * a Node process of its own with nothing of the proxy in it. Started by harness/baseline-child.ts like the proxy
 * (transpiled to JavaScript, own process, same upstream and load generator), it speaks the proxy process's ready
 * line and its `clock` and `stop` requests, so the harness measures its CPU and profiles it the same way.
 *
 * MCP_BENCH_BASELINE = {"kind": "node" | "http-proxy", "target": "http://127.0.0.1:PORT"}:
 *  - node: node:http's server, `http.request` on a keep-alive agent and `pipe` both ways, hop-by-hop headers dropped
 *    in both directions (RFC 9110 §7.6.1), nothing else — the floor for any reverse proxy written on Node's HTTP
 *    stack on this machine.
 *  - http-proxy: the same server and the same hop-by-hop filter of the request, forwarding with http-proxy's
 *    `web(req, res)` on the same kind of agent and its own response handling — what http-proxy costs, without
 *    Koa and without any of the proxy's code.
 * Neither adds X-Forwarded-* (nginx does, the proxy does): that is the proxy's own work, part of what is compared.
 */

interface BaselineInput {
  readonly kind: 'node' | 'http-proxy';
  readonly target: string;
}

const input = JSON.parse(process.env['MCP_BENCH_BASELINE'] ?? '{}') as BaselineInput;
const target = new URL(input.target);
// The proxy's own agent settings (src/proxy/homeserver-proxy.ts): kept alive, a high socket cap, reused last-in first.
const agent = new Agent({ keepAlive: true, maxSockets: 4096, scheduling: 'lifo' });

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade']);

/** The fixed hop-by-hop set plus the fields a Connection header names. */
function hopByHop(connection: string | readonly string[] | undefined): ReadonlySet<string> {
  if (connection === undefined) return HOP_BY_HOP;
  const names = new Set(HOP_BY_HOP);
  for (const value of typeof connection === 'string' ? [connection] : connection) {
    for (const token of value.split(',')) names.add(token.trim().toLowerCase());
  }
  return names;
}

function endToEndRequestHeaders(headers: IncomingHttpHeaders): IncomingHttpHeaders {
  const dropped = hopByHop(headers.connection);
  const kept: IncomingHttpHeaders = {};
  for (const name of Object.keys(headers)) if (!dropped.has(name)) kept[name] = headers[name];
  return kept;
}

function endToEndResponseHeaders(rawHeaders: readonly string[]): string[] {
  const connection: string[] = [];
  for (let index = 0; index + 1 < rawHeaders.length; index += 2) {
    if ((rawHeaders[index] as string).toLowerCase() === 'connection') connection.push(rawHeaders[index + 1] as string);
  }
  const dropped = hopByHop(connection.length === 0 ? undefined : connection);
  const kept: string[] = [];
  for (let index = 0; index + 1 < rawHeaders.length; index += 2) {
    const name = rawHeaders[index] as string;
    if (!dropped.has(name.toLowerCase())) kept.push(name, rawHeaders[index + 1] as string);
  }
  return kept;
}

function badGateway(res: ServerResponse): void {
  if (res.headersSent) res.destroy();
  else res.writeHead(502, { 'content-length': '0' }).end();
}

function nodeForwarder(): (req: IncomingMessage, res: ServerResponse) => void {
  const port = Number(target.port || 80);
  return (req, res) => {
    const upstream = request({ host: target.hostname, port, method: req.method, path: req.url, headers: endToEndRequestHeaders(req.headers), agent }, (response) => {
      res.writeHead(response.statusCode ?? 502, endToEndResponseHeaders(response.rawHeaders));
      response.pipe(res);
    });
    upstream.once('error', () => badGateway(res));
    req.pipe(upstream);
  };
}

function httpProxyForwarder(): (req: IncomingMessage, res: ServerResponse) => void {
  const proxy = httpProxy.createProxyServer({ target: input.target, agent });
  proxy.on('error', (_err, _req, res) => {
    if ('writeHead' in res) badGateway(res);
    else res.destroy();
  });
  return (req, res) => {
    req.headers = endToEndRequestHeaders(req.headers);
    proxy.web(req, res);
  };
}

const server = createServer(input.kind === 'node' ? nodeForwarder() : httpProxyForwarder());
server.keepAliveTimeout = 65_000;
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

process.on('message', (message: ProxyProcessRequest) => {
  switch (message.type) {
    case 'clock':
      process.send?.({ id: message.id, type: 'clock', micros: Number(process.hrtime.bigint() / 1000n) });
      return;
    case 'stop':
      server.close();
      server.closeAllConnections();
      agent.destroy();
      // Exit normally (not by a signal), so that --cpu-prof writes its profile.
      process.send?.({ id: message.id, type: 'ok' }, () => process.exit(0));
      return;
    default:
      process.send?.({ id: message.id, type: 'error', message: `a baseline answers clock and stop only, not ${message.type}` });
  }
});
process.on('disconnect', () => process.exit(0));

const ready: ProxyProcessReady = { bench: 'ready', clientUrl: url, homeserverFacingUrl: url, pid: process.pid, workerPids: [] };
process.stdout.write(`${JSON.stringify(ready)}\n`);

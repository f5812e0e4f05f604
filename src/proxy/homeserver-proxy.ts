import { Agent as HttpAgent, type ClientRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import httpProxy from 'http-proxy';
import type { Logger } from 'pino';
import { MatrixError } from '../errors/matrix-error.js';
import { bodyFraming, downstreamResponseHeaders, upstreamRequestHeaders, type BodyFraming } from './forwarded-headers.js';
import { trustedProxies } from '../http/trusted-proxies.js';
import { writeRawMatrixError } from '../errors/render.js';

export type UpstreamErrorKind = 'unreachable' | 'timeout';

export interface HomeserverProxyOptions {
  /** Base URL of the homeserver's client API, e.g. http://synapse:8008 (a path prefix is kept). */
  readonly target: string;
  /** CIDRs of the proxies in front of us whose X-Forwarded-For we extend rather than replace. */
  readonly trustedProxies: readonly string[];
  /** Longest silence on the upstream socket before a request fails with 504; also bounds connecting. */
  readonly upstreamTimeoutMs: number;
  /** The same for long-polls (/sync), which legitimately stay silent until an event arrives or their timeout ends. */
  readonly syncTimeoutMs: number;
  readonly logger: Logger;
  readonly onUpstreamError?: (kind: UpstreamErrorKind) => void;
  /** Cap on sockets to the homeserver. Default {@link DEFAULT_MAX_UPSTREAM_SOCKETS}. */
  readonly maxSockets?: number;
  /** Longest silence from the client while its request body is still arriving; then 408 and the connection closed. */
  readonly bodyIdleTimeoutMs?: number;
}

/**
 * Every syncing client holds one upstream socket for up to a whole long-poll, so the cap must sit well above the
 * number of clients syncing at once, or ordinary requests queue behind their /sync. It only stops unbounded growth.
 */
export const DEFAULT_MAX_UPSTREAM_SOCKETS = 4096;

/** Idle pooled sockets are dropped well before servers usually close theirs, to avoid reusing a socket being closed. */
const IDLE_UPSTREAM_SOCKET_MS = 30_000;

/**
 * Passes a request to the homeserver unchanged apart from hop-by-hop and forwarding headers, streaming both bodies.
 * An unreachable homeserver answers 502, a silent one 504, both as Matrix JSON; once the response has started, a
 * failure can only cut the connection.
 */
export function createHomeserverProxy(options: HomeserverProxyOptions): {
  forward(req: IncomingMessage, res: ServerResponse): void;
  close(): void;
} {
  const target = new URL(options.target);
  const basePath = target.pathname.replace(/\/+$/, '');
  const trusted = trustedProxies(options.trustedProxies);
  const log = options.logger.child({ component: 'homeserver-proxy' });
  const isHttps = target.protocol === 'https:';
  const agentOptions = {
    keepAlive: true,
    maxSockets: options.maxSockets ?? DEFAULT_MAX_UPSTREAM_SOCKETS,
    // Also the connect timeout: a socket gets it at creation, and ours replaces it only once connected.
    timeout: Math.min(options.upstreamTimeoutMs, IDLE_UPSTREAM_SOCKET_MS),
    scheduling: 'lifo' as const,
  };
  const agent = isHttps ? new HttpsAgent(agentOptions) : new HttpAgent(agentOptions);
  // The adopt step of the request being forwarded: set around the synchronous proxy.web() call, taken by the agent.
  let adopting: ((request: ClientRequest) => void) | undefined;
  const adoptingView = adoptingAgent(agent, () => {
    const adopt = adopting;
    adopting = undefined;
    return adopt;
  });

  const proxy = httpProxy.createProxyServer({
    // In the server options, not per call: web() without options of its own copies none per request.
    agent: adoptingView,
    target: {
      protocol: target.protocol,
      host: target.hostname.replace(/^\[|\]$/g, ''),
      hostname: target.hostname.replace(/^\[|\]$/g, ''),
      port: Number(target.port || (isHttps ? 443 : 80)),
    },
    // Headers come from upstreamRequestHeaders, the path from the agent hook, the response from relayResponse.
    xfwd: false,
    toProxy: true,
    prependPath: false,
    selfHandleResponse: true,
  });
  // web(req, res, callback) with no per-call options: http-proxy then uses the server options as they are instead of
  // copying them for every request (lib/http-proxy/index.js createRightProxy); its typings omit that form.
  const web = proxy.web.bind(proxy) as unknown as (req: IncomingMessage, res: ServerResponse, callback: (err: Error) => void) => void;
  // Every web() call passes its own callback, so this only catches what http-proxy emits outside one.
  proxy.on('error', (err: Error) => log.error({ err }, 'proxy.internal_error'));

  return {
    forward(req, res) {
      const rawUrl = req.url ?? '/';
      const path = pathOf(rawUrl);
      const exchange: Exchange = {
        method: req.method ?? 'GET',
        path,
        timeoutMs: isLongPoll(path) ? options.syncTimeoutMs : options.upstreamTimeoutMs,
        timedOut: false,
        responded: false,
        clientLeft: false,
        failed: false,
        upstream: undefined,
        upstreamResponse: undefined,
      };
      const framing = bodyFraming(req);
      if (framing.kind !== 'none' && !req.complete && options.bodyIdleTimeoutMs !== undefined) {
        watchBodyIdleness(req, res, exchange, options.bodyIdleTimeoutMs);
      }
      // http-proxy copies req.headers into the upstream request, so this is where the headers are decided.
      req.headers = upstreamRequestHeaders(req, trusted);

      const adopt = (upstream: ClientRequest): void => {
        exchange.upstream = upstream;
        // http-proxy's urlJoin collapses `//` and rewrites `http:/` in the path; the homeserver gets the bytes we got.
        upstream.path = basePath + rawUrl;
        frameBody(upstream, framing);
        upstream.setTimeout(exchange.timeoutMs, () => {
          exchange.timedOut = true;
          upstream.destroy(new Error(`no data from the homeserver for ${exchange.timeoutMs} ms`));
        });
        // `on`, not `once`, for events an object emits at most once ('response' here, 'close' below): no wrapper
        // closure made and removed per request.
        upstream.on('response', (upstreamResponse: IncomingMessage) => {
          exchange.responded = true;
          exchange.upstreamResponse = upstreamResponse;
          relayResponse(upstreamResponse, res, log);
        });
      };
      res.on('close', () => {
        // http-proxy drops the upstream request only when the incoming request stream breaks; a client that leaves
        // after sending all of its request (any GET, every long-poll) would hold an upstream socket until the timeout.
        if (!res.writableFinished) {
          if (!exchange.responded) exchange.clientLeft = true;
          exchange.upstream?.destroy();
        }
        // A response cut short (the client left, the exchange broke) must not leave the homeserver's streaming on.
        const upstreamResponse = exchange.upstreamResponse;
        if (upstreamResponse !== undefined && !upstreamResponse.complete) upstreamResponse.destroy();
      });

      adopting = adopt;
      try {
        web(req, res, (err: Error) => {
          failUpstream(err, req, res, exchange);
        });
      } finally {
        adopting = undefined;
      }
    },

    close() {
      proxy.close();
      agent.destroy();
    },
  };

  /**
   * A body trickled byte by byte would hold a client connection and an upstream socket until the upstream timeout
   * (the listener has no request timeout: /sync long-polls pass through it). While the body arrives, the client's
   * socket may be silent at most `idleMs` (issue 12 #8); once the body is complete the watch ends — waiting for the
   * homeserver's answer is the upstream timeout's business. A socket timeout, so the body stream itself is never touched.
   */
  function watchBodyIdleness(req: IncomingMessage, res: ServerResponse, exchange: Exchange, idleMs: number): void {
    const socket = req.socket;
    const onIdle = () => {
      if (req.complete) return;
      log.info({ method: exchange.method, path: exchange.path, idle_ms: idleMs }, 'proxy.body_idle');
      exchange.clientLeft = true;
      if (res.headersSent) {
        socket.destroy();
      } else {
        writeRawMatrixError(res, new MatrixError(408, 'M_UNKNOWN', 'The request body did not arrive in time'), { Connection: 'close' });
        res.once('finish', () => socket.destroySoon());
      }
      exchange.upstream?.destroy();
    };
    // On the request, not the socket: the server's own socket 'timeout' handler destroys the socket unless the
    // request (or response) listens for the event.
    req.setTimeout(idleMs, onIdle);
    const stop = () => {
      req.setTimeout(0);
      req.removeListener('timeout', onIdle);
    };
    req.once('end', stop);
    req.once('close', stop);
  }

  function failUpstream(err: Error, req: IncomingMessage, res: ServerResponse, exchange: Exchange): void {
    if (exchange.failed) return;
    exchange.failed = true;
    const details = { method: exchange.method, path: exchange.path, code: (err as NodeJS.ErrnoException).code, reason: err.message };
    if (!exchange.timedOut && exchange.responded) {
      // The homeserver answered, then the exchange broke (say it stopped reading an upload it had already refused).
      // Not an outage; the client connection cannot carry on either way.
      log.debug(details, 'proxy.upstream.cut');
      res.destroy();
      return;
    }
    if (!exchange.timedOut && (exchange.clientLeft || req.socket.destroyed)) {
      // The client left or broke its request, and we dropped the upstream request: nothing to answer or count.
      exchange.upstream?.destroy();
      return;
    }
    const kind: UpstreamErrorKind = exchange.timedOut ? 'timeout' : 'unreachable';
    options.onUpstreamError?.(kind);
    log.warn({ kind, ...details }, `proxy.upstream.${kind}`);
    if (res.headersSent || res.destroyed) {
      // Too late for an error status: cutting the connection is the only way to tell the client it is incomplete.
      res.destroy();
      return;
    }
    const error =
      kind === 'timeout'
        ? new MatrixError(504, 'M_UNKNOWN', 'The homeserver did not answer in time', {}, err)
        : new MatrixError(502, 'M_UNKNOWN', 'The homeserver cannot be reached', {}, err);
    // An unread request body would otherwise be left on a socket we want to reuse.
    writeRawMatrixError(res, error, req.complete ? {} : { Connection: 'close' });
  }
}

interface Exchange {
  readonly method: string;
  readonly path: string;
  readonly timeoutMs: number;
  timedOut: boolean;
  /** The upstream status line arrived (so the client's has gone out too). */
  responded: boolean;
  /** The client connection closed before any response went out. */
  clientLeft: boolean;
  failed: boolean;
  upstream: ClientRequest | undefined;
  /** The homeserver's response, once it started; the client's 'close' drops it if it is not complete. */
  upstreamResponse: IncomingMessage | undefined;
}

function relayResponse(upstreamResponse: IncomingMessage, res: ServerResponse, log: Logger): void {
  if (res.destroyed) {
    upstreamResponse.destroy();
    return;
  }
  if (upstreamResponse.statusMessage) res.statusMessage = upstreamResponse.statusMessage;
  res.writeHead(upstreamResponse.statusCode ?? 502, downstreamResponseHeaders(upstreamResponse.rawHeaders));
  // pipe, not stream.pipeline: pipeline builds an AbortController and throws an AbortError per response, which
  // showed as ~7 % of pass-through CPU; pipe with explicit error handling measured +11-16 % req/s.
  upstreamResponse.on('error', (err) => {
    log.debug({ code: (err as NodeJS.ErrnoException).code, reason: err.message }, 'proxy.response.cut');
    res.destroy(err);
  });
  // The client's 'close' (forward's listener) destroys an upstream response that is not complete.
  upstreamResponse.pipe(res);
}

/**
 * Frames the upstream body the way the client framed it. Transfer-Encoding is hop-by-hop and gone from the copied
 * headers, and a Connection header may have named Content-Length; Node only chunks POST/PUT/PATCH bodies by itself,
 * and http-proxy's deleteLength pass even adds `Content-Length: 0` to a DELETE or OPTIONS whose chunked body follows.
 * A body left unframed or misframed is read by the homeserver as the next request on the socket (RFC 9112 §11.2,
 * request smuggling).
 */
function frameBody(upstream: ClientRequest, framing: BodyFraming): void {
  switch (framing.kind) {
    case 'chunked':
      upstream.removeHeader('content-length');
      upstream.setHeader('transfer-encoding', framing.codings);
      return;
    case 'length':
      upstream.setHeader('content-length', framing.length);
      return;
    case 'none':
      return;
  }
}

/** What Node's ClientRequest calls on its agent, synchronously in its constructor, before the head is serialised. */
interface RequestQueue {
  addRequest(request: ClientRequest, options: object): void;
}

/**
 * A view of the shared keep-alive agent that hands each upstream request to the adopt step of the request being
 * forwarded (`take`) at the last moment its path and headers can still change. http-proxy's own 'proxyReq' event
 * comes later (on 'socket'), too late when the pool is full and the body has started. http-proxy creates the
 * upstream request synchronously inside web(), and Node's ClientRequest calls addRequest synchronously in its
 * constructor, so the step set around web() is the one of this request; a request without one (which nothing in
 * this module makes) is refused rather than sent with http-proxy's rewritten path.
 */
function adoptingAgent(shared: HttpAgent, take: () => ((request: ClientRequest) => void) | undefined): HttpAgent {
  const queue = shared as unknown as RequestQueue;
  const view = Object.create(shared) as HttpAgent & RequestQueue;
  view.addRequest = (request, requestOptions) => {
    const adopt = take();
    if (adopt === undefined) {
      request.destroy(new Error('upstream request made outside forward()'));
      return;
    }
    adopt(request);
    queue.addRequest.call(shared, request, requestOptions);
  };
  return view;
}

function pathOf(rawUrl: string): string {
  const queryStart = rawUrl.indexOf('?');
  return queryStart < 0 ? rawUrl : rawUrl.slice(0, queryStart);
}

/** /sync (every version, sliding sync too) and the legacy /events stream wait server-side for new events. */
function isLongPoll(path: string): boolean {
  return /^\/_matrix\/client\/(?:.+\/sync|[^/]+\/events)$/.test(path);
}

import http, { type IncomingHttpHeaders } from 'node:http';
import https from 'node:https';

/**
 * The proxy's outbound HTTP client for the calls a request waits on (homeserver provisioning, the OP's token
 * endpoint and keys): a subset of the Fetch API over node:http with keep-alive agents.
 *
 * Why not the global fetch: measured on the 2-core bench machine, one small JSON POST over a kept-alive connection
 * cost about 650–1,000 µs of CPU through fetch (undici's web streams, abort plumbing, header objects) and about
 * 180–350 µs through node:http with the Response built here; a password login makes three such calls (issue 19,
 * login latency). Behaviour kept from fetch: a network failure rejects with TypeError('fetch failed') whose `cause`
 * is the socket error; an aborted signal rejects with the signal's reason (AbortSignal.timeout → TimeoutError);
 * `redirect: 'error'` rejects a 3xx, `'manual'` returns it. Redirects are never followed (no caller wants that).
 * Answers are asked for and read uncompressed (`accept-encoding: identity`) and capped at 2 MiB (token, user and
 * key answers are a few KiB). With NODE_USE_ENV_PROXY=1 (Node ≥ 24), the agents follow HTTP(S)_PROXY/NO_PROXY as
 * fetch then does. Not supported, and refused: streaming request bodies.
 */

export type OutboundBody = string | Uint8Array | ArrayBuffer | URLSearchParams | null | undefined;

export interface OutboundInit {
  readonly method?: string;
  readonly headers?: Record<string, string> | Headers;
  readonly body?: OutboundBody;
  readonly signal?: AbortSignal | undefined;
  /**
   * A time limit for the whole call (a retry included), in ms: past it the call rejects with the DOMException
   * `TimeoutError` that `AbortSignal.timeout` gives, and the request is destroyed. A plain timer instead of that
   * signal, which costs 12–20 µs on Node 20 (a transferable signal, a FinalizationRegistry entry, its listener)
   * against well under 1 µs; a password login made three (bench/README.md, "Login CPU").
   */
  readonly timeoutMs?: number | undefined;
  readonly redirect?: 'error' | 'manual';
  /**
   * The request may be sent twice (RFC 9110 §9.2.2): then a kept-alive socket the server reset before any answer is
   * retried once on a new one. GET, HEAD, PUT, DELETE and OPTIONS are idempotent by definition; a POST only when
   * its caller says so (Synapse's /_synapse/mas endpoints are). Never a password, code or refresh grant.
   */
  readonly idempotent?: boolean;
}

// Idle kept-alive sockets are closed after 4 s (undici's default too): shorter than the idle timeouts of common
// servers (Twisted, nginx, Keycloak's Vert.x), so the proxy rarely reuses a socket the server is closing.
const IDLE_SOCKET_MS = 4_000;
const MAX_ANSWER_BYTES = 2 * 1024 * 1024;
const IDEMPOTENT_METHODS = new Set(['GET', 'HEAD', 'PUT', 'DELETE', 'OPTIONS']);
// fetch follows HTTP(S)_PROXY only when Node is told to (NODE_USE_ENV_PROXY=1 or --use-env-proxy, Node ≥ 24); own
// agents need `proxyEnv` for that (older Nodes ignore the option). Connection pools, shared by the whole process.
const envProxy = process.env['NODE_USE_ENV_PROXY'] === '1' || process.execArgv.includes('--use-env-proxy') ? { proxyEnv: process.env } : {};
const httpAgent = new http.Agent({ keepAlive: true, timeout: IDLE_SOCKET_MS, ...envProxy } as http.AgentOptions);
const httpsAgent = new https.Agent({ keepAlive: true, timeout: IDLE_SOCKET_MS, ...envProxy } as https.AgentOptions);

/**
 * A fetch-shaped call: the answer as a standard Response (openid-client's customFetch takes this; oauth4webapi checks
 * `instanceof Response`). The body, already read whole, is kept as bytes (BufferedResponse below).
 */
export async function outboundFetch(url: string | URL, init: OutboundInit = {}): Promise<Response> {
  const answer = await outboundRequest(url, init);
  const headers = new Headers();
  for (const [name, value] of Object.entries(answer.headers)) {
    if (value === undefined) continue;
    if (Array.isArray(value)) for (const one of value) headers.append(name, one);
    else headers.append(name, value);
  }
  const responseInit = { status: answer.status, statusText: answer.statusText, headers };
  // The Fetch standard: these statuses (and HEAD answers) have a null body.
  const nullBody = answer.status === 204 || answer.status === 205 || answer.status === 304 || (init.method ?? 'GET').toUpperCase() === 'HEAD';
  return nullBody ? new Response(null, responseInit) : new BufferedResponse(answer.body, responseInit);
}

/**
 * A Response whose body is bytes already in memory, read by `text()`, `json()`, `arrayBuffer()` and `bytes()`
 * without a web stream. `new Response(bytes)` wraps them in a ReadableStream that every read then pulls back through
 * the stream machinery; with the proxy's client, which reads every answer whole before returning it, that was about
 * 6 % of a warm password login's main-thread time (bench/README.md, "Login CPU"). The Fetch body semantics callers
 * rely on are kept (https://fetch.spec.whatwg.org/#body-mixin): a body reads once, a second read rejects with a
 * TypeError, `bodyUsed` says so, `clone()` of an unread body gives an independent copy and throws once it is read.
 * `body` (the stream itself: oauth4webapi and SigningKeys call `body?.cancel()` on answers they drop), `blob()` and
 * `formData()` hand the bytes to a real Response first and answer from it from then on, so a stream and the fast
 * reads never disagree about whether the body was used. Decoding is the standard's UTF-8 decode (a leading BOM
 * dropped, malformed bytes replaced), which TextDecoder's defaults are.
 */
class BufferedResponse extends Response {
  #bytes: Buffer;
  #used = false;
  /** The real Response the body moved to once its stream (or a read this class does not do itself) was asked for. */
  #streamed: Response | undefined;

  constructor(bytes: Buffer, init: ResponseInit) {
    super(null, init);
    this.#bytes = bytes;
  }

  /** The bytes for a read, or the TypeError fetch rejects a second read with. */
  #take(): Buffer {
    if (this.#used) throw new TypeError('Body is unusable: Body has already been read');
    this.#used = true;
    return this.#bytes;
  }

  #toStreamed(): Response {
    if (this.#streamed !== undefined) return this.#streamed;
    const streamed = new Response(this.#bytes, { status: this.status, statusText: this.statusText, headers: this.headers });
    // Already read here: the real Response's body must be disturbed too (its stream then reads as used).
    if (this.#used) streamed.arrayBuffer().catch(() => undefined);
    this.#streamed = streamed;
    return streamed;
  }

  // The members are installed on the prototype rather than declared, because the DOM typings declare them as
  // readonly properties (methods and accessors cannot override those in TypeScript); a static block can still use
  // the private fields.
  static {
    const decoder = new TextDecoder();
    const members: Record<string, PropertyDescriptor> = {
      body: {
        get(this: BufferedResponse) {
          return this.#toStreamed().body;
        },
      },
      bodyUsed: {
        get(this: BufferedResponse) {
          return this.#streamed === undefined ? this.#used : this.#streamed.bodyUsed;
        },
      },
      text: {
        async value(this: BufferedResponse) {
          if (this.#streamed !== undefined) return this.#streamed.text();
          return decoder.decode(this.#take());
        },
      },
      json: {
        async value(this: BufferedResponse) {
          if (this.#streamed !== undefined) return this.#streamed.json();
          return JSON.parse(decoder.decode(this.#take())) as unknown;
        },
      },
      arrayBuffer: {
        async value(this: BufferedResponse) {
          if (this.#streamed !== undefined) return this.#streamed.arrayBuffer();
          return new Uint8Array(this.#take()).buffer;
        },
      },
      bytes: {
        async value(this: BufferedResponse) {
          if (this.#streamed !== undefined) return new Uint8Array(await this.#streamed.arrayBuffer());
          return new Uint8Array(this.#take());
        },
      },
      blob: {
        value(this: BufferedResponse) {
          return this.#toStreamed().blob();
        },
      },
      formData: {
        value(this: BufferedResponse) {
          return this.#toStreamed().formData();
        },
      },
      clone: {
        value(this: BufferedResponse): Response {
          if (this.#streamed !== undefined) return this.#streamed.clone();
          if (this.#used) throw new TypeError('Response.clone: Body has already been consumed.');
          return new BufferedResponse(this.#bytes, { status: this.status, statusText: this.statusText, headers: this.headers });
        },
      },
    };
    for (const member of Object.values(members)) {
      member.configurable = true;
      if ('value' in member) member.writable = true;
    }
    Object.defineProperties(this.prototype, members);
  }
}

export interface OutboundAnswer {
  readonly status: number;
  readonly statusText: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
}

/** The cheaper form for callers that only want the status, the raw headers and the body bytes. */
export async function outboundRequest(url: string | URL, init: OutboundInit = {}): Promise<OutboundAnswer> {
  const target = typeof url === 'string' ? new URL(url) : url;
  if (target.protocol !== 'http:' && target.protocol !== 'https:') throw new TypeError('fetch failed', { cause: new Error(`unsupported URL scheme ${target.protocol}`) });
  const payload = bodyBytes(init.body);
  const headers = headerRecord(init.headers);
  // fetch sends a User-Agent, node:http none; some OP front ends (WAFs) refuse requests without one.
  if (!hasHeader(headers, 'user-agent')) headers['user-agent'] = 'matrix-compat-proxy';
  // Without Accept-Encoding a server may use any content coding (RFC 9110 §12.5.3); nothing here decodes one.
  headers['accept-encoding'] = 'identity';
  if (payload !== undefined) {
    if (init.body instanceof URLSearchParams && !hasHeader(headers, 'content-type')) headers['content-type'] = 'application/x-www-form-urlencoded;charset=UTF-8';
    headers['content-length'] = String(payload.byteLength);
  }
  const signal = init.signal;
  signal?.throwIfAborted();
  const method = (init.method ?? 'GET').toUpperCase();
  const deadline = init.timeoutMs === undefined ? undefined : performance.now() + init.timeoutMs;
  try {
    return await send(target, method, headers, payload, signal, deadline, init.redirect ?? 'error');
  } catch (error: unknown) {
    // Node's keep-alive guidance: a reset on a reused socket before any answer is most often the server closing it
    // as the request left (an idle-timeout race). The server may still have acted on it, so only a request that may
    // be sent twice goes once more, on a fresh socket; the others fail as they did with fetch.
    if (error instanceof ReusedSocketReset && (init.idempotent === true || IDEMPOTENT_METHODS.has(method))) {
      return send(target, method, headers, payload, signal, deadline, init.redirect ?? 'error');
    }
    throw error;
  }
}

function timeoutError(): DOMException {
  // What AbortSignal.timeout's signal carries as its reason.
  return new DOMException('The operation was aborted due to timeout', 'TimeoutError');
}

class ReusedSocketReset extends TypeError {}

function send(
  target: URL,
  method: string,
  headers: Record<string, string>,
  payload: Buffer | undefined,
  signal: AbortSignal | undefined,
  deadline: number | undefined,
  redirect: 'error' | 'manual',
): Promise<OutboundAnswer> {
  return new Promise<OutboundAnswer>((resolve, reject) => {
    if (deadline !== undefined && performance.now() >= deadline) {
      reject(timeoutError());
      return;
    }
    const transport = target.protocol === 'https:' ? https : http;
    const request = transport.request(target, { method, headers, agent: target.protocol === 'https:' ? httpsAgent : httpAgent });
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    const finish = (outcome: () => void) => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener('abort', onAbort);
      if (timer !== undefined) clearTimeout(timer);
      outcome();
    };
    const onAbort = () => {
      finish(() => reject(signal?.reason));
      request.destroy();
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    if (deadline !== undefined) {
      timer = setTimeout(() => {
        finish(() => reject(timeoutError()));
        request.destroy();
      }, deadline - performance.now());
      // As AbortSignal.timeout's timer: the call's socket, not the timer, keeps the process alive.
      timer.unref();
    }
    let answered = false;
    request.on('error', (error: NodeJS.ErrnoException) => {
      const Failure = request.reusedSocket && !answered && error.code === 'ECONNRESET' ? ReusedSocketReset : TypeError;
      finish(() => reject(new Failure('fetch failed', { cause: error })));
    });
    request.on('response', (response) => {
      answered = true;
      const status = response.statusCode ?? 0;
      if (redirect === 'error' && status >= 300 && status < 400) {
        response.resume();
        finish(() => reject(new TypeError('fetch failed', { cause: new Error(`unexpected redirect (${status}) from ${target.origin}`) })));
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      response.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size <= MAX_ANSWER_BYTES) {
          chunks.push(chunk);
          return;
        }
        finish(() => reject(new TypeError('fetch failed', { cause: new Error(`the answer from ${target.origin} is larger than ${MAX_ANSWER_BYTES} bytes`) })));
        request.destroy();
      });
      response.on('error', (error) => finish(() => reject(new TypeError('fetch failed', { cause: error }))));
      // A connection closed before the body's end: after 'end' this finds the call settled.
      response.on('close', () => finish(() => reject(new TypeError('fetch failed', { cause: new Error('the connection closed before the answer was complete') }))));
      response.on('end', () => finish(() => resolve({ status, statusText: response.statusMessage ?? '', headers: response.headers, body: Buffer.concat(chunks) })));
    });
    request.end(payload);
  });
}

function bodyBytes(body: OutboundBody): Buffer | undefined {
  if (body === undefined || body === null) return undefined;
  if (typeof body === 'string') return Buffer.from(body, 'utf8');
  if (body instanceof URLSearchParams) return Buffer.from(body.toString(), 'utf8');
  if (body instanceof ArrayBuffer) return Buffer.from(body);
  if (body instanceof Uint8Array) return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  throw new TypeError('fetch failed', { cause: new Error('streaming request bodies are not supported by the outbound client') });
}

function headerRecord(headers: OutboundInit['headers']): Record<string, string> {
  const record: Record<string, string> = {};
  if (headers === undefined) return record;
  if (headers instanceof Headers) headers.forEach((value, name) => (record[name] = value));
  else for (const [name, value] of Object.entries(headers)) record[name.toLowerCase()] = value;
  return record;
}

function hasHeader(headers: Record<string, string>, name: string): boolean {
  return headers[name] !== undefined;
}

import type { Logger } from 'pino';
import { outboundRequest } from '../outbound/http-client.js';
import { HomeserverError } from './homeserver-adapter.js';

/** One answer of the homeserver's client-server API, body parsed when it is JSON. */
export interface ClientApiResponse {
  readonly status: number;
  readonly body: unknown;
}

export interface ClientApiOptions {
  readonly baseUrl: string;
  /** Budget of one call, retries included. */
  readonly timeoutMs: number;
  readonly logger: Logger;
  /** Further attempts after a network failure, 5xx or 429, for calls marked idempotent (default 2). */
  readonly retries?: number;
}

export interface CallOptions {
  readonly token?: string;
  readonly query?: Readonly<Record<string, string>>;
  readonly body?: unknown;
  /** Safe to send again after a failure whose outcome is unknown (a lost answer). */
  readonly idempotent?: boolean;
}

/**
 * The few client-server API calls token-issuing backends make (register, login, logout, profile, devices), with a
 * deadline per call and bounded retries of the idempotent ones. The token travels in the Authorization header only,
 * never the query string, so it cannot reach an access log.
 */
export class ClientApi {
  readonly #baseUrl: string;
  readonly #timeoutMs: number;
  readonly #retries: number;
  readonly #logger: Logger;

  constructor(options: ClientApiOptions) {
    this.#baseUrl = options.baseUrl.replace(/\/+$/, '');
    this.#timeoutMs = options.timeoutMs;
    this.#retries = options.retries ?? 2;
    this.#logger = options.logger;
  }

  async call(what: string, method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string, options: CallOptions = {}): Promise<ClientApiResponse> {
    const deadline = performance.now() + this.#timeoutMs;
    const query = options.query === undefined ? '' : `?${new URLSearchParams(options.query as Record<string, string>).toString()}`;
    const headers: Record<string, string> = { accept: 'application/json' };
    if (options.token !== undefined) headers['authorization'] = `Bearer ${options.token}`;
    if (options.body !== undefined) headers['content-type'] = 'application/json';
    for (let attempt = 0; ; attempt += 1) {
      let failure: HomeserverError;
      try {
        const response = await outboundRequest(`${this.#baseUrl}${path}${query}`, {
          method,
          headers,
          ...(options.idempotent === true ? { idempotent: true } : {}),
          ...(options.body === undefined ? {} : { body: JSON.stringify(options.body) }),
          signal: AbortSignal.timeout(Math.max(1, Math.floor(deadline - performance.now()))),
          redirect: 'error',
        });
        const body = answerBody(response.body);
        if (response.status < 500 && response.status !== 429) return { status: response.status, body };
        failure = statusError(what, { status: response.status, body });
      } catch (err: unknown) {
        failure = new HomeserverError('transient', `${what}: homeserver unreachable (${describeFetchError(err)})`, { cause: err });
      }
      const delay = 100 * 2 ** attempt;
      if (options.idempotent !== true || attempt >= this.#retries || performance.now() + delay >= deadline) {
        this.#logger.error({ event: 'homeserver.call.failed', call: what, attempts: attempt + 1, err: failure }, failure.message);
        throw failure;
      }
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}

/** The error for an answer the backend did not expect (4xx permanent, 5xx/429 transient). */
export function statusError(what: string, response: ClientApiResponse): HomeserverError {
  const code = errcodeOf(response.body);
  const text = isRecord(response.body) && typeof response.body['error'] === 'string' ? `: ${response.body['error'].slice(0, 300)}` : '';
  const kind = response.status >= 500 || response.status === 429 ? 'transient' : 'permanent';
  return new HomeserverError(kind, `${what}: homeserver answered ${response.status}${code === undefined ? '' : ` ${code}`}${text}`, { status: response.status });
}

export function errcodeOf(body: unknown): string | undefined {
  return isRecord(body) && typeof body['errcode'] === 'string' ? body['errcode'] : undefined;
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A fetch failure in a few words: fetch wraps the socket error (ECONNREFUSED, ...) in `cause`. */
export function describeFetchError(error: unknown): string {
  if (error instanceof Error) {
    const cause = error.cause instanceof Error ? `: ${error.cause.message}` : '';
    return error.name === 'TimeoutError' ? 'timed out' : `${error.message}${cause}`;
  }
  return String(error);
}

/** A homeserver answer's body: parsed JSON, undefined when empty, else its first 200 characters (for messages). */
export function answerBody(bytes: Buffer): unknown {
  const text = bytes.toString('utf8');
  if (text === '') return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return text.slice(0, 200);
  }
}

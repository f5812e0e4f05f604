import type { IncomingMessage } from 'node:http';
import type { Context } from 'koa';
import { MatrixError, matrixErrors } from '../errors/matrix-error.js';

/** How much of a body the routes the proxy owns accept, and how long it may take to arrive. */
export interface BodyLimits {
  readonly maxBytes: number;
  readonly deadlineMs: number;
}

export function bodyLimitsOf(config: { readonly max_request_body: number; readonly request_body_timeout: number }): BodyLimits {
  return { maxBytes: config.max_request_body, deadlineMs: config.request_body_timeout };
}

/**
 * The one body reader of every owned route. The listener has no request timeout (/sync long-polls pass through it),
 * so a body trickled byte by byte would hold the connection forever: reading stops at the deadline and the route
 * answers 408 with `Connection: close` — the answer is written first, the socket closed after it, so the client
 * learns why. Larger than `maxBytes` (declared or actually sent) → 413 M_TOO_LARGE without reading on.
 */
export function readBodyText(ctx: Context, limits: BodyLimits): Promise<string> {
  return readRequestBody(ctx.req, limits);
}

export async function readRequestBody(req: IncomingMessage, limits: BodyLimits): Promise<string> {
  const declared = Number(req.headers['content-length'] ?? '0');
  if (declared > limits.maxBytes) throw closing(matrixErrors.tooLarge());
  // A route runs inside the listener's 'request' event, before Node's parser has passed on the body bytes that came
  // in the same packet as the headers; one microtask later it has. A body whose every byte is then in the stream's
  // buffer — as many as Content-Length declares (none without a length or chunking: RFC 9112 §6.3), or the parser
  // has seen the end of the message — is read at once, without listeners and a deadline timer.
  await undefined;
  if (!req.readableEnded && req.readableFlowing !== true && (req.complete || (req.headers['transfer-encoding'] === undefined && req.readableLength === declared))) {
    return bufferedBody(req, limits);
  }
  return streamedBody(req, limits);
}

function streamedBody(req: IncomingMessage, limits: BodyLimits): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const finish = (error: MatrixError | undefined) => {
      clearTimeout(deadline);
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('aborted', onAborted);
      if (error === undefined) {
        resolve(Buffer.concat(chunks).toString('utf8'));
        return;
      }
      // Stop buffering what is still coming; the response goes out with Connection: close and the socket follows.
      req.pause();
      reject(error);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limits.maxBytes) finish(closing(matrixErrors.tooLarge()));
      else chunks.push(chunk);
    };
    const onEnd = () => finish(undefined);
    const onError = (err: Error) => finish(closing(new MatrixError(400, 'M_UNKNOWN', 'The request body could not be read', {}, err)));
    const onAborted = () => finish(closing(new MatrixError(400, 'M_UNKNOWN', 'The request body was cut off')));
    const deadline = setTimeout(() => finish(closing(new MatrixError(408, 'M_UNKNOWN', 'The request body was not received in time'))), limits.deadlineMs);
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('aborted', onAborted);
    if (req.readableEnded) finish(undefined);
  });
}

/** A body already whole in the request stream's buffer (see readRequestBody): a small form such as an introspection. */
function bufferedBody(req: IncomingMessage, limits: BodyLimits): string {
  const chunks: Buffer[] = [];
  let size = 0;
  for (let chunk: Buffer | null = req.read() as Buffer | null; chunk !== null; chunk = req.read() as Buffer | null) {
    size += chunk.length;
    if (size > limits.maxBytes) throw closing(matrixErrors.tooLarge());
    chunks.push(chunk);
  }
  return chunks.length === 1 ? (chunks[0] as Buffer).toString('utf8') : Buffer.concat(chunks).toString('utf8');
}

/** An error after which the connection cannot be reused (the rest of the body was not read). */
function closing(error: MatrixError): MatrixError {
  return new MatrixError(error.status, error.errcode, error.message, { ...error.extras, headers: { ...error.extras.headers, Connection: 'close' } }, error.cause);
}

/**
 * A JSON body with the Matrix error rules: invalid JSON → 400 M_NOT_JSON. The Content-Type is not checked, as in
 * Synapse: legacy clients, curl and browsers' fetch send JSON labelled text/plain or form-urlencoded, and it must
 * still work. An empty body reads as `{}` only when `emptyAsObject` (POST /logout has no body in practice).
 */
export async function readJsonBody(ctx: Context, limits: BodyLimits, options: { emptyAsObject?: boolean } = {}): Promise<unknown> {
  const text = await readBodyText(ctx, limits);
  if (text.trim() === '') {
    if (options.emptyAsObject) return {};
    throw matrixErrors.notJson();
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err: unknown) {
    throw matrixErrors.notJson(err);
  }
}

/** An `application/x-www-form-urlencoded` body (introspection, back-channel logout, the SSO confirmation form). */
export async function readFormBody(ctx: Context, limits: BodyLimits): Promise<URLSearchParams> {
  return new URLSearchParams(await readBodyText(ctx, limits));
}

/** The first value of a form field by name, or null: `URLSearchParams.get`. */
export interface FormFields {
  get(name: string): string | null;
}

/**
 * A form body read for its first values only (introspection: `token`, `token_type_hint`), exactly as
 * URLSearchParams would read it, without building one per request when nothing needs decoding (see `formFields`).
 */
export function readFormFields(ctx: Context, limits: BodyLimits): Promise<FormFields> {
  // `then` rather than an async function: one async frame less per introspection (issue 19).
  return readBodyText(ctx, limits).then(formFields);
}

/**
 * URLSearchParams over `text`, or — when the text has nothing to decode (no `%`, no `+`, no leading `?`, which the
 * constructor drops, and no surrogate: a lone one it would replace) — a view that finds a field's first value by
 * scanning the text, as the urlencoded parser of the WHATWG URL standard (§5.1) would split it: sequences between
 * `&`, empty ones skipped, the name up to the first `=`, the value after it ('' without one). Then percent-decoding
 * and `+` are the identity, and UTF-8 decoding gives back the string, so both give the same answers; the view
 * allocates only the value it returns (issue 19: an introspection's URLSearchParams was ~1 KB of its garbage).
 */
export function formFields(text: string): FormFields {
  if (text.includes('%') || text.includes('+') || text.startsWith('?') || SURROGATE.test(text)) return new URLSearchParams(text);
  return new PlainForm(text);
}

/** Any UTF-16 surrogate: a text with none cannot hold a lone one (kept simple: a pair also takes the general path). */
const SURROGATE = /[\uD800-\uDFFF]/;

class PlainForm implements FormFields {
  constructor(private readonly text: string) {}

  get(name: string): string | null {
    const text = this.text;
    let start = 0;
    while (start <= text.length) {
      let end = text.indexOf('&', start);
      if (end < 0) end = text.length;
      if (end > start && text.startsWith(name, start)) {
        const after = start + name.length;
        if (after === end) return '';
        if (after < end && text.charCodeAt(after) === 0x3d) return text.slice(after + 1, end);
      }
      start = end + 1;
    }
    return null;
  }
}

/** The media type of the request, lower-cased, without parameters ('' when absent). */
export function mediaTypeOf(ctx: Context): string {
  return ctx.get('content-type').split(';')[0]?.trim().toLowerCase() ?? '';
}

/** Narrows an unknown JSON value to a plain object, else 400 M_BAD_JSON. */
export function expectObject(value: unknown, what = 'Request body'): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw matrixErrors.badJson(`${what} must be a JSON object`);
  }
  return value as Record<string, unknown>;
}

/** Optional string field; present but not a string → 400 M_BAD_JSON naming the field. */
export function optionalString(body: Record<string, unknown>, field: string): string | undefined {
  const value = body[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') throw matrixErrors.badJson(`'${field}' must be a string`);
  return value;
}

export function requiredString(body: Record<string, unknown>, field: string): string {
  const value = optionalString(body, field);
  if (value === undefined) throw matrixErrors.badJson(`Missing property '${field}'`);
  return value;
}

export function optionalBoolean(body: Record<string, unknown>, field: string): boolean | undefined {
  const value = body[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'boolean') throw matrixErrors.badJson(`'${field}' must be a boolean`);
  return value;
}

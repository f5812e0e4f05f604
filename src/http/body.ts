import type { Context } from 'koa';
import { MatrixError, matrixErrors } from '../errors/matrix-error.js';

/**
 * Reads a JSON request body for the routes the proxy owns, with the Matrix error rules: invalid JSON → 400
 * M_NOT_JSON; larger than `limitBytes` → 413 M_TOO_LARGE. The Content-Type is not checked, as in Synapse: legacy
 * clients, curl and browsers' fetch send JSON labelled text/plain or form-urlencoded, and it must still work.
 * An empty body reads as `{}` only when `emptyAsObject` (POST /logout has no body in practice).
 */
export async function readJsonBody(ctx: Context, limitBytes: number, options: { emptyAsObject?: boolean } = {}): Promise<unknown> {
  const text = await readBodyText(ctx, limitBytes);
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

/** The whole request body as UTF-8 text, refusing (413 M_TOO_LARGE) anything over `limitBytes` without reading on. */
export async function readBodyText(ctx: Context, limitBytes: number, deadlineMs = BODY_DEADLINE_MS): Promise<string> {
  const declared = Number(ctx.get('content-length') || '0');
  if (declared > limitBytes) throw matrixErrors.tooLarge();
  // The listener has no request timeout (/sync long-polls pass through it), so a body trickled byte by byte
  // would hold the connection forever: owned routes give the body a deadline of their own.
  let timedOut = false;
  const deadline = setTimeout(() => {
    timedOut = true;
    ctx.req.destroy();
  }, deadlineMs);
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of ctx.req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > limitBytes) throw matrixErrors.tooLarge();
      chunks.push(chunk);
    }
  } catch (err: unknown) {
    if (timedOut) throw new MatrixError(408, 'M_UNKNOWN', 'The request body was not received in time');
    throw err;
  } finally {
    clearTimeout(deadline);
  }
  if (timedOut) throw new MatrixError(408, 'M_UNKNOWN', 'The request body was not received in time');
  return Buffer.concat(chunks).toString('utf8');
}

const BODY_DEADLINE_MS = 30_000;

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

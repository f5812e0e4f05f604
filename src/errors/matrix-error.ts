/**
 * The one error type of the client-facing API. Handlers throw it; only the error middleware renders it.
 * `message` is client-safe: never put internals in it (they go to `cause`, which is logged, not sent).
 */
export type MatrixErrcode =
  | 'M_FORBIDDEN'
  | 'M_UNKNOWN_TOKEN'
  | 'M_MISSING_TOKEN'
  | 'M_USER_LOCKED'
  | 'M_USER_DEACTIVATED'
  | 'M_BAD_JSON'
  | 'M_NOT_JSON'
  | 'M_NOT_FOUND'
  | 'M_LIMIT_EXCEEDED'
  | 'M_UNKNOWN'
  | 'M_UNRECOGNIZED'
  | 'M_TOO_LARGE'
  | 'M_EXCLUSIVE'
  | 'M_INVALID_PARAM'
  | 'M_MISSING_PARAM'
  | 'M_APPSERVICE_LOGIN_UNSUPPORTED'
  | 'M_USER_IN_USE'
  | 'M_INVALID_USERNAME';

export interface MatrixErrorExtras {
  /** Spec: M_LIMIT_EXCEEDED carries retry_after_ms; the middleware also sets Retry-After (seconds). */
  readonly retryAfterMs?: number;
  /** Spec: M_UNKNOWN_TOKEN may carry soft_logout so clients keep their device and keys. */
  readonly softLogout?: boolean;
  /** Extra response headers (e.g. WWW-Authenticate). */
  readonly headers?: Readonly<Record<string, string>>;
  /**
   * Further top-level fields of the body, written before errcode and error (which they cannot replace): the
   * User-Interactive Auth 401 carries `flows`, `params`, `session` and `completed` (C-S spec, "User-interactive
   * authentication API").
   */
  readonly fields?: Readonly<Record<string, unknown>>;
  /** The body is `fields` alone: the first UIA 401 names no error, only what to do (Synapse sends it so too). */
  readonly fieldsOnly?: boolean;
}

export class MatrixError extends Error {
  readonly status: number;
  readonly errcode: MatrixErrcode;
  readonly extras: MatrixErrorExtras;

  constructor(status: number, errcode: MatrixErrcode, message: string, extras: MatrixErrorExtras = {}, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'MatrixError';
    this.status = status;
    this.errcode = errcode;
    this.extras = extras;
  }

  /** Response headers the error carries: Retry-After (whole seconds, at least 1) and any extras. */
  headers(): Record<string, string> {
    return {
      ...(this.extras.retryAfterMs === undefined ? {} : { 'Retry-After': String(Math.max(1, Math.ceil(this.extras.retryAfterMs / 1000))) }),
      ...this.extras.headers,
    };
  }

  /** The JSON body the spec defines: errcode, error, and the optional standard extras. */
  toBody(): Record<string, unknown> {
    if (this.extras.fieldsOnly === true) return { ...this.extras.fields };
    const body: Record<string, unknown> = { ...this.extras.fields, errcode: this.errcode, error: this.message };
    if (this.extras.retryAfterMs !== undefined) body['retry_after_ms'] = this.extras.retryAfterMs;
    if (this.extras.softLogout !== undefined) body['soft_logout'] = this.extras.softLogout;
    return body;
  }
}

/** Shorthands for the errors many routes share, so their wording stays identical everywhere. */
export const matrixErrors = {
  missingToken: () => new MatrixError(401, 'M_MISSING_TOKEN', 'Missing access token'),
  unknownToken: (softLogout?: boolean) =>
    new MatrixError(401, 'M_UNKNOWN_TOKEN', 'Invalid access token', softLogout === undefined ? {} : { softLogout }),
  notJson: (cause?: unknown) => new MatrixError(400, 'M_NOT_JSON', 'Content not JSON.', {}, cause),
  badJson: (message: string) => new MatrixError(400, 'M_BAD_JSON', message),
  tooLarge: () => new MatrixError(413, 'M_TOO_LARGE', 'Request body too large'),
  limitExceeded: (retryAfterMs: number) =>
    new MatrixError(429, 'M_LIMIT_EXCEEDED', 'Too many requests', { retryAfterMs }),
  unrecognized: () => new MatrixError(404, 'M_UNRECOGNIZED', 'Unrecognized request'),
  /** Upstream (OP or homeserver) failed: 503, never 401/403, so clients do not drop their session. */
  unavailable: (what: string, cause?: unknown) =>
    new MatrixError(503, 'M_UNKNOWN', `${what} is temporarily unavailable, try again later`, {}, cause),
  internal: (cause?: unknown) => new MatrixError(500, 'M_UNKNOWN', 'Internal server error', {}, cause),
} as const;

import type { ServerResponse } from 'node:http';
import type { Context, Next } from 'koa';
import type { Logger } from 'pino';
import type { Counter } from 'prom-client';
import { MappingError } from '../identity/user-mapping.js';
import { AccountRefusedByHomeserver } from '../identity/account-provisioning.js';
import { UpstreamError } from '../oidc/upstream.js';
import { sendPage } from '../pages/html-page.js';
import type { FailureMessageKey } from '../pages/messages.js';
import { failurePage } from '../pages/sso-pages.js';
import { HomeserverError, UserNotAllowed } from '../provisioning/homeserver-adapter.js';
import { RateLimited } from '../security/login-throttle.js';
import { StoreUnavailableError } from '../store/store.js';
import { requestLog } from '../http/request-state.js';
import { MatrixError, matrixErrors } from './matrix-error.js';
import { OAuthError, type OAuthErrorCode } from './oauth-error.js';
import { PageError } from './page-error.js';

/** How a route answers errors: Matrix JSON (client API, admin), OAuth JSON (introspection, back-channel), HTML page. */
export type ErrorStyle = 'matrix' | 'oauth' | 'page';

/**
 * The one error renderer. Handlers throw; this middleware alone writes error bodies, in the style of the route that
 * failed (`styleOf(ctx)`), and maps the outages of the adapters to 503 in one place: the store, the homeserver and
 * the OP. Anything unexpected is a 500 with the details only in the log. With `unanswered`, a request no later
 * middleware answered (status 404, no body) fails with that error.
 */
export function renderErrors(styleOf: (ctx: Context) => ErrorStyle, rejections?: Counter<'status' | 'code'>, unanswered?: () => Error) {
  const logRefusal = refusalLogger(rejections);
  return async function renderError(ctx: Context, next: Next): Promise<void> {
    try {
      await next();
      // What no route answered (Koa's default 404 without a body) is rendered as `unanswered()`; checked here rather
      // than by a middleware of its own: one async layer less on every request (issue 19).
      if (unanswered !== undefined && ctx.status === 404 && ctx.body === undefined) throw unanswered();
    } catch (err: unknown) {
      const log = requestLog(ctx);
      const style = styleOf(ctx);
      if (style === 'oauth' && err instanceof OAuthError) {
        logRefusal(log, err.status, err.error, err);
        writeOAuth(ctx, err);
        return;
      }
      const error = asMatrixError(err);
      logRefusal(log, error.status, error.errcode, err);
      switch (style) {
        case 'matrix':
          ctx.status = error.status;
          ctx.set('Cache-Control', 'no-store');
          ctx.set(error.headers());
          ctx.body = error.toBody();
          return;
        case 'oauth':
          writeOAuth(ctx, new OAuthError(error.status, oauthCodeOf(error), error.message, error.headers(), err));
          return;
        case 'page':
          writePage(ctx, err, error);
          return;
      }
    }
  };
}

/**
 * Every failure as the Matrix error a client may see. Outages are 503, never 401/403, so clients keep their session
 * and retry; a store outage also says when (Retry-After).
 */
export function asMatrixError(err: unknown): MatrixError {
  if (err instanceof MatrixError) return err;
  if (err instanceof StoreUnavailableError) {
    return new MatrixError(503, 'M_UNKNOWN', 'The service is temporarily unavailable, try again later', { headers: { 'Retry-After': '5' } }, err);
  }
  if (err instanceof AccountRefusedByHomeserver) {
    return new MatrixError(403, 'M_FORBIDDEN', `The homeserver refused this account: ${err.reason}`, {}, err);
  }
  if (err instanceof HomeserverError) return matrixErrors.unavailable('The homeserver', err);
  // Same words as a wrong password: which accounts are protected is nobody's business.
  if (err instanceof UserNotAllowed) return new MatrixError(403, 'M_FORBIDDEN', 'This account cannot sign in here', {}, err);
  if (err instanceof UpstreamError) return matrixErrors.unavailable('The identity provider', err);
  if (err instanceof RateLimited) return matrixErrors.limitExceeded(err.retryAfterMs);
  if (err instanceof MappingError) {
    // The provider's templates cannot give this identity a Matrix user: the admin must act (logged as an error).
    return new MatrixError(403, 'M_FORBIDDEN', 'No Matrix user can be assigned to this account; contact the server administrator', {}, err);
  }
  return matrixErrors.internal(err);
}

/** For the paths that answer before or outside Koa (malformed paths, pass-through refusals): same body and headers. */
export function writeRawMatrixError(res: ServerResponse, err: unknown, extraHeaders: Readonly<Record<string, string>> = {}): void {
  const error = asMatrixError(err);
  const body = JSON.stringify(error.toBody());
  res.writeHead(error.status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
    ...error.headers(),
    ...extraHeaders,
  });
  res.end(body);
}

function writeOAuth(ctx: Context, error: OAuthError): void {
  ctx.status = error.status;
  ctx.set('Cache-Control', 'no-store');
  ctx.set(error.headers);
  ctx.body = error.toBody();
}

/**
 * A failure at the OAuth token endpoint (RFC 6749 §5.2), for the code exchange that runs after oidc-provider's own
 * error handling: an account the homeserver or the mapping refuses is `invalid_grant` (the grant cannot become a
 * session), outages are 503 `temporarily_unavailable` with their Retry-After, never the homeserver's own 401/403.
 */
export function asTokenEndpointError(err: unknown): OAuthError {
  const error = asMatrixError(err);
  if (error.status === 403) return new OAuthError(400, 'invalid_grant', error.message, {}, err);
  return new OAuthError(error.status === 401 ? 400 : error.status, error.status === 401 ? 'invalid_request' : oauthCodeOf(error), error.message, error.headers(), err);
}

function oauthCodeOf(error: MatrixError): OAuthErrorCode {
  if (error.status === 401) return 'invalid_token';
  if (error.status === 503) return 'temporarily_unavailable';
  if (error.status >= 500) return 'server_error';
  return 'invalid_request';
}

/** Browser routes answer with the page that explains the failure, never with JSON. */
function writePage(ctx: Context, err: unknown, error: MatrixError): void {
  const requestId = ctx.response.get('X-Request-Id');
  ctx.set(error.headers());
  if (error.cause instanceof MatrixError) ctx.set(error.cause.headers());
  const { failure, detail } = pageFailureOf(err, error);
  sendPage(
    ctx,
    failurePage(failure, {
      status: error.status,
      errcode: error.errcode,
      ...(requestId === '' ? {} : { requestId }),
      ...(detail === undefined ? {} : { detail }),
    }),
  );
}

function pageFailureOf(err: unknown, error: MatrixError): { failure: FailureMessageKey; detail?: string } {
  if (err instanceof PageError) return { failure: err.failure };
  const cause = err instanceof MatrixError ? err.cause : err;
  if (cause instanceof MappingError || err instanceof MappingError) return { failure: 'mapping_failed' };
  if (cause instanceof AccountRefusedByHomeserver) return { failure: 'homeserver_refused', detail: `The Matrix server said: ${cause.reason}` };
  if (cause instanceof HomeserverError) return { failure: 'homeserver_unavailable' };
  if (cause instanceof StoreUnavailableError) return { failure: 'store_unavailable' };
  if (cause instanceof UpstreamError) return { failure: 'op_unavailable' };
  if (cause instanceof RateLimited) return { failure: 'rate_limited' };
  if (error.status >= 500) return { failure: 'internal' };
  return { failure: 'internal', detail: error.message };
}

/** Refusal lines: a burst of 10, then one per second; the rest are counted in mcp_rejected_requests_total only. */
const REFUSAL_LOG_BURST = 10;
const REFUSAL_LOG_PER_SECOND = 1;

/**
 * Errors an operator must act on are logged as errors, each one. A client's own mistake or a refusal is counted in
 * metrics and logged at a bounded rate (issue 12 #8: 158k 429s made 35 MB of logs); the next line logged says how
 * many were left out.
 */
function refusalLogger(rejections: Counter<'status' | 'code'> | undefined) {
  let tokens = REFUSAL_LOG_BURST;
  let refilledAt = Date.now();
  let suppressed = 0;
  return function logRefusal(log: Logger | undefined, status: number, code: string, err: unknown): void {
    if (status >= 500 || err instanceof MappingError || (err instanceof MatrixError && err.cause instanceof MappingError)) {
      log?.error({ err: err instanceof Error ? err : new Error(String(err)), code }, 'request.failed');
      return;
    }
    rejections?.inc({ status: String(status), code });
    if (log === undefined) return;
    const now = Date.now();
    tokens = Math.min(REFUSAL_LOG_BURST, tokens + ((now - refilledAt) / 1000) * REFUSAL_LOG_PER_SECOND);
    refilledAt = now;
    if (tokens < 1) {
      suppressed += 1;
      return;
    }
    tokens -= 1;
    const reason = err instanceof Error && err.cause !== undefined ? String(err.cause) : undefined;
    log.info({ code, status, reason, ...(suppressed === 0 ? {} : { suppressed_since_last: suppressed }) }, 'request.rejected');
    suppressed = 0;
  };
}

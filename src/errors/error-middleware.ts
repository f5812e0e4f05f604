import type { Context, Next } from 'koa';
import { MatrixError, matrixErrors } from './matrix-error.js';
import { StoreUnavailableError } from '../store/store.js';

/** A store outage is temporary: 503 with Retry-After, so clients retry instead of dropping their session. */
function storeUnavailable(err: StoreUnavailableError): MatrixError {
  return new MatrixError(503, 'M_UNKNOWN', 'The service is temporarily unavailable, try again later', { headers: { 'Retry-After': '5' } }, err);
}

/**
 * The one place that writes error bodies. Handlers throw MatrixError; anything else is a bug or an unexpected
 * failure and becomes 500 M_UNKNOWN, with the details only in the log.
 */
export async function renderMatrixErrors(ctx: Context, next: Next): Promise<void> {
  try {
    await next();
  } catch (err: unknown) {
    const error = err instanceof MatrixError ? err : err instanceof StoreUnavailableError ? storeUnavailable(err) : matrixErrors.internal(err);
    const log = ctx.state['log'] as import('pino').Logger | undefined;
    if (error.status >= 500) {
      log?.error({ err: err instanceof Error ? err : new Error(String(err)), errcode: error.errcode }, 'request.failed');
    } else {
      log?.info({ errcode: error.errcode, status: error.status, reason: error.cause === undefined ? undefined : String(error.cause) }, 'request.rejected');
    }
    ctx.status = error.status;
    ctx.set('Cache-Control', 'no-store');
    ctx.set(error.headers());
    ctx.body = error.toBody();
  }
}

import type { FailureMessageKey } from '../pages/messages.js';
import { MatrixError, type MatrixErrcode } from './matrix-error.js';

/**
 * A failure of a route a browser visits (SSO): rendered as the page that explains `failure` (pages/messages.ts),
 * with the status and errcode a client would see.
 */
export class PageError extends MatrixError {
  constructor(
    readonly failure: FailureMessageKey,
    status: number,
    errcode: MatrixErrcode,
    cause?: unknown,
  ) {
    super(status, errcode, `failed: ${failure}`, {}, cause);
    this.name = 'PageError';
  }
}

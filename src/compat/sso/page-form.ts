import type { Context } from 'koa';
import type { AppDeps } from '../../app-deps.js';
import { MatrixError } from '../../errors/matrix-error.js';
import { mediaTypeOf, readFormBody } from '../../http/body.js';
import { ssoError, type SsoFailure } from './sso-error.js';

/**
 * The body of a form posted by one of the proxy's own HTML pages (SSO confirmation, the OAuth sign-in page, the
 * account page): url-encoded and bounded. A cross-site form can only send simple content types, and no honest form
 * is oversized, so anything else gets the `refusal` page ("the form could not be checked"), never an action; a
 * trickled body keeps its 408 (and its close).
 */
export async function readPageForm(ctx: Context, deps: AppDeps, options: { readonly maxBytes: number; readonly refusal: SsoFailure }): Promise<URLSearchParams> {
  if (mediaTypeOf(ctx) !== 'application/x-www-form-urlencoded') throw ssoError(options.refusal);
  try {
    return await readFormBody(ctx, { maxBytes: options.maxBytes, deadlineMs: deps.config.request_body_timeout });
  } catch (err: unknown) {
    if (err instanceof MatrixError && err.status === 413) throw ssoError(options.refusal, err);
    throw err;
  }
}

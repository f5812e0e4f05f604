import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { clientAddress } from '../http/request-state.js';
import { RateLimited } from '../security/login-throttle.js';

/**
 * POST <issuer>/device — a user code typed on the device-verification page (RFC 8628 §3.3), or its confirmation.
 * oidc-provider looks the code up and checks its CSRF token; before that, every submission takes a token from the
 * client IP's bucket (rate_limits.device_user_code_per_ip): RFC 8628 §5.1 has the server make guessing codes slow,
 * and this counts wrong guesses and right ones alike, so a guesser learns nothing from the limit.
 */
export async function postDeviceVerification(ctx: Context, deps: AppDeps): Promise<void> {
  if (deps.oauth === undefined) throw new Error('OAuth routes exist only with native_clients: serve');
  // Over the limit: RateLimited, which the renderer turns into the "too many attempts" page with Retry-After.
  await deps.throttle.checkUserCode(clientAddress(ctx)).catch((err: unknown) => {
    if (err instanceof RateLimited) deps.logger.warn({ event: 'oauth.user_code_throttled', ip: clientAddress(ctx) }, 'oauth.user_code_throttled');
    throw err;
  });
  await deps.oauth.handle(ctx);
}

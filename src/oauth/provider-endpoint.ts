import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';

/**
 * The endpoints oidc-provider answers itself (authorization, its resume step, token, registration, JWKS): the
 * request goes to it as it came, under the issuer's path. It writes its own OAuth errors (RFC 6749 §5.2, RFC 7591
 * §3.2.2) and its own error page for the browser steps.
 */
export async function atOAuthProvider(ctx: Context, deps: AppDeps): Promise<void> {
  if (deps.oauth === undefined) throw new Error('OAuth routes exist only with native_clients: serve');
  await deps.oauth.handle(ctx);
}

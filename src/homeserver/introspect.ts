import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { OAuthError } from '../errors/oauth-error.js';
import { bearerTokenOf } from '../http/access-token.js';
import { bodyLimitsOf, readFormFields } from '../http/body.js';
import { matchesAnySecret } from '../security/shared-secret.js';
import { introspect } from './introspection.js';

/**
 * POST /oauth2/introspect (RFC 7662) in Synapse's `matrix_authentication_service` contract: Synapse asks about
 * every access token it is shown, authenticated with the shared secret. Speaks OAuth: errors are OAuth bodies, and
 * an internal fault is a 503 (`IntrospectionUnavailable`), never `active: false`, which would log the user out.
 */
export async function postIntrospect(ctx: Context, deps: AppDeps): Promise<void> {
  // Constant-time check of `Authorization: Bearer <homeserver.secret>` (or a previous secret during a rotation);
  // anything else → 401 (RFC 7662 §2.1). Without delegated mode there is no secret, and no homeserver that
  // introspects: refuse everyone.
  if (!matchesAnySecret(bearerTokenOf(ctx), deps.homeserverSecretDigests)) {
    throw new OAuthError(401, 'invalid_client', 'This endpoint is for the homeserver only', { 'WWW-Authenticate': 'Bearer' });
  }
  const form = await readFormFields(ctx, bodyLimitsOf(deps.config));
  const token = form.get('token');
  if (token === null || token === '') throw new OAuthError(400, 'invalid_request', 'token is required');
  const answer = await introspect(deps, token, {
    hint: form.get('token_type_hint') ?? undefined,
    deviceIdSupported: ctx.get('x-mas-supports-device-id') === '1',
  });
  ctx.set('Cache-Control', 'no-store');
  ctx.body = answer;
}

import type Router from '@koa/router';
import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { MatrixError } from '../errors/matrix-error.js';
import { readBodyText } from '../http/body.js';
import { bearerTokenOf, matchesSecret, secretDigest } from '../security/shared-secret.js';
import { introspect, IntrospectionUnavailable } from './introspection.js';
import { metadataForHomeserver } from './metadata.js';

/**
 * The homeserver-facing API in Synapse's `matrix_authentication_service` contract: the metadata document Synapse
 * reads at start-up, and token introspection for every client request Synapse serves.
 */
export function registerHomeserverFacingRoutes(router: Router, deps: AppDeps): void {
  const homeserverSecret = secretDigest(deps.config.homeserver.secret);
  router.get('/.well-known/openid-configuration', async (ctx) => {
    ctx.set('Cache-Control', 'no-store');
    try {
      ctx.body = await metadataForHomeserver(deps);
    } catch (err: unknown) {
      deps.logger.warn({ err }, 'metadata.unavailable');
      throw new MatrixError(503, 'M_UNKNOWN', 'The identity provider metadata is unavailable', {}, err);
    }
  });

  router.post('/oauth2/introspect', async (ctx) => {
    requireHomeserverSecret(ctx, homeserverSecret);
    const form = await readForm(ctx, deps.config.max_request_body);
    const token = form.get('token');
    ctx.set('Cache-Control', 'no-store');
    if (token === null || token === '') {
      ctx.status = 400;
      ctx.body = { error: 'invalid_request', error_description: 'token is required' };
      return;
    }
    try {
      ctx.body = await introspect(deps, token, {
        hint: form.get('token_type_hint') ?? undefined,
        deviceIdSupported: ctx.get('x-mas-supports-device-id') === '1',
      });
    } catch (err: unknown) {
      // Never `active: false` for an internal fault: Synapse would log the user out. 503 makes Synapse answer 503.
      if (err instanceof IntrospectionUnavailable) {
        deps.logger.warn({ err: err.cause ?? err }, 'introspection.unavailable');
        ctx.status = 503;
        ctx.body = { error: 'temporarily_unavailable', error_description: err.message };
        return;
      }
      throw err;
    }
  });
}

/** Constant-time check of `Authorization: Bearer <homeserver.secret>`; anything else → 401 (RFC 7662 §2.1). */
export function requireHomeserverSecret(ctx: Context, secretDigestValue: Buffer): void {
  if (!matchesSecret(bearerTokenOf(ctx), secretDigestValue)) {
    throw new MatrixError(401, 'M_UNKNOWN_TOKEN', 'This endpoint is for the homeserver only', { headers: { 'WWW-Authenticate': 'Bearer' } });
  }
}

async function readForm(ctx: Context, limitBytes: number): Promise<URLSearchParams> {
  return new URLSearchParams(await readBodyText(ctx, limitBytes));
}

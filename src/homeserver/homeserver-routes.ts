import type Router from '@koa/router';
import type { Context } from 'koa';
import { timingSafeEqual, createHash } from 'node:crypto';
import type { AppDeps } from '../app-deps.js';
import { MatrixError } from '../errors/matrix-error.js';
import { introspect, IntrospectionUnavailable } from './introspection.js';
import { metadataForHomeserver } from './metadata.js';

/**
 * The homeserver-facing API in Synapse's `matrix_authentication_service` contract: the metadata document Synapse
 * reads at start-up, and token introspection for every client request Synapse serves.
 */
export function registerHomeserverFacingRoutes(router: Router, deps: AppDeps): void {
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
    requireHomeserverSecret(ctx, deps.config.homeserver.secret);
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
export function requireHomeserverSecret(ctx: Context, secret: string): void {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(ctx.get('authorization'));
  const presented = createHash('sha256').update(match?.[1] ?? '').digest();
  const expected = createHash('sha256').update(secret).digest();
  if (match === null || !timingSafeEqual(presented, expected)) {
    throw new MatrixError(401, 'M_UNKNOWN_TOKEN', 'This endpoint is for the homeserver only', { headers: { 'WWW-Authenticate': 'Bearer' } });
  }
}

async function readForm(ctx: Context, limitBytes: number): Promise<URLSearchParams> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of ctx.req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limitBytes) throw new MatrixError(413, 'M_TOO_LARGE', 'Request body too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

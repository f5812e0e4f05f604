import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { metadataForHomeserver } from '../homeserver/metadata.js';

/** GET <issuer>/.well-known/openid-configuration (and oauth-authorization-server): discovery at the issuer. */
export async function getOAuthServerMetadata(ctx: Context, deps: AppDeps): Promise<void> {
  ctx.set('Cache-Control', 'public, max-age=600');
  ctx.body = await metadataForHomeserver(deps);
}

/**
 * GET auth_metadata / auth_issuer on the client listener with native_clients: serve: the proxy answers them itself
 * (the document Synapse would relay in delegated mode; in the modes where the homeserver has no auth service —
 * appservice, JWT — only the proxy can). MSC2965's earlier auth_issuer gets `{ issuer }`.
 */
export async function getServedAuthMetadata(ctx: Context, deps: AppDeps): Promise<void> {
  const metadata = await metadataForHomeserver(deps);
  ctx.set('Cache-Control', 'public, max-age=600');
  ctx.body = ctx.path.endsWith('/auth_issuer') ? { issuer: metadata['issuer'] } : metadata;
}

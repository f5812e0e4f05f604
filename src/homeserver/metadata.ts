import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { OAuthError } from '../errors/oauth-error.js';
import { oauthServerMetadata } from '../oauth/metadata.js';
import { UpstreamError } from '../oidc/upstream.js';

/** GET /.well-known/openid-configuration — the document Synapse reads from its auth service at start-up. */
export async function getMetadata(ctx: Context, deps: AppDeps): Promise<void> {
  ctx.set('Cache-Control', 'no-store');
  try {
    ctx.body = await metadataForHomeserver(deps);
  } catch (err: unknown) {
    if (!(err instanceof UpstreamError)) throw err;
    throw new OAuthError(503, 'temporarily_unavailable', 'The identity provider metadata is unavailable', {}, err);
  }
}

/**
 * The metadata document Synapse fetches from its auth service: the upstream OP's own metadata (so Synapse's
 * /auth_metadata sends native OIDC clients straight to the OP) plus `account_management_uri`, which Synapse requires.
 */
export async function metadataForHomeserver(deps: AppDeps): Promise<Record<string, unknown>> {
  // native_clients: serve — the homeserver's auth server is this proxy, not the upstream OP.
  if (deps.config.native_clients === 'serve') return oauthServerMetadata(deps.config);
  const provider = primaryProvider(deps);
  if (provider === undefined) {
    // No OP configured: still a valid document for Synapse, naming this proxy as the issuer.
    return { issuer: deps.config.public_baseurl, account_management_uri: deps.config.homeserver.account_management_uri ?? deps.config.public_baseurl };
  }
  const upstream = await provider.metadata();
  const issuer = typeof upstream['issuer'] === 'string' ? upstream['issuer'] : provider.issuer;
  return {
    ...upstream,
    issuer,
    account_management_uri: deps.config.homeserver.account_management_uri ?? defaultAccountUri(issuer),
  };
}

/** The OP whose tokens native clients use: the password-login provider, else the first one configured. */
export function primaryProvider(deps: AppDeps) {
  const idpId = deps.config.password_login.idp_id ?? deps.config.oidc_providers[0]?.idp_id;
  return idpId === undefined ? undefined : deps.providers.get(idpId);
}

/** Keycloak's account console lives at `<issuer>/account`; other OPs should configure it explicitly. */
function defaultAccountUri(issuer: string): string {
  return `${issuer.replace(/\/$/, '')}/account`;
}

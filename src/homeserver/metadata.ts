import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { OAuthError } from '../errors/oauth-error.js';
import { oauthServerMetadata } from '../oauth/metadata.js';
import { OWN_PREFIX } from '../http/own-prefix.js';
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
  if (deps.config.native_clients === 'serve') return { ...oauthServerMetadata(deps.config), ...accountManagement(deps) };
  const provider = primaryProvider(deps);
  const management = accountManagement(deps);
  if (provider === undefined) {
    // No OP configured: still a valid document for Synapse, naming this proxy as the issuer.
    return { issuer: deps.config.public_baseurl, ...management };
  }
  const upstream = await provider.metadata();
  const issuer = typeof upstream['issuer'] === 'string' ? upstream['issuer'] : provider.issuer;
  return { ...upstream, issuer, ...management };
}

/**
 * MSC4191 deep-link actions the account page understands: the stable names, and the older `org.matrix.session_*`
 * names Element X and others still send (MAS lists both too).
 */
export const ACCOUNT_ACTIONS_SUPPORTED = [
  'org.matrix.profile',
  'org.matrix.devices_list',
  'org.matrix.device_view',
  'org.matrix.device_delete',
  'org.matrix.cross_signing_reset',
  'org.matrix.account_deactivate',
  'org.matrix.sessions_list',
  'org.matrix.session_view',
  'org.matrix.session_end',
] as const;

/**
 * `account_management_uri` (required by Synapse; Synapse sends clients there, e.g. for a cross-signing reset) and,
 * when it is the proxy's own account page, `account_management_actions_supported` (MSC4191). An admin's
 * `homeserver.account_management_uri` wins: then the actions are that page's business and not advertised.
 */
function accountManagement(deps: Pick<AppDeps, 'config'>): Record<string, unknown> {
  const configured = deps.config.homeserver.account_management_uri;
  if (configured !== undefined || !deps.config.account.enabled) return { account_management_uri: accountManagementUri(deps) };
  return { account_management_uri: accountManagementUri(deps), account_management_actions_supported: [...ACCOUNT_ACTIONS_SUPPORTED] };
}

/** Where users manage their account, as the metadata advertises it (without asking the OP). */
export function accountManagementUri(deps: Pick<AppDeps, 'config'>): string {
  const configured = deps.config.homeserver.account_management_uri;
  if (configured !== undefined) return configured;
  if (deps.config.account.enabled) return accountPageUri(deps);
  const idpId = deps.config.password_login.idp_id ?? deps.config.oidc_providers[0]?.idp_id;
  const issuer = deps.config.oidc_providers.find((provider) => provider.idp_id === idpId)?.issuer;
  return issuer === undefined ? deps.config.public_baseurl : defaultAccountUri(issuer);
}

/** The proxy's account page (src/account/). */
export function accountPageUri(deps: Pick<AppDeps, 'config'>): string {
  return `${deps.config.public_baseurl}${OWN_PREFIX.slice(1)}/account`;
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

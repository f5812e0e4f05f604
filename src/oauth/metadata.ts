import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { OWN_PREFIX } from '../http/own-prefix.js';
import { issuerOf, OAUTH_ROUTES } from './authorization-server.js';

/** Where the account page (issue 15) lives: MSC4191's account_management_uri. */
export const ACCOUNT_PAGE_PATH = `${OWN_PREFIX}/account`;

/** MSC4191 actions the account page supports (stable names and the prototype names older clients send). */
const ACCOUNT_ACTIONS = ['org.matrix.profile', 'org.matrix.devices_list', 'org.matrix.device_view', 'org.matrix.device_delete', 'org.matrix.account_deactivate'];

/**
 * RFC 8414 metadata of the proxy's OAuth 2.0 server, built from public_baseurl (never from the request: Synapse
 * fetches it on the homeserver-facing listener and relays it to clients as auth_metadata). The fields MSC2965 lists
 * as required for the Matrix flow, plus MSC4191's account management and `prompt_values_supported: [create]`.
 */
export function oauthServerMetadata(config: AppDeps['config']): Record<string, unknown> {
  const issuer = issuerOf(config);
  const accountUri = config.homeserver.account_management_uri ?? `${config.public_baseurl.replace(/\/$/, '')}${ACCOUNT_PAGE_PATH}`;
  return {
    issuer,
    authorization_endpoint: `${issuer}${OAUTH_ROUTES.authorization}`,
    token_endpoint: `${issuer}${OAUTH_ROUTES.token}`,
    registration_endpoint: `${issuer}${OAUTH_ROUTES.registration}`,
    revocation_endpoint: `${issuer}${OAUTH_ROUTES.revocation}`,
    jwks_uri: `${issuer}${OAUTH_ROUTES.jwks}`,
    response_types_supported: ['code'],
    response_modes_supported: ['query', 'fragment'],
    grant_types_supported: ['authorization_code', 'refresh_token'],
    code_challenge_methods_supported: ['S256'],
    token_endpoint_auth_methods_supported: ['none'],
    revocation_endpoint_auth_methods_supported: ['none'],
    scopes_supported: ['openid', 'urn:matrix:client:api:*', 'urn:matrix:org.matrix.msc2967.client:api:*'],
    subject_types_supported: ['public'],
    id_token_signing_alg_values_supported: ['RS256'],
    prompt_values_supported: ['create', 'login', 'consent'],
    claims_supported: ['sub'],
    account_management_uri: accountUri,
    account_management_actions_supported: ACCOUNT_ACTIONS,
    'org.matrix.msc4191.account_management_uri': accountUri,
    'org.matrix.msc4191.account_management_actions_supported': ACCOUNT_ACTIONS,
  };
}

/** GET <issuer>/.well-known/openid-configuration (and oauth-authorization-server): OIDC discovery at the issuer. */
export function getOAuthServerMetadata(ctx: Context, deps: AppDeps): void {
  ctx.set('Cache-Control', 'public, max-age=600');
  ctx.body = oauthServerMetadata(deps.config);
}

/**
 * GET auth_metadata / auth_issuer on the client listener with native_clients: serve: the proxy answers them itself
 * (the same document Synapse would relay in delegated mode; in the modes where the homeserver has no auth service —
 * appservice, JWT — only the proxy can). MSC2965's earlier auth_issuer gets `{ issuer }`.
 */
export function getServedAuthMetadata(ctx: Context, deps: AppDeps): void {
  const metadata = oauthServerMetadata(deps.config);
  ctx.set('Cache-Control', 'public, max-age=600');
  ctx.body = ctx.path.endsWith('/auth_issuer') ? { issuer: metadata['issuer'] } : metadata;
}

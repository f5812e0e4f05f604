import type { AppDeps } from '../app-deps.js';
import { issuerOf, OAUTH_ROUTES } from './oauth-routes.js';
import { DEVICE_CODE_GRANT_TYPE } from './client-registration-rules.js';

/**
 * RFC 8414 metadata of the proxy's OAuth 2.0 server, built from public_baseurl (never from the request: Synapse
 * fetches it on the homeserver-facing listener and relays it to clients as auth_metadata). The fields MSC2965 lists
 * as required for the Matrix flow, `prompt_values_supported: [create]` and MSC4341's device authorization grant;
 * homeserver/metadata.ts adds MSC4191's account management (the account page, issue 15).
 */
export function oauthServerMetadata(config: AppDeps['config']): Record<string, unknown> {
  const issuer = issuerOf(config);
  return {
    issuer,
    authorization_endpoint: `${issuer}${OAUTH_ROUTES.authorization}`,
    token_endpoint: `${issuer}${OAUTH_ROUTES.token}`,
    registration_endpoint: `${issuer}${OAUTH_ROUTES.registration}`,
    revocation_endpoint: `${issuer}${OAUTH_ROUTES.revocation}`,
    // RFC 8628 §4 / MSC4341: the device authorization grant, for clients without a usable browser (TV, CLI).
    device_authorization_endpoint: `${issuer}${OAUTH_ROUTES.deviceAuthorization}`,
    jwks_uri: `${issuer}${OAUTH_ROUTES.jwks}`,
    response_types_supported: ['code'],
    response_modes_supported: ['query', 'fragment'],
    grant_types_supported: ['authorization_code', 'refresh_token', DEVICE_CODE_GRANT_TYPE],
    code_challenge_methods_supported: ['S256'],
    token_endpoint_auth_methods_supported: ['none'],
    revocation_endpoint_auth_methods_supported: ['none'],
    scopes_supported: ['openid', 'urn:matrix:client:api:*', 'urn:matrix:org.matrix.msc2967.client:api:*'],
    subject_types_supported: ['public'],
    id_token_signing_alg_values_supported: ['RS256'],
    prompt_values_supported: ['create', 'login', 'consent'],
    claims_supported: ['sub'],
  };
}

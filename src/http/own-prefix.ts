/** The prefix of the proxy's own pages and endpoints (SSO callback, confirmation, back-channel logout, admin API). */
export const OWN_PREFIX = '/_matrix-compat-proxy';

/** The OAuth 2.0 server's prefix (native_clients: serve): the issuer is public_baseurl + this path. */
export const OAUTH_PREFIX = `${OWN_PREFIX}/oauth2`;

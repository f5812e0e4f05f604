/** The prefix of the proxy's own pages and endpoints (SSO callback, confirmation, back-channel logout, admin API). */
export const OWN_PREFIX = '/_matrix-compat-proxy';

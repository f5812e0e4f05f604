import type { IncomingMessage } from 'node:http';
import type { Config } from '../config/schema.js';
import { OAUTH_PREFIX } from '../http/own-prefix.js';

/*
 * What the routes, the metadata and the interaction pages need to know of the OAuth server (native_clients: serve)
 * without loading it: authorization-server.ts brings in oidc-provider, about 180 modules and some 12 MB of the proxy's
 * memory, and build-deps.ts loads it only when the server is on.
 */

/** The issuer: stable, under public_baseurl, so it survives moving the proxy between hosts behind one name. */
export function issuerOf(config: Pick<Config, 'public_baseurl'>): string {
  return `${config.public_baseurl.replace(/\/$/, '')}${OAUTH_PREFIX}`;
}

/** The endpoints, all under the issuer (oidc-provider's route names, plus the proxy's own revocation). */
export const OAUTH_ROUTES = {
  authorization: '/auth',
  token: '/token',
  registration: '/reg',
  jwks: '/jwks',
  revocation: '/revoke',
  interaction: '/interaction',
  /** RFC 8628 §3.1, where the device asks for its codes (oidc-provider's default path). */
  deviceAuthorization: '/device/auth',
  /** RFC 8628 §3.3 verification_uri, the user's page; `/device/:uid` resumes it after sign-in and consent. */
  codeVerification: '/device',
} as const;

/**
 * oidc-provider builds URLs and cookie flags from the request: make it see the public URL, never a listener address
 * or a client-chosen Host (the proxy's own routing already decided this request is ours).
 */
export function asPublicRequest(req: IncomingMessage, server: { readonly publicBaseUrl: string }): void {
  const publicUrl = new URL(server.publicBaseUrl);
  req.headers['host'] = publicUrl.host;
  req.headers['x-forwarded-host'] = publicUrl.host;
  req.headers['x-forwarded-proto'] = publicUrl.protocol.slice(0, -1);
}

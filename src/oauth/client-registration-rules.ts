/**
 * What MSC2966 ("Usage of OAuth 2.0 Dynamic Client Registration in Matrix", in the spec since v1.15, "Client
 * registration") requires of a client's metadata, checked before the registration reaches oidc-provider, which
 * knows RFC 7591 but not Matrix's host and redirect-URI rules. The rules are the same as RFC 8252 §7 for native
 * apps; the point of all of them is that a client can only name redirect URIs it demonstrably controls.
 */

export type RegistrationRefusal = { readonly error: 'invalid_client_metadata' | 'invalid_redirect_uri'; readonly description: string };

/** RFC 8628 §7.2's grant type URN for the device authorization grant. */
export const DEVICE_CODE_GRANT_TYPE = 'urn:ietf:params:oauth:grant-type:device_code';
/**
 * The grant types Matrix clients use (MSC2964; MSC4341 for the device grant); MSC2966: "the server MUST ignore
 * grant_types … that it does not understand".
 */
const UNDERSTOOD_GRANT_TYPES = new Set(['authorization_code', 'refresh_token', DEVICE_CODE_GRANT_TYPE]);
const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]']);
/** Human-visible URIs that MUST share the client_uri's host (localised variants, `tos_uri#fr`, included). */
const USER_VISIBLE_URI_FIELDS = ['logo_uri', 'tos_uri', 'policy_uri'] as const;

/**
 * The metadata as oidc-provider should register it (unknown grant types dropped), or why it is refused. Refusals
 * use RFC 7591 §3.2.2's codes: `invalid_redirect_uri` for a redirect URI, `invalid_client_metadata` otherwise.
 */
export function checkClientMetadata(metadata: Readonly<Record<string, unknown>>): { ok: true; metadata: Record<string, unknown> } | ({ ok: false } & RegistrationRefusal) {
  const refuse = (error: RegistrationRefusal['error'], description: string) => ({ ok: false as const, error, description });

  // client_uri: required here (MSC2966: the server MAY refuse a missing one; every rule below is relative to it).
  const clientUri = httpsUrl(metadata['client_uri']);
  if (clientUri === undefined) return refuse('invalid_client_metadata', 'client_uri is required and must be an https URL without user or password');
  const base = clientUri.hostname;

  for (const [key, value] of Object.entries(metadata)) {
    const field = key.split('#')[0] ?? key;
    if (!(USER_VISIBLE_URI_FIELDS as readonly string[]).includes(field)) continue;
    const url = httpsUrl(value);
    if (url === undefined || !onHostOf(url.hostname, base)) return refuse('invalid_client_metadata', `${key} must be an https URL on the host of client_uri or a subdomain of it`);
  }

  const applicationType = metadata['application_type'] ?? 'web';
  if (applicationType !== 'web' && applicationType !== 'native') return refuse('invalid_client_metadata', 'application_type must be web or native');

  // Which grants: the authorization code grant (MSC2964) and/or the device authorization grant (RFC 8628, MSC4341),
  // each with refresh (both MSCs: the server MUST issue a refresh token). RFC 7591 §2: grant_types defaults to
  // authorization_code.
  const grantTypes = metadata['grant_types'] ?? ['authorization_code'];
  if (!Array.isArray(grantTypes)) return refuse('invalid_client_metadata', 'grant_types must be a list');
  const understood = grantTypes.filter((grant): grant is string => typeof grant === 'string' && UNDERSTOOD_GRANT_TYPES.has(grant));
  const codeGrant = understood.includes('authorization_code');
  if (!codeGrant && !understood.includes(DEVICE_CODE_GRANT_TYPE)) return refuse('invalid_client_metadata', `grant_types must include authorization_code or ${DEVICE_CODE_GRANT_TYPE}`);
  if (!understood.includes('refresh_token')) return refuse('invalid_client_metadata', 'grant_types must include refresh_token');

  // Redirect URIs and `code` are what the authorization code grant needs (the spec's client metadata: "at least one
  // URI is required to use the authorization code grant"); a device-only client has neither, and any redirect URI it
  // names anyway is held to the same rules.
  const redirectUris = metadata['redirect_uris'] ?? [];
  if (!Array.isArray(redirectUris) || !redirectUris.every((uri) => typeof uri === 'string') || (codeGrant && redirectUris.length === 0)) {
    return refuse('invalid_redirect_uri', 'redirect_uris must list at least one URI');
  }
  for (const uri of redirectUris as string[]) {
    const problem = applicationType === 'web' ? webRedirectProblem(uri, base) : nativeRedirectProblem(uri, base);
    if (problem !== undefined) return refuse('invalid_redirect_uri', `${uri}: ${problem}`);
  }

  // RFC 7591 §2.1: `code` and authorization_code go together. Its default (["code"]) only applies to code clients;
  // an empty list counts as absent (the authorization server's client default is [], so that a device-only client
  // that sends none is not taken for a code client that forgot its redirect URIs).
  const responseTypes = metadata['response_types'] ?? [];
  if (!Array.isArray(responseTypes)) return refuse('invalid_client_metadata', 'response_types must be a list');
  if (responseTypes.length > 0 && codeGrant !== responseTypes.includes('code')) {
    return refuse('invalid_client_metadata', codeGrant ? 'response_types must include code' : 'response_types code needs the authorization_code grant');
  }
  // Matrix clients are public (MSC2966: the server MUST support `none`); a client secret on a phone is no secret.
  const authMethod = metadata['token_endpoint_auth_method'] ?? 'none';
  if (authMethod !== 'none') return refuse('invalid_client_metadata', 'token_endpoint_auth_method must be none: this server registers public clients only');

  return {
    ok: true,
    metadata: {
      ...metadata,
      application_type: applicationType,
      redirect_uris: redirectUris,
      response_types: codeGrant ? ['code'] : [],
      grant_types: understood,
      token_endpoint_auth_method: 'none',
    },
  };
}

/** MSC2966 "Web clients" (and native apps' claimed https URIs): https, no user info, on the client_uri's host. */
function webRedirectProblem(uri: string, base: string): string | undefined {
  const url = parse(uri);
  if (url === undefined) return 'not a URI';
  if (url.hash !== '' || uri.includes('#')) return 'a redirect URI must not have a fragment';
  if (url.protocol !== 'https:') return 'a web redirect URI must use https';
  if (url.username !== '' || url.password !== '') return 'a redirect URI must not carry a user or password';
  if (!onHostOf(url.hostname, base)) return 'a redirect URI must be on the host of client_uri or a subdomain of it';
  return undefined;
}

/**
 * MSC2966 "Native clients" (RFC 8252 §7): a private-use scheme that is the client_uri's host in reverse-DNS
 * notation (or starts with it plus a dot) with no authority; an http loopback URI without a port (any port is then
 * accepted at authorization time); or a claimed https URI under the web rules.
 */
function nativeRedirectProblem(uri: string, base: string): string | undefined {
  const url = parse(uri);
  if (url === undefined) return 'not a URI';
  if (url.hash !== '' || uri.includes('#')) return 'a redirect URI must not have a fragment';
  if (url.protocol === 'https:') return webRedirectProblem(uri, base);
  if (url.protocol === 'http:') {
    if (!LOOPBACK_HOSTS.has(url.hostname)) return 'an http redirect URI must be on the loopback interface (localhost, 127.0.0.1, [::1])';
    if (url.port !== '' || /^http:\/\/[^/]*:\d*(\/|$)/.test(uri)) return 'a loopback redirect URI is registered without a port';
    if (url.username !== '' || url.password !== '') return 'a redirect URI must not carry a user or password';
    return undefined;
  }
  const scheme = url.protocol.slice(0, -1);
  const reversed = base.split('.').reverse().join('.');
  if (!scheme.includes('.') || (scheme !== reversed && !scheme.startsWith(`${reversed}.`))) {
    return `a private-use scheme must be the client_uri host in reverse-DNS notation (${reversed} or ${reversed}.something)`;
  }
  if (uri.slice(scheme.length + 1).startsWith('//')) return 'a private-use scheme URI must not have an authority (one slash or none after the scheme)';
  return undefined;
}

function httpsUrl(value: unknown): URL | undefined {
  if (typeof value !== 'string') return undefined;
  const url = parse(value);
  if (url === undefined || url.protocol !== 'https:' || url.username !== '' || url.password !== '' || url.hostname === '') return undefined;
  return url;
}

/** The same host or a subdomain of it (MSC2966: "port number, path and query components MAY be different"). */
function onHostOf(host: string, base: string): boolean {
  return host === base || host.endsWith(`.${base}`);
}

function parse(text: string): URL | undefined {
  try {
    return new URL(text);
  } catch {
    return undefined;
  }
}

/**
 * Whether the client's client_uri is vouched for: registration holds every redirect URI to its host (MSC2966), so a
 * client that completes a code flow really is served there. A device-only client has none, and its client_uri is only
 * what it claims.
 */
export function hasRedirectUris(redirectUris: unknown): boolean {
  return Array.isArray(redirectUris) && redirectUris.length > 0;
}

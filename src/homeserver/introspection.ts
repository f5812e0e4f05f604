import type { AppDeps } from '../app-deps.js';
import type { Session } from '../sessions/session.js';
import { looksLikeOurToken } from '../sessions/tokens.js';
import { isAccountHomeserverToken } from '../sessions/account-sessions.js';
import { admitSession } from '../sessions/revalidation.js';
import { introspectAtOp } from './native-token-relay.js';
import { API_SCOPES, DEVICE_SCOPE_PREFIXES, INACTIVE, IntrospectionUnavailable } from './introspection-answer.js';

export interface IntrospectionRequest {
  readonly hint: string | undefined;
  /** Synapse sent `X-MAS-Supports-Device-Id: 1`: give the device only as `device_id`, not as a scope. */
  readonly deviceIdSupported: boolean;
}

/**
 * RFC 7662 answer for Synapse. The proxy's own tokens are answered from the store; any other token belongs to a
 * native OIDC client and is relayed to the OP (staged rollout). Infrastructure faults throw
 * IntrospectionUnavailable — never `active: false`.
 */
export async function introspect(deps: AppDeps, token: string, request: IntrospectionRequest): Promise<Record<string, unknown>> {
  if (looksLikeOurToken(token)) return introspectOwnToken(deps, token, request);
  if (isAccountHomeserverToken(token)) return introspectAccountPageToken(deps, token, request);
  return introspectAtOp(deps, token);
}

/**
 * The account page's own homeserver token (sessions/account-sessions.ts): the user, no device, for as long as the
 * page session lasts. Synapse accepts device-less tokens (`requester.device_id` None), which is all `GET /devices` needs.
 */
async function introspectAccountPageToken(deps: AppDeps, token: string, request: IntrospectionRequest): Promise<Record<string, unknown>> {
  if (request.hint !== undefined && request.hint !== 'access_token') return INACTIVE;
  let session;
  try {
    session = await deps.accountSessions.byHomeserverToken(token);
  } catch (err: unknown) {
    throw new IntrospectionUnavailable('The session store is unavailable', err);
  }
  if (session === undefined) return INACTIVE;
  const now = deps.clock.now();
  return {
    active: true,
    scope: API_SCOPES.join(' '),
    client_id: 'matrix-compat-proxy/account',
    username: session.localpart,
    sub: session.sub,
    token_type: 'access_token',
    iat: Math.floor(session.createdAt / 1000),
    exp: Math.floor(session.expiresAt / 1000),
    expires_in: Math.max(0, Math.floor((session.expiresAt - now) / 1000)),
  };
}

async function introspectOwnToken(deps: AppDeps, token: string, request: IntrospectionRequest): Promise<Record<string, unknown>> {
  // Synapse only ever asks about access tokens; a refresh token must never pass as one.
  if (request.hint !== undefined && request.hint !== 'access_token') return INACTIVE;
  let session: Session;
  try {
    const result = await deps.sessions.authenticate(token);
    if (!result.ok) return INACTIVE;
    session = result.session;
    await deps.sessions.touch(session);
  } catch (err: unknown) {
    throw new IntrospectionUnavailable('The session store is unavailable', err);
  }
  // Soft logout and re-validation at the OP (issue 7); an unreachable OP past the grace period is a 503, not a logout.
  const admission = await admitSession(deps, session).catch((err: unknown) => Promise.reject(new IntrospectionUnavailable('The session could not be re-validated', err)));
  if (admission === 'inactive') return INACTIVE;
  if (admission === 'unavailable') throw new IntrospectionUnavailable('The identity provider is unreachable and the grace period is over', undefined);
  const now = deps.clock.now();
  return {
    active: true,
    scope: scopeFor(session.deviceId, request.deviceIdSupported),
    // A native session (native_clients: serve) names the OAuth client it was issued to, as MAS does.
    client_id: session.oauthClientId ?? 'matrix-compat-proxy',
    username: session.localpart,
    sub: session.origin.kind === 'appservice' ? session.localpart : session.origin.sub,
    device_id: session.deviceId,
    token_type: 'access_token',
    iat: Math.floor(session.createdAt / 1000),
    ...(session.accessExpiresAt === undefined
      ? {}
      : { exp: Math.floor(session.accessExpiresAt / 1000), expires_in: Math.max(0, Math.floor((session.accessExpiresAt - now) / 1000)) }),
  };
}

function scopeFor(deviceId: string, deviceIdSupported: boolean): string {
  if (deviceIdSupported) return API_SCOPES.join(' ');
  return [...API_SCOPES, ...DEVICE_SCOPE_PREFIXES.map((prefix) => prefix + deviceId)].join(' ');
}


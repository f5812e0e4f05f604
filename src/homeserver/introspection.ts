import type { AppDeps } from '../app-deps.js';
import { opSubjectOf, type Session } from '../sessions/session.js';
import type { AuthenticateResult } from '../sessions/session-store.js';
import { looksLikeOurToken } from '../sessions/tokens.js';
import { isScopeToken } from '../sessions/device-id.js';
import { isAccountHomeserverToken } from '../sessions/account-sessions.js';
import { admissionWithoutWaiting, admitSession } from '../sessions/revalidation.js';
import { introspectAtOp } from './native-token-relay.js';
import { API_SCOPES, DEVICE_SCOPE_PREFIXES, INACTIVE, IntrospectionUnavailable } from './introspection-answer.js';

export interface IntrospectionRequest {
  readonly hint: string | undefined;
  /** Synapse sent `X-MAS-Supports-Device-Id: 1`: give the device only as `device_id`, not as a scope. */
  readonly deviceIdSupported: boolean;
}

/**
 * RFC 7662 answer for Synapse. The proxy's own tokens, and the homeserver's own tokens imported by `migrate synapse`
 * (issue 14: `syt_…`, and older macaroon or opaque ones, recognised by the hash of the whole token whatever its
 * shape), are answered from the store; any other token belongs to a native OIDC client and is relayed to the OP
 * (staged rollout). Infrastructure faults throw IntrospectionUnavailable — never `active: false`.
 */
export async function introspect(deps: AppDeps, token: string, request: IntrospectionRequest): Promise<Record<string, unknown>> {
  if (!looksLikeOurToken(token) && isAccountHomeserverToken(token)) return introspectAccountPageToken(deps, token, request);
  // Synapse only ever asks about access tokens; a refresh token must never pass as one.
  if (request.hint !== undefined && request.hint !== 'access_token') return looksLikeOurToken(token) ? INACTIVE : introspectAtOp(deps, token);
  let result: AuthenticateResult;
  try {
    // A foreign token costs one store read (its import marker) before it goes to the OP.
    result = await deps.sessions.authenticate(token);
  } catch (err: unknown) {
    throw new IntrospectionUnavailable('The session store is unavailable', err);
  }
  if (!result.ok && result.reason === 'foreign') return introspectAtOp(deps, token);
  // Awaited rather than returned: an async function that returns a promise adopts it through an extra job and
  // `then` (ECMA-262 NewPromiseResolveThenableJob); `await` takes V8's cheaper path (issue 19).
  return await introspectOwnToken(deps, result, request);
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

async function introspectOwnToken(deps: AppDeps, result: AuthenticateResult, request: IntrospectionRequest): Promise<Record<string, unknown>> {
  let session: Session;
  try {
    if (!result.ok) return INACTIVE;
    session = result.session;
    await deps.sessions.touch(session);
  } catch (err: unknown) {
    throw new IntrospectionUnavailable('The session store is unavailable', err);
  }
  // Soft logout and re-validation at the OP (issue 7); an unreachable OP past the grace period is a 503, not a logout.
  let admission;
  try {
    // Awaited only when there is something to wait for (a re-validation due): one async call less otherwise.
    admission = admissionWithoutWaiting(deps, session) ?? (await admitSession(deps, session));
  } catch (err: unknown) {
    throw new IntrospectionUnavailable('The session could not be re-validated', err);
  }
  if (admission === 'inactive') return INACTIVE;
  if (admission === 'unavailable') throw new IntrospectionUnavailable('The identity provider is unreachable and the grace period is over', undefined);
  // A device that is no scope-token cannot be told to a homeserver that reads devices from `scope` (MAS does the
  // same): inactive, never a scope list the device id could add to (issue 12 #3).
  if (!request.deviceIdSupported && !isScopeToken(session.deviceId)) return INACTIVE;
  const answer: Record<string, unknown> = {
    active: true,
    scope: scopeFor(session.deviceId, request.deviceIdSupported),
    // A native session (native_clients: serve) names the OAuth client it was issued to, as MAS does.
    client_id: session.oauthClientId ?? 'matrix-compat-proxy',
    username: session.localpart,
    sub: opSubjectOf(session)?.sub ?? session.localpart,
    device_id: session.deviceId,
    token_type: 'access_token',
    iat: Math.floor(session.createdAt / 1000),
  };
  // Added in place, last (the same fields in the same order as before): no spread of a temporary object per answer.
  if (session.accessExpiresAt !== undefined) {
    answer['exp'] = Math.floor(session.accessExpiresAt / 1000);
    answer['expires_in'] = Math.max(0, Math.floor((session.accessExpiresAt - deps.clock.now()) / 1000));
  }
  return answer;
}

/** The same strings scopeFor would join on every introspection, joined once. */
const API_SCOPE = API_SCOPES.join(' ');

function scopeFor(deviceId: string, deviceIdSupported: boolean): string {
  if (deviceIdSupported) return API_SCOPE;
  return [API_SCOPE, ...DEVICE_SCOPE_PREFIXES.map((prefix) => prefix + deviceId)].join(' ');
}


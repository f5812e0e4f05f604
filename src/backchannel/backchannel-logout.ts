import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { MatrixError } from '../errors/matrix-error.js';
import { OAuthError } from '../errors/oauth-error.js';
import { bodyLimitsOf, mediaTypeOf, readFormBody } from '../http/body.js';
import { logOf, paramOf } from '../http/request-state.js';
import { UpstreamError, type LogoutTokenClaims, type UpstreamProvider } from '../oidc/upstream.js';
import { applyOpLogout } from '../sessions/op-logouts.js';

/**
 * POST /_matrix-compat-proxy/backchannel-logout/:idpId — the OpenID Connect Back-Channel Logout 1.0 receiver, one
 * URL per provider. This endpoint speaks OAuth, not Matrix: 200 with `Cache-Control: no-store` when the logout was
 * processed (also when it matched no session), 400 with an RFC 6749 §5.2-style body otherwise (spec §2.8). What a
 * logout ends is the model's business (sessions/op-logouts.ts); this file parses, verifies and refuses replays.
 */

/** Why a logout request was refused; collapsed into OAuth error bodies in one place. */
type LogoutFailure = 'not_form' | 'missing_token' | 'invalid_token' | 'replayed' | 'processing_failed';

/**
 * How long a `jti` is remembered beyond the token's `exp` (or, without `exp`, at all): longer than any token is
 * accepted (oidc/logout-token.ts: iat up to 5 minutes ahead, and without exp at most 5 minutes old).
 */
const DEFAULT_JTI_MEMORY_MS = 15 * 60_000;

/**
 * The longest a jti is remembered, whatever `exp` says: a validly signed token with an `exp` millions of years
 * ahead must not pin a key for that long (or fail the store write). A token issued longer ago than this is refused
 * outright (its jti could have been forgotten); §2.4 expects logout tokens to live minutes, not days.
 */
const MAX_JTI_MEMORY_MS = 24 * 3600_000;

const jtiKey = (idpId: string, jti: string) => `backchannel-jti:${idpId}:${jti}`;

class LogoutRefused extends Error {
  constructor(
    readonly failure: LogoutFailure,
    cause?: unknown,
  ) {
    super(failure, cause === undefined ? undefined : { cause });
  }
}

export async function postBackchannelLogout(ctx: Context, deps: AppDeps): Promise<void> {
  const idpId = paramOf(ctx, 'idpId');
  const provider = deps.providers.get(idpId);
  const providerConfig = deps.config.oidc_providers.find((candidate) => candidate.idp_id === idpId);
  if (provider === undefined || providerConfig?.backchannel_logout_enabled !== true) {
    throw new OAuthError(404, 'invalid_request', 'Back-channel logout is not enabled for this provider');
  }
  const log = logOf(ctx, deps.logger);
  try {
    const logoutToken = await readLogoutToken(ctx, deps);
    const claims = await verify(provider, logoutToken);
    await rememberJti(deps, idpId, claims);
    try {
      const effect = await applyOpLogout(deps, idpId, claims, {
        mode: providerConfig.backchannel_logout_mode,
        ignoreSub: providerConfig.backchannel_logout_ignore_sub,
      });
      log.info({ event: 'backchannel_logout.ok', idp_id: idpId, by: claims.sid === undefined ? 'sub' : 'sid', ...effect }, 'backchannel_logout.ok');
    } catch (err: unknown) {
      // Not processed: forget the jti so the OP's retry of this very token is not refused as a replay.
      await deps.store.delete(jtiKey(idpId, claims.jti)).catch(() => undefined);
      throw new LogoutRefused('processing_failed', err);
    }
  } catch (err: unknown) {
    if (!(err instanceof LogoutRefused)) throw err;
    if (err.failure === 'processing_failed') log.error({ err: err.cause, idp_id: idpId }, 'backchannel_logout.failed');
    else log.info({ idp_id: idpId, reason: err.failure, detail: err.cause instanceof Error ? err.cause.message : undefined }, 'backchannel_logout.rejected');
    throw refusal(err.failure, err);
  }
  ctx.set('Cache-Control', 'no-store');
  ctx.body = '';
  ctx.status = 200;
}

/** The body through the one body reader (size limit and deadline; a trickled body gets its 408 before the close). */
async function readLogoutToken(ctx: Context, deps: AppDeps): Promise<string> {
  const type = mediaTypeOf(ctx);
  if (type !== '' && type !== 'application/x-www-form-urlencoded') throw new LogoutRefused('not_form');
  let form: URLSearchParams;
  try {
    form = await readFormBody(ctx, bodyLimitsOf(deps.config));
  } catch (err: unknown) {
    // Oversized: no logout token looks like that (a 408 for a trickled body stays a 408).
    if (err instanceof MatrixError && err.status === 413) throw new LogoutRefused('not_form', err);
    throw err;
  }
  const tokens = form.getAll('logout_token');
  if (tokens.length !== 1 || tokens[0] === '') throw new LogoutRefused('missing_token');
  return tokens[0] as string;
}

/** Signature, iss, aud, iat/exp, sub and/or sid, events, no nonce: all of §2.6, checked in oidc/. */
async function verify(provider: UpstreamProvider, logoutToken: string): Promise<LogoutTokenClaims> {
  try {
    return await provider.verifyLogoutToken(logoutToken);
  } catch (err: unknown) {
    if (err instanceof UpstreamError && err.kind === 'invalid_token') throw new LogoutRefused('invalid_token', err);
    // JWKS unreachable and the like: we could not decide, the OP may send the token again.
    throw new LogoutRefused('processing_failed', err);
  }
}

/** §2.6 step 7 (optional in the spec, required here): a jti is accepted once per token lifetime. */
async function rememberJti(deps: AppDeps, idpId: string, claims: LogoutTokenClaims): Promise<void> {
  const now = deps.clock.now();
  if (now - claims.iat * 1000 > MAX_JTI_MEMORY_MS - DEFAULT_JTI_MEMORY_MS) throw new LogoutRefused('invalid_token');
  const untilExp = claims.exp === undefined ? 0 : claims.exp * 1000 - now;
  const ttlMs = Math.min(MAX_JTI_MEMORY_MS, Math.max(DEFAULT_JTI_MEMORY_MS, untilExp + DEFAULT_JTI_MEMORY_MS));
  let first: boolean;
  try {
    first = await deps.store.set(jtiKey(idpId, claims.jti), '1', { onlyIfAbsent: true, ttlMs });
  } catch (err: unknown) {
    throw new LogoutRefused('processing_failed', err);
  }
  if (!first) throw new LogoutRefused('replayed');
}

function refusal(failure: LogoutFailure, cause: unknown): OAuthError {
  switch (failure) {
    case 'not_form':
      return new OAuthError(400, 'invalid_request', 'Expected an application/x-www-form-urlencoded body', {}, cause);
    case 'missing_token':
      return new OAuthError(400, 'invalid_request', 'logout_token is required', {}, cause);
    case 'invalid_token':
      return new OAuthError(400, 'invalid_request', 'The logout token is not valid', {}, cause);
    case 'replayed':
      return new OAuthError(400, 'invalid_request', 'The logout token was already used', {}, cause);
    case 'processing_failed':
      return new OAuthError(400, 'temporarily_unavailable', 'The logout could not be processed; send it again later', {}, cause);
  }
}

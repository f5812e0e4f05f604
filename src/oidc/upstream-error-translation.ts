import { AuthorizationResponseError, ClientError, ResponseBodyError, WWWAuthenticateChallengeError } from 'openid-client';
import { UpstreamError } from './upstream.js';

const TRANSPORT_ERROR_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE']);

/** OAuth error codes that mean the OP is fine but this proxy's client registration is wrong (RFC 6749 §5.2). */
const CLIENT_MISCONFIGURATION = new Set(['invalid_client', 'unauthorized_client']);

/** OAuth error codes an OP uses to say it cannot answer right now (RFC 6749 §4.1.2.1). */
const OP_BUSY = new Set(['server_error', 'temporarily_unavailable']);

/**
 * Maps whatever openid-client (or fetch under it) threw into the one error type the rest of the proxy knows.
 * `operation` names what was attempted; messages never contain credentials or tokens.
 */
export function toUpstreamError(idpId: string, operation: string, err: unknown): UpstreamError {
  if (err instanceof UpstreamError) return err;
  if (isTransportFailure(err)) return new UpstreamError('unavailable', idpId, `${operation}: the OP could not be reached (${transportDetail(err)})`, err);

  if (err instanceof ResponseBodyError) return fromOAuthError(idpId, operation, err.error, err.status, err.error_description, err);
  if (err instanceof WWWAuthenticateChallengeError) {
    const challenge = err.cause[0];
    const code = typeof challenge?.parameters.error === 'string' ? challenge.parameters.error : 'invalid_request';
    return fromOAuthError(idpId, operation, code, err.status, challenge?.parameters.error_description, err);
  }
  if (err instanceof AuthorizationResponseError) {
    // The OP redirected back with error=… (the user cancelled, login_required, …): the grant was refused.
    if (OP_BUSY.has(err.error)) return new UpstreamError('unavailable', idpId, `${operation}: the OP answered ${err.error}`, err);
    return new UpstreamError('invalid_grant', idpId, `${operation}: the OP refused the authorization (${err.error}${describe(err.error_description)})`, err);
  }
  if (err instanceof ClientError) {
    const status = err.cause instanceof Response ? err.cause.status : undefined;
    if (status !== undefined && (status >= 500 || status === 429)) {
      return new UpstreamError('unavailable', idpId, `${operation}: the OP answered HTTP ${status}`, err);
    }
    const detail = err.cause instanceof Error && err.cause.message !== err.message ? `: ${err.cause.message}` : '';
    return new UpstreamError('invalid_response', idpId, `${operation}: ${err.message}${detail}${status === undefined ? '' : ` (HTTP ${status})`}`, err);
  }
  const message = err instanceof Error ? err.message : String(err);
  return new UpstreamError('invalid_response', idpId, `${operation}: ${message}`, err);
}

function fromOAuthError(idpId: string, operation: string, code: string, status: number, description: unknown, cause: unknown): UpstreamError {
  const said = `${code}${describe(description)}`;
  if (status >= 500 || status === 429 || OP_BUSY.has(code)) return new UpstreamError('unavailable', idpId, `${operation}: the OP answered HTTP ${status} ${said}`, cause);
  if (code === 'invalid_grant') return new UpstreamError('invalid_grant', idpId, `${operation}: the OP rejected the grant (${said})`, cause);
  if (CLIENT_MISCONFIGURATION.has(code)) {
    return new UpstreamError(
      'invalid_response',
      idpId,
      `${operation}: the OP rejected this proxy as a client (${said}); check client_id, client_secret, client_auth_method and the grant types allowed for the client at the OP`,
      cause,
    );
  }
  if (code === 'unsupported_grant_type') return new UpstreamError('unsupported', idpId, `${operation}: the OP does not support this grant type (${said})`, cause);
  return new UpstreamError('invalid_response', idpId, `${operation}: the OP answered HTTP ${status} ${said}`, cause);
}

function describe(description: unknown): string {
  return typeof description === 'string' && description !== '' ? `: ${description}` : '';
}

/** Network failures, resets and timeouts, wherever in the cause chain fetch or openid-client put them. */
function isTransportFailure(err: unknown): boolean {
  for (let current: unknown = err, depth = 0; current instanceof Error && depth < 8; current = current.cause, depth += 1) {
    if (current.name === 'TimeoutError' || current.name === 'AbortError') return true;
    if (current instanceof TypeError && current.message === 'fetch failed') return true;
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string' && (TRANSPORT_ERROR_CODES.has(code) || code.startsWith('UND_ERR_'))) return true;
  }
  return false;
}

function transportDetail(err: unknown): string {
  for (let current: unknown = err, depth = 0; current instanceof Error && depth < 8; current = current.cause, depth += 1) {
    if (current.name === 'TimeoutError' || current.name === 'AbortError') return 'timed out';
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string' && (TRANSPORT_ERROR_CODES.has(code) || code.startsWith('UND_ERR_'))) return code;
  }
  return err instanceof Error ? err.message : 'network error';
}

import { AuthorizationResponseError, ClientError, ResponseBodyError, WWWAuthenticateChallengeError } from 'openid-client';
import { UpstreamError, type UpstreamCause, type UpstreamErrorDetails } from './upstream.js';

const TRANSPORT_ERROR_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE']);

/** Token-endpoint operations: their answers are mapped by what they mean for the user's credentials. */
const GRANT_OPERATIONS = new Set(['password grant', 'refresh grant', 'code exchange']);

/**
 * OAuth error codes that say "these credentials (password, refresh token, code) are refused": RFC 6749 §5.2's
 * invalid_grant, and access_denied, which OPs such as Dex send for a wrong password (HTTP 401).
 */
const CREDENTIALS_REFUSED = new Set(['invalid_grant', 'access_denied']);

/** OAuth error codes an OP uses to say it cannot answer right now (RFC 6749 §4.1.2.1). */
const OP_BUSY = new Set(['server_error', 'temporarily_unavailable']);

interface Cause {
  readonly cause: UpstreamCause;
  readonly likelyCause: string;
}

const CLIENT_AUTHENTICATION: Cause = { cause: 'client_authentication', likelyCause: 'client authentication: check client_id, client_secret and client_auth_method against the client registered at the OP' };
const GRANT_NOT_ALLOWED: Cause = { cause: 'grant_type', likelyCause: 'a grant type not allowed for this client: allow it in the client settings at the OP' };
const GRANT_DISABLED: Cause = { cause: 'grant_type', likelyCause: 'a disabled grant type: enable it at the OP (password grant, refresh tokens) or turn the feature off here' };
const UNKNOWN_SCOPE: Cause = { cause: 'scope', likelyCause: 'an unknown scope: remove it from scopes, or allow it for the client at the OP' };
const TOKEN_REFUSED: Cause = {
  cause: 'token_refused',
  likelyCause: 'the OP refused the token without RFC 6749 invalid_grant: the proxy treats it as an unavailable OP and keeps the session until sessions.op_unreachable_grace runs out',
};
const OP_FAILING: Cause = { cause: 'op_failing', likelyCause: 'the OP is failing or overloaded (its own log says why)' };

/** RFC 6749 §5.2 codes that mean the OP is fine but this proxy's client registration or config is wrong. */
const CONFIGURATION_CODES: Readonly<Record<string, Cause>> = {
  invalid_client: CLIENT_AUTHENTICATION,
  unauthorized_client: GRANT_NOT_ALLOWED,
  unsupported_grant_type: GRANT_DISABLED,
  invalid_scope: UNKNOWN_SCOPE,
};

/** What the OP answered, read before translation: status and the start of the body (never the whole of it). */
export interface OpAnswer {
  readonly status: number;
  readonly bodyStart: string;
  readonly wwwAuthenticate?: string;
}

const BODY_START_CHARS = 200;

/**
 * Reads the OP's HTTP answer out of whatever openid-client threw (the Response it kept as `cause`, or the parsed
 * error body) so the translation and the log can quote it. Undefined when there was no answer (network failure).
 */
export async function readOpAnswer(err: unknown, secrets: readonly string[] = []): Promise<OpAnswer | undefined> {
  const quote = (text: string) => clip(redact(text, secrets));
  if (err instanceof ResponseBodyError) {
    return { status: err.status, bodyStart: quote(JSON.stringify(err.cause)), ...challengeOf(err.response) };
  }
  if (err instanceof WWWAuthenticateChallengeError) {
    return { status: err.status, bodyStart: quote(await bodyOf(err.response)), ...challengeOf(err.response) };
  }
  if (err instanceof ClientError && err.cause instanceof Response) {
    return { status: err.cause.status, bodyStart: quote(await bodyOf(err.cause)), ...challengeOf(err.cause) };
  }
  return undefined;
}

/**
 * Maps whatever openid-client (or fetch under it) threw into the one error type the rest of the proxy knows.
 * `operation` names what was attempted; messages never contain credentials or tokens.
 *
 * For the token endpoint (every grant) the answer is mapped by what it means, so that no OP quirk can log a user
 * out and no wrong password looks like an outage:
 * - RFC 6749 §5.2 error JSON, by its code: invalid_grant (and access_denied) → credentials refused; invalid_client,
 *   unauthorized_client, unsupported_grant_type, invalid_scope → the proxy's configuration, not the user.
 * - HTTP 403 with any body (that is not one of those configuration codes) → credentials refused, as a wrong
 *   password: some OPs refuse credentials that way.
 * - 400/401 that is not RFC JSON, 5xx, 429, timeouts and connection errors → unavailable (clients retry; sessions
 *   stay), with a diagnosis naming the likely cause for the log.
 */
export function toUpstreamError(idpId: string, operation: string, err: unknown, answer?: OpAnswer): UpstreamError {
  if (err instanceof UpstreamError) return err;
  if (isTransportFailure(err)) {
    const detail = transportDetail(err);
    return new UpstreamError('unavailable', idpId, `${operation}: the OP could not be reached (${detail})`, err, {
      diagnosis: { cause: 'unreachable', likelyCause: `the OP is unreachable from the proxy (${detail}): network, DNS, TLS or a firewall` },
    });
  }
  const grant = GRANT_OPERATIONS.has(operation);

  if (err instanceof ResponseBodyError) return fromOAuthError(idpId, operation, grant, err.error, err.status, err.error_description, err, answer);
  if (err instanceof WWWAuthenticateChallengeError) {
    const challenge = err.cause[0];
    const code = typeof challenge?.parameters.error === 'string' ? challenge.parameters.error : undefined;
    if (code !== undefined) return fromOAuthError(idpId, operation, grant, code, err.status, challenge?.parameters.error_description, err, answer);
    return fromUnexpectedStatus(idpId, operation, grant, err.status, err, answer);
  }
  if (err instanceof AuthorizationResponseError) {
    // The OP redirected back with error=… (the user cancelled, login_required, …): the grant was refused.
    if (OP_BUSY.has(err.error)) return new UpstreamError('unavailable', idpId, `${operation}: the OP answered ${err.error}`, err);
    return new UpstreamError('invalid_grant', idpId, `${operation}: the OP refused the authorization (${err.error}${describe(err.error_description)})`, err);
  }
  if (err instanceof ClientError) {
    const status = err.cause instanceof Response ? err.cause.status : undefined;
    if (status !== undefined && (status >= 400 || grant)) return fromUnexpectedStatus(idpId, operation, grant, status, err, answer);
    const detail = err.cause instanceof Error && err.cause.message !== err.message ? `: ${err.cause.message}` : '';
    return new UpstreamError('invalid_response', idpId, `${operation}: ${err.message}${detail}${status === undefined ? '' : ` (HTTP ${status})`}`, err);
  }
  const message = err instanceof Error ? err.message : String(err);
  return new UpstreamError('invalid_response', idpId, `${operation}: ${message}`, err);
}

function fromOAuthError(
  idpId: string,
  operation: string,
  grant: boolean,
  code: string,
  status: number,
  description: unknown,
  cause: unknown,
  answer: OpAnswer | undefined,
): UpstreamError {
  const said = `${code}${describe(description)}`;
  const details = (why: Cause): UpstreamErrorDetails => ({ status, oauthError: code, diagnosis: { status, bodyStart: answer?.bodyStart ?? said, ...why } });
  if (status >= 500 || status === 429 || OP_BUSY.has(code)) {
    return new UpstreamError('unavailable', idpId, `${operation}: the OP answered HTTP ${status} ${said}`, cause, details(OP_FAILING));
  }
  const configuration = CONFIGURATION_CODES[code];
  if (configuration !== undefined) {
    const kind = code === 'unsupported_grant_type' ? 'unsupported' : 'invalid_response';
    return new UpstreamError(kind, idpId, `${operation}: the OP answered HTTP ${status} ${said}; likely ${configuration.likelyCause}`, cause, details(configuration));
  }
  if (CREDENTIALS_REFUSED.has(code) || (grant && status === 403)) {
    return new UpstreamError('invalid_grant', idpId, `${operation}: the OP refused the credentials (HTTP ${status} ${said})`, cause, { status, oauthError: code });
  }
  const why = guessCause(status, `${code} ${typeof description === 'string' ? description : ''}`, answer);
  return new UpstreamError(grant ? 'unavailable' : 'invalid_response', idpId, `${operation}: the OP answered HTTP ${status} ${said}`, cause, details(why));
}

function fromUnexpectedStatus(idpId: string, operation: string, grant: boolean, status: number, cause: unknown, answer: OpAnswer | undefined): UpstreamError {
  const bodyStart = answer?.bodyStart ?? '';
  const quoted = bodyStart === '' ? 'an empty body' : `"${bodyStart}"`;
  if (grant && status === 403) {
    return new UpstreamError('invalid_grant', idpId, `${operation}: the OP refused the credentials (HTTP 403 with ${quoted}, not RFC 6749 JSON)`, cause, { status });
  }
  const why = status >= 500 || status === 429 ? OP_FAILING : guessCause(status, bodyStart, answer);
  const kind = grant || status >= 500 || status === 429 ? 'unavailable' : 'invalid_response';
  return new UpstreamError(kind, idpId, `${operation}: the OP answered HTTP ${status} with ${quoted}${grant ? ', not RFC 6749 error JSON' : ''}`, cause, {
    status,
    diagnosis: { status, bodyStart, ...why },
  });
}

/** The likely cause of a 4xx the OP did not explain in RFC terms, from its status and words. */
function guessCause(status: number, text: string, answer: OpAnswer | undefined): Cause {
  const lower = text.toLowerCase();
  // Dex answers an unknown, used or expired refresh token with 400 invalid_request "Refresh token is invalid or has
  // already been claimed by another client.": a refusal of the token, but not one a session may end on.
  if (/\b(refresh[ _]token|token|code)\b.*\b(invalid|expired|revoked|claimed|not found|unknown)\b/.test(lower)) return TOKEN_REFUSED;
  if (/scope/.test(lower)) return UNKNOWN_SCOPE;
  if (/grant|not allowed|not supported|unsupported|disabled/.test(lower)) return GRANT_DISABLED;
  if (status === 401 || answer?.wwwAuthenticate !== undefined || /client|auth|credential|secret/.test(lower)) {
    return { cause: 'client_authentication', likelyCause: `${CLIENT_AUTHENTICATION.likelyCause} (run \`matrix-compat-proxy doctor\`)` };
  }
  if (text.trim() === '') {
    return { cause: 'unknown', likelyCause: 'client authentication, a disabled grant type or an unknown scope — the OP did not say which (run `matrix-compat-proxy doctor`)' };
  }
  return { cause: 'unknown', likelyCause: 'an answer the proxy cannot interpret (run `matrix-compat-proxy doctor`)' };
}

function describe(description: unknown): string {
  return typeof description === 'string' && description !== '' ? `: ${description}` : '';
}

function clip(text: string): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length > BODY_START_CHARS ? `${flat.slice(0, BODY_START_CHARS)}…` : flat;
}

/** An OP may echo what it was sent (a password, a refresh token): those never reach the log. */
function redact(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const secret of secrets) if (secret.length >= 4) out = out.split(secret).join('[redacted]');
  return out;
}

async function bodyOf(response: Response): Promise<string> {
  if (response.bodyUsed) return '';
  try {
    // Enough to quote; an OP error page can be large.
    return (await response.text()).slice(0, 16 * 1024);
  } catch {
    return '';
  }
}

function challengeOf(response: Response): { wwwAuthenticate?: string } {
  const header = response.headers.get('www-authenticate');
  return header === null ? {} : { wwwAuthenticate: clip(header) };
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

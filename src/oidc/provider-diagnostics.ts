import { randomBytes } from 'node:crypto';
import { importJWK, type JWK } from 'jose';
import { pino } from 'pino';
import { basicCredentialsAmbiguous, type ClientAuthMethod } from './client-authentication.js';
import { acceptedIdTokenAlgs, createUpstreamProvider, type ProviderSettings } from './openid-provider.js';
import { UpstreamError, type UpstreamGrant, type UpstreamProvider } from './upstream.js';

/**
 * Checks of one `oidc_providers` entry against the real OP, for `matrix-compat-proxy doctor`: each says what it
 * found and, when it failed, what to change. Everything that talks to the OP stays in oidc/; the doctor only prints.
 * Probes never use a real account unless the admin gives one: client authentication is tested with a refresh grant
 * for a made-up token (RFC 6749 §5.2: `invalid_grant` means the client was authenticated, `invalid_client` that it
 * was not), the password grant with a made-up user.
 */
export type CheckStatus = 'pass' | 'fail' | 'warn' | 'info' | 'skip';

export interface DiagnosticCheck {
  readonly check: string;
  readonly status: CheckStatus;
  readonly message: string;
  /** What to change, for `fail` and `warn`. */
  readonly fix?: string;
}

export interface ProviderDiagnosisInput {
  readonly settings: ProviderSettings;
  readonly passwordGrant: boolean;
  readonly backchannelLogout: boolean;
  /** The URIs the admin must register at the OP (this proxy's callback and back-channel logout endpoint). */
  readonly redirectUri: string;
  readonly backchannelLogoutUri: string;
  /** A real account for a real password login (from the environment), when the admin gives one. */
  readonly testAccount?: { readonly username: string; readonly password: string } | undefined;
  readonly timeoutMs: number;
}

export interface ProviderDiagnosis {
  readonly checks: readonly DiagnosticCheck[];
  /** The test account's grant (claims for the template checks), when a test login succeeded. */
  readonly testLogin?: UpstreamGrant;
  /** The OP's metadata (discovered, with the block's endpoints), when discovery and the issuer check passed. */
  readonly metadata?: Readonly<Record<string, unknown>>;
}

const silent = pino({ level: 'silent' });
const ASYMMETRIC_KTY = new Set(['RSA', 'EC', 'OKP']);
const SECRET_METHODS: readonly ClientAuthMethod[] = ['client_secret_basic', 'client_secret_post'];

export async function diagnoseProvider(input: ProviderDiagnosisInput): Promise<ProviderDiagnosis> {
  const checks: DiagnosticCheck[] = [];
  const add = (check: string, status: CheckStatus, message: string, fix?: string) => checks.push({ check, status, message, ...(fix === undefined ? {} : { fix }) });
  const { settings } = input;

  add('redirect URI', 'info', `register ${input.redirectUri} as a redirect URI of client ${settings.client_id}`);
  if (input.backchannelLogout) add('back-channel logout URI', 'info', `register ${input.backchannelLogoutUri} as the client's back-channel logout URI (with sid required)`);

  const metadata = await discover(input, add);
  if (metadata === undefined) return { checks };

  let provider: UpstreamProvider;
  try {
    provider = createUpstreamProvider(settings, { logger: silent, fetchTimeoutMs: input.timeoutMs });
  } catch (err: unknown) {
    add('provider', 'fail', err instanceof Error ? err.message : String(err), 'fix the provider block as the message says');
    return { checks, metadata };
  }

  const algs = acceptedIdTokenAlgs(
    settings.id_token_signing_alg_values_supported === undefined ? metadata : { ...metadata, id_token_signing_alg_values_supported: settings.id_token_signing_alg_values_supported },
    settings.client_secret !== undefined,
  );
  const advertisedAlgs = Array.isArray(metadata['id_token_signing_alg_values_supported']) ? metadata['id_token_signing_alg_values_supported'].join(', ') : 'RS256 (not advertised)';
  if (algs.length === 0) {
    add('ID token algorithms', 'fail', `none of the OP's ID token algorithms (${advertisedAlgs}) can be verified here`, 'have the OP sign ID tokens with RS256 or ES256 (or set id_token_signing_alg_values_supported to one it uses; HS256 needs client_secret)');
  } else {
    add('ID token algorithms', 'pass', `accepted: ${algs.join(', ')} (the OP advertises ${advertisedAlgs})`);
  }
  await checkJwks(input, metadata, algs, add);

  const method = settings.client_auth_method ?? (settings.client_secret === undefined && settings.client_secret_jwt_key === undefined ? 'none' : 'client_secret_basic');
  const supportedMethods = stringList(metadata['token_endpoint_auth_methods_supported']);
  if (supportedMethods !== undefined && !supportedMethods.includes(method)) {
    add('client authentication method', 'fail', `the OP accepts ${supportedMethods.join(', ')} at its token endpoint, not ${method}`, `set client_auth_method to one of ${supportedMethods.join(', ')} (and the client at the OP to match)`);
  }
  if (typeof metadata['token_endpoint'] !== 'string') {
    add('token endpoint', 'fail', 'the OP has no token_endpoint', 'set token_endpoint, or use an OP with one');
    return { checks, metadata };
  }
  const authenticated = await checkClientAuthentication(input, provider, method, add);

  let testLogin: UpstreamGrant | undefined;
  if (input.passwordGrant && authenticated) testLogin = await checkPasswordGrant(input, provider, metadata, add);
  else if (input.passwordGrant) add('password grant', 'skip', 'not tried: the OP does not accept the client yet (see client authentication)');
  await checkAuthorizationRequest(input, provider, metadata, add);
  checkScopes(settings.scopes ?? ['openid'], metadata, add);

  if (input.backchannelLogout && metadata['backchannel_logout_supported'] !== true) {
    add('back-channel logout', 'warn', 'backchannel_logout_enabled is set but the OP does not advertise backchannel_logout_supported', 'check the OP can send logout tokens; otherwise sessions end only at re-validation (sessions.revalidate_interval)');
  }
  if (testLogin?.refreshToken !== undefined) await provider.revoke(testLogin.refreshToken, 'refresh_token').catch(() => undefined);
  return { checks, metadata, ...(testLogin === undefined ? {} : { testLogin }) };
}

type Add = (check: string, status: CheckStatus, message: string, fix?: string) => void;

async function discover(input: ProviderDiagnosisInput, add: Add): Promise<Record<string, unknown> | undefined> {
  const { settings } = input;
  const configured: Record<string, unknown> = {};
  for (const key of ['authorization_endpoint', 'token_endpoint', 'userinfo_endpoint', 'jwks_uri', 'introspection_endpoint', 'revocation_endpoint', 'end_session_endpoint'] as const) {
    if (settings[key] !== undefined) configured[key] = settings[key];
  }
  if (settings.discover === false) {
    add('discovery', 'info', 'discover: false — the endpoints come from the provider block');
    return { issuer: settings.issuer, ...configured };
  }
  const url = `${settings.issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`;
  const answer = await getJson(url, input.timeoutMs);
  if (answer.error !== undefined) {
    add('discovery', 'fail', `${url}: ${answer.error}`, 'check issuer (the OP must serve its discovery document under it) and that the proxy can reach the OP');
    return undefined;
  }
  if (answer.status !== 200 || !isRecord(answer.json)) {
    add('discovery', 'fail', `${url} answered HTTP ${answer.status}${answer.json === undefined ? ` (not JSON: "${answer.text.slice(0, 80)}")` : ''}`, 'check issuer: it must be the OP\'s issuer URL, e.g. https://keycloak.example/realms/NAME or https://dex.example/dex');
    return undefined;
  }
  add('discovery', 'pass', `${url} answered`);
  const metadata: Record<string, unknown> = { ...answer.json, ...configured };
  if (metadata['issuer'] !== settings.issuer) {
    add(
      'issuer',
      'fail',
      `the OP calls itself ${JSON.stringify(metadata['issuer'])}, the config says ${JSON.stringify(settings.issuer)}: ID tokens would be refused`,
      `set issuer: ${JSON.stringify(metadata['issuer'])} (exactly, trailing slash included)`,
    );
    return undefined;
  }
  add('issuer', 'pass', `matches exactly (${settings.issuer})`);
  return metadata;
}

async function checkJwks(input: ProviderDiagnosisInput, metadata: Record<string, unknown>, algs: readonly string[], add: Add): Promise<void> {
  if (!algs.some((alg) => !alg.startsWith('HS'))) {
    add('JWKS', 'skip', 'only HMAC ID tokens are accepted; no keys needed');
    return;
  }
  const jwksUri = metadata['jwks_uri'];
  if (typeof jwksUri !== 'string') {
    add('JWKS', 'fail', 'the OP has no jwks_uri', 'set jwks_uri in the provider block');
    return;
  }
  const answer = await getJson(jwksUri, input.timeoutMs);
  const keys = isRecord(answer.json) && Array.isArray(answer.json['keys']) ? (answer.json['keys'] as unknown[]) : undefined;
  if (answer.error !== undefined || answer.status !== 200 || keys === undefined) {
    add('JWKS', 'fail', `${jwksUri}: ${answer.error ?? `HTTP ${answer.status}, no "keys" array`}`, 'check jwks_uri and that the proxy can reach it');
    return;
  }
  let usable = 0;
  for (const key of keys) {
    if (!isRecord(key) || typeof key['kty'] !== 'string' || !ASYMMETRIC_KTY.has(key['kty'])) continue;
    if (key['use'] !== undefined && key['use'] !== 'sig') continue;
    const alg = typeof key['alg'] === 'string' ? key['alg'] : algs.find((candidate) => fitsKty(candidate, String(key['kty'])));
    if (alg === undefined || !algs.includes(alg)) continue;
    try {
      await importJWK(key as JWK, alg);
      usable += 1;
    } catch {
      // not a key jose can use
    }
  }
  if (usable === 0) {
    add('JWKS', 'fail', `${jwksUri} has ${keys.length} key(s), none usable to verify ${algs.join('/')} signatures`, 'publish a signing key for the algorithm the OP signs ID tokens with');
  } else {
    add('JWKS', 'pass', `${usable} usable signing key(s) of ${keys.length} at ${jwksUri}`);
  }
}

/** True when the OP accepted the client as configured. */
async function checkClientAuthentication(input: ProviderDiagnosisInput, provider: UpstreamProvider, method: ClientAuthMethod, add: Add): Promise<boolean> {
  const outcome = await probeRefresh(provider);
  if (outcome.authenticated) {
    add('client authentication', 'pass', `the OP accepted client ${input.settings.client_id} with ${method} (${outcome.said})`);
    if (outcome.refreshRefused !== undefined) add('refresh tokens', 'warn', outcome.refreshRefused, 'allow the refresh_token grant (refresh tokens) for the client at the OP, so sessions are re-validated');
    return true;
  }
  if (outcome.unreachable) {
    add('client authentication', 'fail', `could not test: ${outcome.said}`, 'check that the proxy can reach the token endpoint');
    return false;
  }
  // Refused: find what the OP would accept, to say exactly what to change.
  const { settings } = input;
  const alternatives = settings.client_secret === undefined ? [] : SECRET_METHODS.filter((other) => other !== method);
  for (const other of alternatives) {
    const probe = createUpstreamProvider({ ...settings, client_auth_method: other }, { logger: silent, fetchTimeoutMs: input.timeoutMs });
    if ((await probeRefresh(probe)).authenticated) {
      const why =
        method === 'client_secret_basic' && basicCredentialsAmbiguous(settings.client_id, settings.client_secret ?? '')
          ? ' (the client secret contains + or %, which OPs that form-decode the Basic header read differently)'
          : '';
      add('client authentication', 'fail', `the OP refused ${method} (${outcome.said}) but accepts ${other}${why}`, `set client_auth_method: ${other}`);
      return false;
    }
  }
  const fix = 'check client_id and client_secret against the client registered at the OP, and that the client is confidential with this authentication method';
  add(
    'client authentication',
    'fail',
    `the OP refused client ${settings.client_id} with ${method}: ${outcome.said}`,
    outcome.explained ? fix : `${fix}; if they are right, the OP refuses the refresh_token grant for this client without saying so: allow it`,
  );
  return false;
}

interface RefreshProbe {
  readonly authenticated: boolean;
  readonly unreachable: boolean;
  readonly said: string;
  /** The OP said why, in RFC 6749 terms. */
  readonly explained?: boolean;
  readonly refreshRefused?: string;
}

async function probeRefresh(provider: UpstreamProvider): Promise<RefreshProbe> {
  try {
    await provider.refreshGrant(`doctor-probe-${randomBytes(12).toString('hex')}`);
    return { authenticated: true, unreachable: false, said: 'it even accepted a made-up refresh token' };
  } catch (err: unknown) {
    if (!(err instanceof UpstreamError)) throw err;
    const said = answerOf(err);
    if (err.kind === 'invalid_grant') return { authenticated: true, unreachable: false, said: `a made-up refresh token was refused with ${said}` };
    if (err.diagnosis?.cause === 'token_refused') {
      return { authenticated: true, unreachable: false, said: `a made-up refresh token was refused with ${said}, not invalid_grant: re-validation keeps such sessions until sessions.op_unreachable_grace` };
    }
    if (err.kind === 'unsupported' || err.diagnosis?.cause === 'grant_type') {
      return { authenticated: true, unreachable: false, said, refreshRefused: `the OP does not let this client use refresh tokens (${said}): sessions cannot be re-validated` };
    }
    const unreachable = err.kind === 'unavailable' && (err.status === undefined || err.status >= 500 || err.status === 429);
    return { authenticated: false, unreachable, said, explained: err.oauthError !== undefined };
  }
}

async function checkPasswordGrant(input: ProviderDiagnosisInput, provider: UpstreamProvider, metadata: Record<string, unknown>, add: Add): Promise<UpstreamGrant | undefined> {
  const grantTypes = stringList(metadata['grant_types_supported']);
  const enableFix = `allow the password grant for client ${input.settings.client_id} at the OP (Keycloak: "Direct access grants"; Dex: oauth2.passwordConnector), or set password_grant.enabled: false`;
  try {
    await provider.passwordGrant(`doctor-probe-${randomBytes(6).toString('hex')}`, randomBytes(12).toString('base64url'));
    add('password grant', 'fail', 'the OP accepted a made-up user and password', 'check the OP: it must refuse unknown users');
  } catch (err: unknown) {
    if (!(err instanceof UpstreamError)) throw err;
    const said = answerOf(err);
    if (err.kind === 'invalid_grant') {
      const quirk = err.oauthError === undefined ? ' — not RFC 6749 JSON, which the proxy reads as a wrong password, as it should' : '';
      add('password grant', 'pass', `allowed: a made-up user was refused with ${said}${quirk}`);
    } else if (err.kind === 'unsupported' || err.diagnosis?.cause === 'grant_type') {
      add('password grant', 'fail', `the OP does not allow it for this client (${said})`, enableFix);
    } else {
      const cause = err.diagnosis?.likelyCause ?? 'unknown';
      add('password grant', 'fail', `a made-up login was answered with ${said}, which says nothing about the password (likely cause: ${cause})`, err.status === 400 ? `${enableFix}; check scopes` : 'run the check again, then look at the OP\'s log');
    }
  }
  if (grantTypes !== undefined && !grantTypes.includes('password')) {
    add('password grant advertised', 'warn', `grant_types_supported (${grantTypes.join(', ')}) does not list password`, enableFix);
  }

  if (input.testAccount === undefined) {
    add('test login', 'skip', 'set MCP_DOCTOR_USERNAME and MCP_DOCTOR_PASSWORD to log a real account in (and check the mapping templates against its claims)');
    return undefined;
  }
  try {
    const grant = await provider.passwordGrant(input.testAccount.username, input.testAccount.password);
    const claimNames = Object.keys(grant.claims).sort().join(', ');
    add('test login', 'pass', `${input.testAccount.username} logged in: sub ${grant.sub}, claims ${claimNames}${grant.refreshToken === undefined ? ', no refresh token (sessions will not be re-validated)' : ''}`);
    return grant;
  } catch (err: unknown) {
    if (!(err instanceof UpstreamError)) throw err;
    const fix =
      err.kind === 'invalid_grant'
        ? 'check MCP_DOCTOR_USERNAME/MCP_DOCTOR_PASSWORD (the OP refused them)'
        : err.diagnosis?.cause === 'scope'
          ? 'remove the scopes the OP does not know from scopes'
          : (err.diagnosis?.likelyCause ?? 'see the message');
    add('test login', 'fail', `${input.testAccount.username}: ${answerOf(err)}`, fix);
    return undefined;
  }
}

/** Starts an SSO login as a browser would (no cookies): a registered redirect URI and known scopes get a login page. */
async function checkAuthorizationRequest(input: ProviderDiagnosisInput, provider: UpstreamProvider, metadata: Record<string, unknown>, add: Add): Promise<void> {
  if (typeof metadata['authorization_endpoint'] !== 'string') {
    add('authorization request', 'fail', 'the OP has no authorization_endpoint: SSO cannot work', 'set authorization_endpoint');
    return;
  }
  const nonce = randomBytes(16).toString('base64url');
  const url = await provider.authorizationUrl({ redirectUri: input.redirectUri, state: nonce, nonce, codeVerifier: randomBytes(32).toString('base64url') });
  let response: Response;
  try {
    response = await fetch(url, { redirect: 'manual', signal: AbortSignal.timeout(input.timeoutMs) });
  } catch (err: unknown) {
    add('authorization request', 'fail', `${url.origin}${url.pathname}: ${err instanceof Error ? err.message : String(err)}`, 'check that the authorization endpoint is reachable');
    return;
  }
  const location = response.headers.get('location');
  // An error page is HTML: its words are what the admin needs, not its markup.
  const body = location === null ? (await response.text()).replace(/<(script|style)[\s\S]*?<\/\1>/gi, ' ').replace(/<[^>]*>/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 160) : (await response.body?.cancel(), '');
  if (location !== null && response.status >= 300 && response.status < 400) {
    const target = new URL(location, url);
    const callback = new URL(input.redirectUri);
    if (target.origin === callback.origin && target.pathname === callback.pathname) {
      const error = target.searchParams.get('error');
      if (error === null) {
        add('authorization request', 'pass', 'the OP sent the browser straight back with a code');
        return;
      }
      const description = target.searchParams.get('error_description');
      const fix =
        error === 'invalid_scope'
          ? 'remove the scopes the OP does not know from scopes (or allow them for the client)'
          : error === 'unauthorized_client'
            ? `allow the authorization code flow for client ${input.settings.client_id} at the OP`
            : 'see the OP\'s error and its log';
      add('authorization request', 'fail', `the OP answered error=${error}${description === null ? '' : ` (${description})`}`, fix);
      return;
    }
    add('authorization request', 'pass', `accepted (redirect URI and scopes): the OP sends the browser on to ${target.origin}${target.pathname}`);
    return;
  }
  if (response.status === 200) {
    add('authorization request', 'pass', 'accepted (redirect URI and scopes): the OP shows its login page');
    return;
  }
  add(
    'authorization request',
    'fail',
    `the OP answered HTTP ${response.status}${body === '' ? '' : `: "${body}"`}`,
    `register ${input.redirectUri} as a redirect URI of client ${input.settings.client_id} at the OP, allow the authorization code flow for it, and check scopes`,
  );
}

function checkScopes(scopes: readonly string[], metadata: Record<string, unknown>, add: Add): void {
  const supported = stringList(metadata['scopes_supported']);
  if (supported === undefined) {
    add('scopes', 'info', `${scopes.join(' ')} (the OP does not advertise scopes_supported)`);
    return;
  }
  const unknown = scopes.filter((scope) => !supported.includes(scope));
  if (unknown.length === 0) add('scopes', 'pass', `${scopes.join(' ')}: all advertised by the OP`);
  else add('scopes', 'warn', `${unknown.join(', ')} not in the OP's scopes_supported (${supported.join(', ')})`, 'remove them from scopes unless the OP grants them anyway');
}

function answerOf(err: UpstreamError): string {
  const status = err.status === undefined ? '' : `HTTP ${err.status} `;
  if (err.oauthError !== undefined) return `${status}${err.oauthError}`;
  const body = err.diagnosis?.bodyStart;
  if (err.status !== undefined) return `${status}${body === undefined || body === '' ? 'with an empty body' : `"${body}"`}`;
  return err.message;
}

function fitsKty(alg: string, kty: string): boolean {
  if (kty === 'RSA') return /^(RS|PS)/.test(alg);
  if (kty === 'EC') return alg.startsWith('ES');
  return alg === 'EdDSA' || alg === 'Ed25519';
}

function stringList(value: unknown): string[] | undefined {
  return Array.isArray(value) ? value.filter((item): item is string => typeof item === 'string') : undefined;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

async function getJson(url: string, timeoutMs: number): Promise<{ status: number; json: unknown; text: string; error?: string }> {
  try {
    const response = await fetch(url, { headers: { accept: 'application/json' }, redirect: 'manual', signal: AbortSignal.timeout(timeoutMs) });
    const text = await response.text();
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: response.status, json, text };
  } catch (err: unknown) {
    const cause = err instanceof Error && err.cause instanceof Error ? `: ${err.cause.message}` : '';
    return { status: 0, json: undefined, text: '', error: err instanceof Error && err.name === 'TimeoutError' ? 'timed out' : `${err instanceof Error ? err.message : String(err)}${cause}` };
  }
}

import { importPKCS8, SignJWT } from 'jose';
import { modifyAssertion, None, PrivateKeyJwt, type ClientAuth } from 'openid-client';
import type { Clock } from '../clock.js';

/**
 * How the proxy authenticates itself at the OP's token, introspection and revocation endpoints — the one
 * implementation, plugged into openid-client's client-auth hook. It behaves like Synapse for the same
 * `oidc_providers` block, so a block that works with Synapse works here:
 *
 * - `client_secret_basic`: Synapse (authlib's `encode_client_secret_basic`, authlib ≥ 1.3.2, which Synapse pins)
 *   sends `client_id:client_secret` as they are. RFC 6749 §2.3.1 asks for form-encoding first, which is what
 *   openid-client does — it even escapes unreserved characters (`matrix-proxy` → `matrix%2Dproxy`), and several OPs
 *   never decode the credentials and answer 400. So only what cannot travel as it is gets percent-encoded: a `:` in
 *   the client id (RFC 7617 §2: the user-id cannot contain one; the OP splits at the first colon) and characters
 *   outside printable ASCII (a header has no agreed charset for them; RFC 6749 form-encoding makes them UTF-8).
 *   A secret containing `%` or `+` is ambiguous between OPs that decode and OPs that do not; `doctor` says so and
 *   `client_secret_post` avoids it.
 * - `client_secret_post`: `client_id` and `client_secret` in the form body (form-encoded like any body field).
 * - `private_key_jwt` (RFC 7523 §2.2, OIDC Core §9; not in Synapse, configured with Synapse's key block): a signed
 *   client assertion, `iss` = `sub` = client_id, `aud` = the issuer, short-lived; `jwt_payload` adds claims.
 * - `none`: only `client_id` in the body (public client).
 * - `client_secret_jwt_key` with a client_secret method: Synapse's `JwtClientSecret` (Sign in with Apple): the
 *   client secret is a JWT the proxy signs — `sub` client_id, `aud` issuer, valid an hour, re-signed when less than
 *   ten minutes are left — then sent by the chosen client_secret method.
 */
export type ClientAuthMethod = 'client_secret_basic' | 'client_secret_post' | 'private_key_jwt' | 'none';

/** Synapse's `client_secret_jwt_key` block (the key itself already read from `key` or `key_file`). */
export interface ClientSecretJwtKey {
  /** PEM-encoded PKCS#8 private key. */
  readonly key: string;
  readonly jwt_header: { readonly alg: string; readonly kid?: string | undefined };
  readonly jwt_payload?: Readonly<Record<string, unknown>> | undefined;
}

export interface ClientCredentials {
  readonly clientId: string;
  readonly issuer: string;
  readonly method: ClientAuthMethod;
  readonly clientSecret?: string | undefined;
  readonly clientSecretJwtKey?: ClientSecretJwtKey | undefined;
  readonly clock: Clock;
}

/** Thrown when the configured key cannot sign (wrong PEM, alg that does not fit the key). */
export class ClientKeyError extends Error {
  constructor(message: string, cause: unknown) {
    super(message, { cause });
    this.name = 'ClientKeyError';
  }
}

type SigningKey = Awaited<ReturnType<typeof importPKCS8>>;

// Synapse's CLIENT_SECRET_VALIDITY_SECONDS and CLIENT_SECRET_MIN_VALIDITY_SECONDS (synapse/handlers/oidc.py).
const GENERATED_SECRET_VALIDITY_S = 3600;
const GENERATED_SECRET_MIN_VALIDITY_S = 600;

export async function createClientAuth(credentials: ClientCredentials): Promise<ClientAuth> {
  switch (credentials.method) {
    case 'none':
      return None();
    case 'private_key_jwt': {
      const jwtKey = requireKey(credentials);
      const key = await importKey(jwtKey);
      const extra = jwtKey.jwt_payload ?? {};
      return PrivateKeyJwt(jwtKey.jwt_header.kid === undefined ? key : { key, kid: jwtKey.jwt_header.kid }, {
        [modifyAssertion]: (_header, payload) => {
          Object.assign(payload, extra);
        },
      });
    }
    case 'client_secret_basic':
    case 'client_secret_post': {
      const send = credentials.method === 'client_secret_basic' ? basicAuthorization : postCredentials;
      if (credentials.clientSecret !== undefined) {
        const secret = credentials.clientSecret;
        if (credentials.method === 'client_secret_basic') {
          // A static secret gives the same header every time: escaped and encoded once, not on every token request
          // (it showed in the password login's profile).
          let last: { readonly clientId: string; readonly value: string } | undefined;
          return (_as, client, _body, headers) => {
            if (last?.clientId !== client.client_id) last = { clientId: client.client_id, value: basicAuthorizationValue(client.client_id, secret) };
            headers.set('authorization', last.value);
          };
        }
        return (_as, client, body, headers) => send(client.client_id, secret, body, headers);
      }
      const generated = generatedSecret(credentials, await importKey(requireKey(credentials)));
      return async (_as, client, body, headers) => send(client.client_id, await generated(), body, headers);
    }
  }
}

/** The `Authorization` header value for client_secret_basic, escaped as described above. */
export function basicAuthorizationValue(clientId: string, clientSecret: string): string {
  const credentials = `${escapeBasic(clientId, /[:]/)}:${escapeBasic(clientSecret, undefined)}`;
  return `Basic ${Buffer.from(credentials, 'ascii').toString('base64')}`;
}

/** Whether an OP that form-decodes Basic credentials (RFC 6749 §2.3.1) reads another value than one that does not. */
export function basicCredentialsAmbiguous(clientId: string, clientSecret: string): boolean {
  return /[%+]/.test(clientId) || /[%+]/.test(clientSecret);
}

function basicAuthorization(clientId: string, clientSecret: string, _body: URLSearchParams, headers: Headers): void {
  headers.set('authorization', basicAuthorizationValue(clientId, clientSecret));
}

function postCredentials(clientId: string, clientSecret: string, body: URLSearchParams): void {
  body.set('client_id', clientId);
  body.set('client_secret', clientSecret);
}

/** Percent-encodes (as UTF-8) control and non-ASCII characters, and `extra` ones; everything else goes as it is. */
function escapeBasic(value: string, extra: RegExp | undefined): string {
  let out = '';
  for (const char of value) {
    const code = char.codePointAt(0) ?? 0;
    const mustEscape = code < 0x20 || code > 0x7e || (extra !== undefined && extra.test(char));
    out += mustEscape ? encodeURIComponent(char).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`) : char;
  }
  return out;
}

function requireKey(credentials: ClientCredentials): ClientSecretJwtKey {
  if (credentials.clientSecretJwtKey === undefined) throw new ClientKeyError(`${credentials.method} needs client_secret_jwt_key`, undefined);
  return credentials.clientSecretJwtKey;
}

async function importKey(jwtKey: ClientSecretJwtKey): Promise<SigningKey> {
  try {
    return await importPKCS8(jwtKey.key, jwtKey.jwt_header.alg);
  } catch (err: unknown) {
    throw new ClientKeyError(`client_secret_jwt_key: the key cannot sign ${jwtKey.jwt_header.alg} (${err instanceof Error ? err.message : String(err)})`, err);
  }
}

/** Synapse's JwtClientSecret: one signed secret, replaced when it has less than ten minutes left. */
function generatedSecret(credentials: ClientCredentials, key: SigningKey): () => Promise<string> {
  const jwtKey = requireKey(credentials);
  let cached: { value: string; replaceAt: number } | undefined;
  return async () => {
    const now = Math.floor(credentials.clock.now() / 1000);
    if (cached !== undefined && now < cached.replaceAt) return cached.value;
    const expiresAt = now + GENERATED_SECRET_VALIDITY_S;
    const value = await new SignJWT({ sub: credentials.clientId, aud: credentials.issuer, iat: now, exp: expiresAt, ...jwtKey.jwt_payload })
      .setProtectedHeader({ alg: jwtKey.jwt_header.alg, ...(jwtKey.jwt_header.kid === undefined ? {} : { kid: jwtKey.jwt_header.kid }) })
      .sign(key);
    cached = { value, replaceAt: expiresAt - GENERATED_SECRET_MIN_VALIDITY_S };
    return value;
  };
}

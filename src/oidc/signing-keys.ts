import { compactVerify, createLocalJWKSet, decodeProtectedHeader, errors as joseErrors, type JSONWebKeySet, type ProtectedHeaderParameters } from 'jose';

type LocalKeySet = ReturnType<typeof createLocalJWKSet>;
import { KeyObject, constants as cryptoConstants, verify as cryptoVerify, type VerifyKeyObjectInput, type webcrypto } from 'node:crypto';
import type { Clock } from '../clock.js';
import { outboundFetch } from '../outbound/http-client.js';
import { UpstreamError } from './upstream.js';

/** A JWS we must not trust (bad signature, forbidden alg, unknown key): the caller decides the error kind. */
export class JwsRejected extends Error {
  constructor(message: string, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'JwsRejected';
  }
}

export interface VerifiedJws {
  readonly header: ProtectedHeaderParameters;
  readonly payload: Record<string, unknown>;
}

export interface SigningKeysOptions {
  readonly idpId: string;
  readonly jwksUri: string | undefined;
  readonly clock: Clock;
  readonly fetchTimeoutMs: number;
  readonly allowHttp: boolean;
  /** An unknown `kid` refetches the JWKS at most this often (an attacker must not make us hammer the OP). */
  readonly refetchIntervalMs?: number;
  /** Keys older than this are refetched on next use, so keys the OP withdrew stop being trusted. */
  readonly maxAgeMs?: number;
}

const DEFAULT_REFETCH_INTERVAL_MS = 60_000;
const DEFAULT_MAX_AGE_MS = 10 * 60_000;

/**
 * The OP's signing keys (its JWKS) and the one JWS check used for ID tokens and logout tokens. HMAC algorithms are
 * keyed by the client secret (OIDC Core §10.1); `none` is never accepted, whatever the caller allows.
 */
export class SigningKeys {
  private keySet: LocalKeySet | undefined;
  private fetchedAt = Number.NEGATIVE_INFINITY;
  private lastAttemptAt = Number.NEGATIVE_INFINITY;
  private inflight: Promise<LocalKeySet> | undefined;
  private readonly refetchIntervalMs: number;
  private readonly maxAgeMs: number;

  constructor(private readonly options: SigningKeysOptions) {
    this.refetchIntervalMs = options.refetchIntervalMs ?? DEFAULT_REFETCH_INTERVAL_MS;
    this.maxAgeMs = options.maxAgeMs ?? DEFAULT_MAX_AGE_MS;
  }

  async verify(jws: string, allowedAlgs: readonly string[], clientSecret: string | undefined): Promise<VerifiedJws> {
    if (jws.split('.').length !== 3) throw new JwsRejected('not a compact JWS (encrypted tokens are not supported)');
    let header: ProtectedHeaderParameters;
    try {
      header = decodeProtectedHeader(jws);
    } catch (err: unknown) {
      throw new JwsRejected('malformed JWS header', err);
    }
    const alg = header.alg;
    if (typeof alg !== 'string' || alg === 'none') throw new JwsRejected('unsigned token (alg none) refused');
    if (!allowedAlgs.includes(alg)) throw new JwsRejected(`signing algorithm ${alg} is not allowed for this provider (allowed: ${allowedAlgs.join(', ') || 'none'})`);

    let payload: Uint8Array;
    if (alg.startsWith('HS')) {
      if (clientSecret === undefined) throw new JwsRejected(`${alg} needs a client secret, and none is configured`);
      payload = await verifyWith(jws, alg, new TextEncoder().encode(clientSecret));
    } else {
      payload = await this.verifyWithJwks(jws, alg, header);
    }
    let claims: unknown;
    try {
      claims = JSON.parse(new TextDecoder().decode(payload));
    } catch (err: unknown) {
      throw new JwsRejected('JWS payload is not JSON', err);
    }
    if (typeof claims !== 'object' || claims === null || Array.isArray(claims)) throw new JwsRejected('JWS payload is not a JSON object');
    return { header, payload: claims as Record<string, unknown> };
  }

  private async verifyWithJwks(jws: string, alg: string, header: ProtectedHeaderParameters): Promise<Uint8Array> {
    let keySet = await this.current();
    try {
      return await verifyWithKeySet(jws, alg, header, keySet);
    } catch (err: unknown) {
      if (!(err instanceof joseErrors.JWKSNoMatchingKey)) throw err;
      // The OP may have rotated its keys: one refetch, unless one happened moments ago.
      if (this.options.clock.now() - this.lastAttemptAt < this.refetchIntervalMs) {
        throw new JwsRejected(`no key of the OP matches kid ${header.kid ?? '(none)'} and alg ${alg} (JWKS refetched recently)`, err);
      }
      keySet = await this.fetch();
      try {
        return await verifyWithKeySet(jws, alg, header, keySet);
      } catch (again: unknown) {
        if (again instanceof joseErrors.JWKSNoMatchingKey) throw new JwsRejected(`no key of the OP matches kid ${header.kid ?? '(none)'} and alg ${alg}`, again);
        throw again;
      }
    }
  }

  private async current(): Promise<LocalKeySet> {
    if (this.keySet !== undefined && this.options.clock.now() - this.fetchedAt < this.maxAgeMs) return this.keySet;
    try {
      return await this.fetch();
    } catch (err: unknown) {
      // A stale set beats no set while the OP is briefly unreachable; a withdrawn key is the rarer risk.
      if (this.keySet !== undefined && err instanceof UpstreamError && err.kind === 'unavailable') return this.keySet;
      throw err;
    }
  }

  /** Single flight: concurrent verifications share one request. */
  private fetch(): Promise<LocalKeySet> {
    this.inflight ??= this.load().finally(() => {
      this.inflight = undefined;
    });
    return this.inflight;
  }

  private async load(): Promise<LocalKeySet> {
    const { idpId, jwksUri } = this.options;
    this.lastAttemptAt = this.options.clock.now();
    if (jwksUri === undefined) throw new UpstreamError('invalid_response', idpId, 'the OP has no jwks_uri, so asymmetric signatures cannot be checked');
    const url = new URL(jwksUri);
    if (url.protocol !== 'https:' && !(url.protocol === 'http:' && this.options.allowHttp)) {
      throw new UpstreamError('invalid_response', idpId, `jwks_uri ${url.origin} is not https`);
    }
    let response: Response;
    try {
      response = await outboundFetch(url, { headers: { accept: 'application/json, application/jwk-set+json' }, redirect: 'manual', signal: AbortSignal.timeout(this.options.fetchTimeoutMs) });
    } catch (err: unknown) {
      throw new UpstreamError('unavailable', idpId, `JWKS fetch: the OP could not be reached (${err instanceof Error && err.name === 'TimeoutError' ? 'timed out' : 'network error'})`, err);
    }
    if (response.status >= 500 || response.status === 429) {
      await response.body?.cancel();
      throw new UpstreamError('unavailable', idpId, `JWKS fetch: the OP answered HTTP ${response.status}`);
    }
    if (response.status !== 200) {
      await response.body?.cancel();
      throw new UpstreamError('invalid_response', idpId, `JWKS fetch: the OP answered HTTP ${response.status}`);
    }
    let body: unknown;
    try {
      body = await response.json();
    } catch (err: unknown) {
      throw new UpstreamError('invalid_response', idpId, 'JWKS fetch: the answer is not JSON', err);
    }
    if (typeof body !== 'object' || body === null || !Array.isArray((body as { keys?: unknown }).keys)) {
      throw new UpstreamError('invalid_response', idpId, 'JWKS fetch: the answer has no "keys" array');
    }
    try {
      this.keySet = createLocalJWKSet(body as JSONWebKeySet);
    } catch (err: unknown) {
      throw new UpstreamError('invalid_response', idpId, 'JWKS fetch: the key set is malformed', err);
    }
    this.fetchedAt = this.options.clock.now();
    return this.keySet;
  }
}

/**
 * node:crypto's parameters for the asymmetric JWS algorithms (RFC 7518 §3.3–3.5, RFC 8037): verified by one
 * synchronous `crypto.verify` instead of jose's WebCrypto call, which runs on the thread pool — 200 against 55 µs
 * per RS256 ID token here (issue 19, login cost). Other algorithms, and headers with `crit` or `b64`, go to jose.
 */
const NODE_VERIFY: Readonly<Record<string, { readonly hash: string | null; readonly options: Omit<VerifyKeyObjectInput, 'key'> }>> = {
  RS256: { hash: 'sha256', options: {} },
  RS384: { hash: 'sha384', options: {} },
  RS512: { hash: 'sha512', options: {} },
  PS256: { hash: 'sha256', options: { padding: cryptoConstants.RSA_PKCS1_PSS_PADDING, saltLength: cryptoConstants.RSA_PSS_SALTLEN_DIGEST } },
  PS384: { hash: 'sha384', options: { padding: cryptoConstants.RSA_PKCS1_PSS_PADDING, saltLength: cryptoConstants.RSA_PSS_SALTLEN_DIGEST } },
  PS512: { hash: 'sha512', options: { padding: cryptoConstants.RSA_PKCS1_PSS_PADDING, saltLength: cryptoConstants.RSA_PSS_SALTLEN_DIGEST } },
  ES256: { hash: 'sha256', options: { dsaEncoding: 'ieee-p1363' } },
  ES384: { hash: 'sha384', options: { dsaEncoding: 'ieee-p1363' } },
  ES512: { hash: 'sha512', options: { dsaEncoding: 'ieee-p1363' } },
  EdDSA: { hash: null, options: {} },
  Ed25519: { hash: null, options: {} },
};

/** The node KeyObject of each public CryptoKey jose imported (its key set keeps the CryptoKeys alive). */
const keyObjects = new WeakMap<webcrypto.CryptoKey, KeyObject>();

/** Three base64url segments, nothing else: jose decodes strictly, Buffer.from would skip what is not base64url. */
const STRICT_COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+$/;

/**
 * The payload of a JWS whose signature `key` verifies for `alg`, or undefined when this path does not apply (jose
 * decides then). Everything jose refuses before the signature is refused here too: RSA keys under 2048 bits (RFC
 * 7518 §3.3, jose's minimum), characters outside base64url, RSA signatures not of the modulus' length.
 */
export function verifyWithNode(jws: string, alg: string, key: unknown, header: ProtectedHeaderParameters): Uint8Array | undefined {
  const params = NODE_VERIFY[alg];
  if (params === undefined || header.crit !== undefined || header.b64 !== undefined || !(key instanceof globalThis.CryptoKey) || key.type !== 'public') return undefined;
  if (!STRICT_COMPACT_JWS.test(jws)) return undefined;
  let keyObject = keyObjects.get(key);
  if (keyObject === undefined) {
    keyObject = KeyObject.from(key);
    keyObjects.set(key, keyObject);
  }
  const modulusLength = keyObject.asymmetricKeyDetails?.modulusLength;
  if ((alg.startsWith('RS') || alg.startsWith('PS')) && (modulusLength === undefined || modulusLength < 2048)) {
    throw new JwsRejected(`JWS rejected: ${alg} requires key modulusLength to be 2048 bits or larger`);
  }
  const signatureStart = jws.lastIndexOf('.');
  const payloadStart = jws.indexOf('.') + 1;
  const signingInput = Buffer.from(jws.slice(0, signatureStart), 'ascii');
  const signature = Buffer.from(jws.slice(signatureStart + 1), 'base64url');
  // RFC 8017 §8.1.2/§8.2.2 step 1: an RSA signature is exactly k octets. OpenSSL reads a shorter one as the same
  // integer with leading zeros, so the good signature with a leading zero byte dropped would pass; WebCrypto (jose)
  // refuses it, and so does this path.
  if (modulusLength !== undefined && signature.length !== Math.ceil(modulusLength / 8)) throw new JwsRejected('signature verification failed');
  let valid: boolean;
  try {
    valid = cryptoVerify(params.hash, signingInput, { key: keyObject, ...params.options }, signature);
  } catch (err: unknown) {
    throw new JwsRejected(`JWS rejected: ${(err as Error).message}`, err);
  }
  if (!valid) throw new JwsRejected('signature verification failed');
  return Buffer.from(jws.slice(payloadStart, signatureStart), 'base64url');
}

async function verifyWith(jws: string, alg: string, key: Parameters<typeof compactVerify>[1], header?: ProtectedHeaderParameters): Promise<Uint8Array> {
  if (header !== undefined) {
    const payload = verifyWithNode(jws, alg, key, header);
    if (payload !== undefined) return payload;
  }
  try {
    return (await compactVerify(jws, key, { algorithms: [alg] })).payload;
  } catch (err: unknown) {
    throw new JwsRejected(err instanceof joseErrors.JWSSignatureVerificationFailed ? 'signature verification failed' : `JWS rejected: ${(err as Error).message}`, err);
  }
}

/** jose picks the key by kid/alg/use; when several keys match (no kid), each is tried in turn. */
async function verifyWithKeySet(jws: string, alg: string, header: ProtectedHeaderParameters, keySet: LocalKeySet): Promise<Uint8Array> {
  let key: Parameters<typeof compactVerify>[1];
  try {
    key = await keySet(header);
  } catch (err: unknown) {
    if (err instanceof joseErrors.JWKSNoMatchingKey) throw err;
    if (!(err instanceof joseErrors.JWKSMultipleMatchingKeys)) throw new JwsRejected(`no usable key in the OP's JWKS: ${(err as Error).message}`, err);
    for await (const candidate of err) {
      try {
        return await verifyWith(jws, alg, candidate, header);
      } catch {
        // try the next key
      }
    }
    throw new JwsRejected('signature verification failed');
  }
  return verifyWith(jws, alg, key, header);
}

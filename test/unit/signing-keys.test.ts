import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { KeyObject, constants as cryptoConstants, generateKeyPairSync, sign as cryptoSign, type webcrypto } from 'node:crypto';
import { CompactSign, compactVerify, createLocalJWKSet, exportJWK, generateKeyPair, type JWK } from 'jose';
import { systemClock } from '../../src/clock.js';
import { JwsRejected, SigningKeys, verifyWithNode } from '../../src/oidc/signing-keys.js';

/**
 * The JWS check of ID tokens and logout tokens (src/oidc/signing-keys.ts) for every asymmetric algorithm the OP may
 * use, with the key set served over HTTP as an OP serves its jwks_uri. The asymmetric algorithms are verified with
 * node:crypto directly (issue 19); jose's own compactVerify is the reference every verdict must agree with.
 */

const ALGS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'] as const;

interface KeyPair {
  readonly alg: string;
  readonly privateKey: webcrypto.CryptoKey;
  readonly jwk: JWK & { readonly kid: string };
  /** Another key of the same kind, not published: a forger's. */
  readonly impostor: webcrypto.CryptoKey;
}

const encoder = new TextEncoder();
const claims = { iss: 'https://op.test', sub: 'subject-1', aud: 'client', iat: 1_700_000_000, exp: 2_000_000_000 };

async function sign(pair: KeyPair, payload: Record<string, unknown> = claims, header: Record<string, unknown> = {}): Promise<string> {
  return new CompactSign(encoder.encode(JSON.stringify(payload))).setProtectedHeader({ alg: pair.alg, kid: pair.jwk.kid, ...header } as { alg: string }).sign(pair.privateKey);
}

/** jose's verdict with the same key set: the payload, or undefined when it refuses. */
async function joseVerdict(jwks: { keys: JWK[] }, jws: string, alg: string): Promise<Record<string, unknown> | undefined> {
  try {
    const { payload } = await compactVerify(jws, createLocalJWKSet(jwks), { algorithms: [alg] });
    return JSON.parse(new TextDecoder().decode(payload)) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

describe('SigningKeys: asymmetric JWS algorithms', () => {
  const pairs: KeyPair[] = [];
  let server: Server;
  let keys: SigningKeys;
  let jwks: { keys: JWK[] };

  before(async () => {
    for (const alg of ALGS) {
      const options = { extractable: true, ...(alg === 'EdDSA' ? { crv: 'Ed25519' } : {}) };
      const { privateKey, publicKey } = await generateKeyPair(alg, options);
      const impostor = (await generateKeyPair(alg, options)).privateKey;
      pairs.push({ alg, privateKey, impostor, jwk: { ...(await exportJWK(publicKey)), kid: `key-${alg}`, alg, use: 'sig' } });
    }
    jwks = { keys: pairs.map((pair) => pair.jwk) };
    server = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(jwks));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    keys = new SigningKeys({ idpId: 'op', jwksUri: `http://127.0.0.1:${port}/jwks`, clock: systemClock, fetchTimeoutMs: 5000, allowHttp: true });
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  for (const alg of ALGS) {
    test(`${alg}: a good signature gives the payload; any change to header, payload or signature is refused, as jose does`, async () => {
      const pair = pairs.find((candidate) => candidate.alg === alg)!;
      const jws = await sign(pair);
      const verified = await keys.verify(jws, [alg], undefined);
      assert.deepEqual(verified.payload, claims);
      assert.deepEqual(await joseVerdict(jwks, jws, alg), claims);

      const [header, payload, signature] = jws.split('.') as [string, string, string];
      const otherPayload = Buffer.from(JSON.stringify({ ...claims, sub: 'someone-else' })).toString('base64url');
      const flipped = Buffer.from(signature, 'base64url');
      flipped[flipped.length - 1]! ^= 0x01;
      // One octet short at the end (the leading-zero case, the same integer, is the test below).
      const shortened = Buffer.from(signature, 'base64url').subarray(0, -1).toString('base64url');
      const forged = [
        `${header}.${otherPayload}.${signature}`,
        `${header}.${payload}.${flipped.toString('base64url')}`,
        `${header}.${payload}.${shortened}`,
        `${header}.${payload}.`,
        // Signed by a key of the same kind that the OP never published, presented under this key's kid.
        await new CompactSign(encoder.encode(JSON.stringify(claims))).setProtectedHeader({ alg, kid: pair.jwk.kid }).sign(pair.impostor),
        // The good token re-encoded: junk after the signature, a look-alike character whose low byte is base64url.
        `${jws}!*`,
        `${header}.${String.fromCharCode(0x100 + payload.charCodeAt(0))}${payload.slice(1)}.${signature}`,
      ];
      for (const candidate of forged) {
        await assert.rejects(keys.verify(candidate, [alg], undefined), JwsRejected, candidate);
        assert.equal(await joseVerdict(jwks, candidate, alg), undefined);
      }
      // The signature was checked by node:crypto, not handed to jose (issue 19: that is the point of the path).
      const key = await createLocalJWKSet(jwks)({ alg, kid: pair.jwk.kid });
      assert.deepEqual(JSON.parse(Buffer.from(verifyWithNode(jws, alg, key, { alg, kid: pair.jwk.kid }) ?? []).toString()), claims);
      await assert.rejects(keys.verify(jws, ALGS.filter((other) => other !== alg), undefined), /not allowed/);
    });
  }

  test('a header jose must judge (crit) is judged by jose: an unknown critical parameter is refused, however well signed', async () => {
    const pair = pairs.find((candidate) => candidate.alg === 'RS256')!;
    const jws = signRaw({ alg: 'RS256', kid: pair.jwk.kid, crit: ['urn:example:unknown'], 'urn:example:unknown': true }, pair.privateKey, 'sha256', {});
    await assert.rejects(keys.verify(jws, ['RS256'], undefined), /JWS rejected/);
    assert.equal(await joseVerdict(jwks, jws, 'RS256'), undefined);
    // The same signing by hand without crit is accepted: the refusal above is about crit alone.
    assert.deepEqual((await keys.verify(signRaw({ alg: 'RS256', kid: pair.jwk.kid }, pair.privateKey, 'sha256', {}), ['RS256'], undefined)).payload, claims);
  });

  test('an RSA key published for RS256 does not verify a PS256 signature made with it', async () => {
    const pair = pairs.find((candidate) => candidate.alg === 'RS256')!;
    const pss = { padding: cryptoConstants.RSA_PKCS1_PSS_PADDING, saltLength: cryptoConstants.RSA_PSS_SALTLEN_DIGEST };
    const jws = signRaw({ alg: 'PS256', kid: pair.jwk.kid }, pair.privateKey, 'sha256', pss);
    await assert.rejects(keys.verify(jws, ['PS256'], undefined), JwsRejected);
    assert.equal(await joseVerdict(jwks, jws, 'PS256'), undefined);
    // Nor does the node path, handed that RSA key for RS256 (PKCS#1 v1.5) while the signature is PSS.
    const key = await createLocalJWKSet(jwks)({ alg: 'RS256', kid: pair.jwk.kid });
    assert.throws(() => verifyWithNode(jws, 'RS256', key, { alg: 'RS256', kid: pair.jwk.kid }), /signature verification failed/);
  });

  // RFC 8017 §8.1.2 step 1. WebCrypto (jose's path) refuses it on Node 24 and accepts it on Node 20; this path refuses
  // it on both.
  test('an RSA signature with its leading zero byte dropped (the same integer, one octet short) is refused', async () => {
    // OpenSSL's PSS verification reads a short signature as the integer it encodes (its PKCS#1 v1.5 one refuses it).
    const pair = pairs.find((candidate) => candidate.alg === 'PS256')!;
    // Sign until a signature starts with 0x00 (1 in 256; PSS signatures are randomised).
    let jws = '';
    for (let n = 0; n < 20_000 && Buffer.from(jws.split('.')[2] ?? 'AQ', 'base64url')[0] !== 0; n++) jws = await sign(pair, { ...claims, jti: String(n) });
    const [header, payload, signature] = jws.split('.') as [string, string, string];
    const bytes = Buffer.from(signature, 'base64url');
    assert.equal(bytes[0], 0);
    assert.ok((await keys.verify(jws, ['PS256'], undefined)).payload);
    const shortened = `${header}.${payload}.${bytes.subarray(1).toString('base64url')}`;
    await assert.rejects(keys.verify(shortened, ['PS256'], undefined), JwsRejected);
  });

  test('RSA keys under 2048 bits are refused, as jose refuses them', async () => {
    const weak = generateKeyPairSync('rsa', { modulusLength: 1024 });
    const weakJwks = { keys: [{ ...(await exportJWK(weak.publicKey)), kid: 'weak', alg: 'RS256', use: 'sig' }] };
    const input = `${Buffer.from(JSON.stringify({ alg: 'RS256', kid: 'weak' })).toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`;
    const jws = `${input}.${cryptoSign('sha256', Buffer.from(input), weak.privateKey).toString('base64url')}`;
    assert.equal(await joseVerdict(weakJwks, jws, 'RS256'), undefined);
    const key = await createLocalJWKSet(weakJwks)({ alg: 'RS256', kid: 'weak' });
    assert.throws(() => verifyWithNode(jws, 'RS256', key, { alg: 'RS256', kid: 'weak' }), /2048 bits/);
  });
});

/** A compact JWS signed by node:crypto with any header (jose's signer refuses the odd ones these tests need). */
function signRaw(header: Record<string, unknown>, privateKey: webcrypto.CryptoKey, hash: string, options: Record<string, unknown>): string {
  const input = `${Buffer.from(JSON.stringify(header)).toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`;
  const signature = cryptoSign(hash, Buffer.from(input), { key: KeyObject.from(privateKey), ...options });
  return `${input}.${signature.toString('base64url')}`;
}

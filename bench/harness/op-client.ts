import type { TestOp, TestOpUser } from '../../test/support/test-op.js';
import type { RequestShape } from './load-jobs.js';

/** Users for the OP beyond alice and bob, so that logins and tokens spread over several accounts. */
export function benchUsers(count: number): TestOpUser[] {
  return Array.from({ length: count }, (_, index) => ({
    username: `bench${index}`,
    password: `bench-password-${index}`,
    sub: `b0000000-0000-4000-8000-${String(index).padStart(12, '0')}`,
    email: `bench${index}@bench.test`,
    name: `Bench User ${index}`,
    groups: ['matrix-users'],
  }));
}

export async function tokenEndpointOf(op: TestOp): Promise<string> {
  const response = await fetch(`${op.issuer}/.well-known/openid-configuration`);
  const metadata = (await response.json()) as { token_endpoint?: unknown };
  if (typeof metadata.token_endpoint !== 'string') throw new Error('the OP publishes no token_endpoint');
  return metadata.token_endpoint;
}

/** The OP's own password-grant call, as the proxy's client makes it (client_secret_basic, same scopes). */
export function passwordGrantRequest(op: TestOp, tokenEndpoint: string, user: TestOpUser, scope: string): RequestShape {
  const basic = Buffer.from(`${encodeURIComponent(op.clientId)}:${encodeURIComponent(op.clientSecret)}`).toString('base64');
  return {
    url: tokenEndpoint,
    method: 'POST',
    headers: { authorization: `Basic ${basic}`, 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
    body: new URLSearchParams({ grant_type: 'password', username: user.username, password: user.password, scope }).toString(),
  };
}

/** An access token from the OP itself, for a native OIDC client (what the introspection relay is for). */
export async function nativeAccessToken(op: TestOp, tokenEndpoint: string, user: TestOpUser, deviceId: string): Promise<string> {
  const request = passwordGrantRequest(op, tokenEndpoint, user, `openid profile email urn:matrix:client:api:* urn:matrix:client:device:${deviceId}`);
  const response = await fetch(request.url, { method: 'POST', headers: { ...request.headers }, body: request.body ?? '' });
  const body = (await response.json()) as { access_token?: unknown };
  if (response.status !== 200 || typeof body.access_token !== 'string') throw new Error(`password grant at the OP failed: ${response.status} ${JSON.stringify(body)}`);
  return body.access_token;
}

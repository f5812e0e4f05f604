import type { Config } from '../config/schema.js';
import type { AddCheck } from './checks.js';

/**
 * `public_baseurl` seen from the proxy itself: clients, the OP's redirects and back-channel logout all use it. Its
 * login flows must be this proxy's (the providers of this config), not the homeserver's own.
 */
export async function checkPublicBaseUrl(config: Config, timeoutMs: number, add: AddCheck): Promise<void> {
  const url = `${config.public_baseurl}_matrix/client/v3/login`;
  let status: number;
  let body: unknown;
  try {
    const response = await fetch(url, { redirect: 'manual', signal: AbortSignal.timeout(timeoutMs) });
    status = response.status;
    body = await response.json().catch(() => undefined);
  } catch (err: unknown) {
    const cause = err instanceof Error && err.cause instanceof Error ? `: ${err.cause.message}` : '';
    add('reachable', 'fail', `${url}: ${err instanceof Error ? err.message : String(err)}${cause}`, 'check public_baseurl, its DNS and TLS, and the reverse proxy in front of the proxy; start the proxy first');
    return;
  }
  if (status !== 200) {
    add('reachable', 'fail', `${url} answered HTTP ${status}`, 'route public_baseurl to the proxy\'s listener (listen), and start the proxy first');
    return;
  }
  const flows = isRecord(body) && Array.isArray(body['flows']) ? body['flows'] : [];
  const sso = flows.find((flow): flow is Record<string, unknown> => isRecord(flow) && flow['type'] === 'm.login.sso');
  const served = Array.isArray(sso?.['identity_providers']) ? (sso['identity_providers'] as unknown[]).map((idp) => (isRecord(idp) ? idp['id'] : undefined)) : [];
  const expected = config.oidc_providers.map((provider) => provider.idp_id);
  if (expected.every((id) => served.includes(id))) {
    add('reachable', 'pass', `${url} is answered by this proxy (providers ${expected.join(', ') || 'none'})`);
  } else {
    add('reachable', 'fail', `${url} answers, but not with this proxy's providers (${served.join(', ') || 'none'} instead of ${expected.join(', ')})`, 'route /_matrix/client/*/login of public_baseurl to the proxy, not to the homeserver');
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

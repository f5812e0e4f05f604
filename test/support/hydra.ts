import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { freePort } from './free-port.js';
import { startOpProcess } from './op-process.js';
import { interopCacheDir } from './synapse.js';

/**
 * A real Ory Hydra (github.com/ory/hydra/v2, built by scripts/install-hydra.sh) on loopback, in-memory SQLite, with
 * the login and consent app Hydra delegates to — Hydra has no user database of its own, so this small app is the
 * "identity" side an admin would run: a login form checking two users, and a consent step that grants every asked
 * scope and puts the profile claims in the ID token. Hydra offers the code flow, refresh tokens (rotated) and
 * back-channel logout; it has no password grant.
 */
export const HYDRA_VERSION = process.env['HYDRA_VERSION'] ?? 'v2.3.0';

export const HYDRA_SETUP = {
  client: { clientId: 'matrix-compat-proxy', clientSecret: 'hydra-client-secret-for-tests-0123456789' },
  users: {
    alice: { subject: 'b7d1c0de-0000-4000-8000-a11ce0000h01', username: 'alice', password: 'alice-hydra-password', name: 'Alice Liddell', email: 'alice@example.test' },
    bob: { subject: 'b7d1c0de-0000-4000-8000-b0b000000h02', username: 'bob', password: 'bob-hydra-password', name: 'Bob Builder', email: 'bob@example.test' },
  },
} as const;

export interface RunningHydra {
  readonly issuer: string;
  readonly adminUrl: string;
  readonly startupMs: number;
  /**
   * Hydra's headless logout of one login session (admin API, by `sid`): Hydra itself sends a logout token to the
   * back-channel logout URI of every client of that session.
   */
  endSession(sid: string): Promise<void>;
  logs(): string;
  stop(): Promise<void>;
}

export class HydraMissingError extends Error {
  override readonly name = 'HydraMissingError';
}

export function hydraBinary(): string {
  const binary = process.env['HYDRA_BINARY'] ?? join(interopCacheDir(), `hydra-${HYDRA_VERSION}`, 'hydra');
  if (!existsSync(binary)) {
    throw new HydraMissingError(`Ory Hydra is not installed (no ${binary}). Run scripts/install-hydra.sh, or set MCP_SKIP_INTEROP=1 to skip the interop suite explicitly.`);
  }
  return binary;
}

export async function startHydra(options: { readonly redirectUris: readonly string[]; readonly backchannelLogoutUri: string }): Promise<RunningHydra> {
  const binary = hydraBinary();
  const [publicPort, adminPort] = [await freePort(), await freePort()];
  const issuer = `http://127.0.0.1:${publicPort}`;
  const adminUrl = `http://127.0.0.1:${adminPort}`;
  const app = await startLoginConsentApp(adminUrl);

  const started = performance.now();
  const hydra = startOpProcess('Hydra', binary, ['serve', 'all', '--dev', '--sqa-opt-out'], {
    DSN: 'memory',
    SECRETS_SYSTEM: randomBytes(24).toString('hex'),
    URLS_SELF_ISSUER: issuer,
    URLS_LOGIN: `${app.url}/login`,
    URLS_CONSENT: `${app.url}/consent`,
    URLS_LOGOUT: `${app.url}/logout`,
    SERVE_PUBLIC_HOST: '127.0.0.1',
    SERVE_PUBLIC_PORT: String(publicPort),
    SERVE_ADMIN_HOST: '127.0.0.1',
    SERVE_ADMIN_PORT: String(adminPort),
    LOG_LEVEL: 'debug',
    OAUTH2_EXPOSE_INTERNAL_ERRORS: 'true',
  });
  const stop = async () => {
    await hydra.stop();
    await new Promise<void>((resolve) => app.server.close(() => resolve()));
  };
  try {
    await hydra.waitForUrl(`${adminUrl}/health/ready`, 60_000);
    await hydra.waitForUrl(`${issuer}/.well-known/openid-configuration`, 10_000);
    const created = await fetch(`${adminUrl}/admin/clients`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        client_id: HYDRA_SETUP.client.clientId,
        client_secret: HYDRA_SETUP.client.clientSecret,
        client_name: 'Matrix',
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        scope: 'openid offline_access profile email',
        redirect_uris: [...options.redirectUris],
        token_endpoint_auth_method: 'client_secret_basic',
        backchannel_logout_uri: options.backchannelLogoutUri,
        backchannel_logout_session_required: true,
      }),
    });
    if (created.status !== 201) throw new Error(`Hydra refused the client: ${created.status} ${await created.text()}`);
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    issuer,
    adminUrl,
    startupMs: Math.round(performance.now() - started),
    async endSession(sid) {
      const response = await fetch(`${adminUrl}/admin/oauth2/auth/sessions/login?sid=${encodeURIComponent(sid)}`, { method: 'DELETE' });
      if (response.status !== 204) throw new Error(`Hydra did not end session ${sid}: ${response.status} ${await response.text()}`);
    },
    logs: hydra.logs,
    stop,
  };
}

/** The login and consent app: what Hydra redirects the browser to, accepting through Hydra's admin API. */
async function startLoginConsentApp(adminUrl: string): Promise<{ url: string; server: Server }> {
  const admin = async (method: string, path: string, body?: unknown): Promise<Record<string, unknown>> => {
    const response = await fetch(`${adminUrl}/admin/oauth2/auth/requests${path}`, {
      method,
      ...(body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
    });
    const answer = (await response.json()) as Record<string, unknown>;
    if (!response.ok) throw new Error(`Hydra admin ${method} ${path}: ${response.status} ${JSON.stringify(answer)}`);
    return answer;
  };
  const redirect = (res: ServerResponse, to: unknown): void => {
    res.writeHead(303, { location: String(to) }).end();
  };
  const form = (res: ServerResponse, challenge: string, error = ''): void => {
    res
      .writeHead(error === '' ? 200 : 401, { 'content-type': 'text/html; charset=utf-8' })
      .end(
        `<!doctype html><title>Sign in</title><h1>Sign in</h1>${error === '' ? '' : `<p id="error">${error}</p>`}` +
          `<form method="post" action="/login"><input type="hidden" name="challenge" value="${challenge}">` +
          `<input id="username" name="username" autocomplete="username"><input id="password" name="password" type="password">` +
          `<button id="sign-in" type="submit">Sign in</button></form>`,
      );
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://app.invalid');
    if (req.method === 'GET' && url.pathname === '/login') {
      const challenge = url.searchParams.get('login_challenge') ?? '';
      const request = await admin('GET', `/login?login_challenge=${encodeURIComponent(challenge)}`);
      if (request['skip'] === true) {
        const accepted = await admin('PUT', `/login/accept?login_challenge=${encodeURIComponent(challenge)}`, { subject: request['subject'] });
        return redirect(res, accepted['redirect_to']);
      }
      return form(res, challenge);
    }
    if (req.method === 'POST' && url.pathname === '/login') {
      const chunks: Buffer[] = [];
      for await (const chunk of req as AsyncIterable<Buffer>) chunks.push(chunk);
      const fields = new URLSearchParams(Buffer.concat(chunks).toString());
      const challenge = fields.get('challenge') ?? '';
      const user = Object.values(HYDRA_SETUP.users).find((candidate) => candidate.username === fields.get('username') && candidate.password === fields.get('password'));
      if (user === undefined) return form(res, challenge, 'Invalid username or password.');
      const accepted = await admin('PUT', `/login/accept?login_challenge=${encodeURIComponent(challenge)}`, { subject: user.subject, remember: true, remember_for: 3600 });
      return redirect(res, accepted['redirect_to']);
    }
    if (req.method === 'GET' && url.pathname === '/consent') {
      const challenge = url.searchParams.get('consent_challenge') ?? '';
      const request = await admin('GET', `/consent?consent_challenge=${encodeURIComponent(challenge)}`);
      const user = Object.values(HYDRA_SETUP.users).find((candidate) => candidate.subject === request['subject']);
      const profile = user === undefined ? {} : { preferred_username: user.username, name: user.name, email: user.email, email_verified: true };
      const accepted = await admin('PUT', `/consent/accept?consent_challenge=${encodeURIComponent(challenge)}`, {
        grant_scope: request['requested_scope'],
        grant_access_token_audience: request['requested_access_token_audience'],
        remember: true,
        remember_for: 3600,
        session: { id_token: profile, access_token: {} },
      });
      return redirect(res, accepted['redirect_to']);
    }
    res.writeHead(404).end();
  };
  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(err instanceof Error ? err.message : String(err));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

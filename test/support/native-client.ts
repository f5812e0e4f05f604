import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createClient, generateOidcAuthorizationUrl, registerOidcClient } from 'matrix-js-sdk';
import type { Browser, Page } from 'playwright-core';
import { locationOf, ProxyBrowser } from './proxy-browser.js';

/**
 * A native OAuth client of the proxy's OAuth server (native_clients: serve) made of matrix-js-sdk's own OIDC helpers:
 * discovery through the homeserver's auth_metadata, MSC2966 registration, the authorization URL. matrix-js-sdk keeps
 * its authorization state in sessionStorage, which Node lacks: a Map-backed Storage stands in.
 */
class MemoryStorage {
  private readonly items = new Map<string, string>();
  get length(): number {
    return this.items.size;
  }
  key(index: number): string | null {
    return [...this.items.keys()][index] ?? null;
  }
  getItem(key: string): string | null {
    return this.items.get(key) ?? null;
  }
  setItem(key: string, value: string): void {
    this.items.set(key, String(value));
  }
  removeItem(key: string): void {
    this.items.delete(key);
  }
  clear(): void {
    this.items.clear();
  }
}
(globalThis as { sessionStorage?: unknown }).sessionStorage ??= new MemoryStorage();
(globalThis as { localStorage?: unknown }).localStorage ??= new MemoryStorage();
// oidc-client-ts (under matrix-js-sdk) reads its storage and timers through `window`.
(globalThis as { window?: unknown }).window ??= globalThis;
(globalThis as { location?: unknown }).location ??= new URL('https://app.example.test/');

export const CLIENT_URI = 'https://app.example.test/';
export const REDIRECT_URI = 'https://app.example.test/callback';

export async function discover(homeserverUrl: string) {
  const anonymous = createClient({ baseUrl: homeserverUrl });
  const metadata = await anonymous.getAuthMetadata();
  anonymous.stopClient();
  return metadata;
}

export type AuthMetadata = Awaited<ReturnType<typeof discover>>;

export function register(metadata: AuthMetadata): Promise<string> {
  return registerOidcClient(metadata, { clientName: 'Test App', clientUri: CLIENT_URI, applicationType: 'web', redirectUris: [REDIRECT_URI], contacts: ['admin@app.example.test'], tosUri: 'https://app.example.test/tos', policyUri: 'https://app.example.test/policy' });
}

/** matrix-js-sdk's authorization URL, plus extra parameters an MSC4198 client adds (login_hint). */
export async function authorizationUrl(homeserverUrl: string, metadata: AuthMetadata, clientId: string, extra: Record<string, string> = {}): Promise<URL> {
  const url = new URL(await generateOidcAuthorizationUrl({ metadata, clientId, homeserverUrl, redirectUri: REDIRECT_URI, nonce: randomBytes(8).toString('hex') }));
  for (const [name, value] of Object.entries(extra)) url.searchParams.set(name, value);
  return url;
}

/** The HTML-escaped text of the pages (escapeHtml writes every special character as &#N;), back to plain. */
export function unescapeHtml(text: string): string {
  return text.replace(/&#(\d+);/g, (_, code: string) => String.fromCharCode(Number(code)));
}

/** The fields of the sign-in page: its SSO links, the password form's action, CSRF token and prefilled user name. */
export function signInPageOf(page: string): { ssoLinks: string[]; action: string; csrfToken: string; username: string; error: string | undefined } {
  const ssoLinks = [...page.matchAll(/<a class="button secondary sso" href="([^"]+)"/g)].map((match) => unescapeHtml(match[1] ?? ''));
  const action = unescapeHtml(/<form method="post" action="([^"]+)" id="password-form"/.exec(page)?.[1] ?? '');
  const csrfToken = unescapeHtml(/name="csrf_token" value="([^"]*)"/.exec(page)?.[1] ?? '');
  const username = unescapeHtml(/id="username" name="username"[^>]* value="([^"]*)"/.exec(page)?.[1] ?? '');
  const error = /<p class="error" id="error">([^<]*)<\/p>/.exec(page)?.[1];
  assert.ok(action !== '', `no password form on the page:\n${page}`);
  return { ssoLinks, action, csrfToken, username, error: error === undefined ? undefined : unescapeHtml(error) };
}

/**
 * Follows redirects in `browser` (proxy-origin cookies only) until a 200 page, the client's redirect URI, or a URL
 * outside `stopOrigins`' complement; returns the last response and where it stopped.
 */
export async function follow(browser: ProxyBrowser, response: Response, stopAt: (url: URL) => boolean): Promise<{ response: Response; stoppedAt?: URL }> {
  for (let hop = 0; hop < 20; hop++) {
    if (![302, 303].includes(response.status)) return { response };
    const next = locationOf(response);
    if (stopAt(next)) return { response, stoppedAt: next };
    response = await browser.get(next);
  }
  throw new Error('too many redirects');
}

/**
 * A Chromium page for a native client's browser hops: the Content-Security-Policy violations it reports are
 * collected, and the client's redirect URI (a host that does not exist here) is answered by the browser itself.
 */
export async function clientPage(browser: Browser): Promise<{ page: Page; violations: string[] }> {
  const page = await browser.newPage();
  page.setDefaultTimeout(15_000);
  const violations: string[] = [];
  page.on('console', (message) => {
    if (/Content Security Policy/i.test(message.text())) violations.push(message.text());
  });
  await page.route(`${REDIRECT_URI}**`, (route) => route.fulfill({ status: 200, contentType: 'text/html', body: '<!doctype html><title>App</title><h1 id="app">App</h1>' }));
  return { page, violations };
}

/** The PKCE verifier matrix-js-sdk stored (sessionStorage) for an authorization with this state. */
export function codeVerifierOf(state: string): string {
  const storage = (globalThis as unknown as { sessionStorage: Storage }).sessionStorage;
  for (let index = 0; index < storage.length; index++) {
    const value = storage.getItem(storage.key(index) ?? '');
    if (value === null || !value.includes(state)) continue;
    const verifier = (JSON.parse(value) as { code_verifier?: unknown }).code_verifier;
    if (typeof verifier === 'string') return verifier;
  }
  throw new Error(`no code verifier stored for state ${state}`);
}

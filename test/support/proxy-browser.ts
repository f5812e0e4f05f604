import assert from 'node:assert/strict';

/**
 * The browser's side of the proxy's SSO pages for tests without Chromium: one cookie jar (sent only to the proxy's
 * origin), redirects followed by hand so each hop can be checked.
 */
export class ProxyBrowser {
  private readonly cookies = new Map<string, string>();
  constructor(private readonly origin: string) {}

  async get(url: string | URL): Promise<Response> {
    return this.send(new URL(url, this.origin), 'GET');
  }

  async post(url: string | URL, form: Record<string, string>): Promise<Response> {
    return this.send(new URL(url, this.origin), 'POST', new URLSearchParams(form));
  }

  cookieHeader(): string {
    return [...this.cookies].map(([name, value]) => `${name}=${value}`).join('; ');
  }

  private async send(url: URL, method: string, form?: URLSearchParams): Promise<Response> {
    const headers: Record<string, string> = {};
    if (url.origin === this.origin && this.cookies.size > 0) headers['cookie'] = this.cookieHeader();
    if (form !== undefined) headers['content-type'] = 'application/x-www-form-urlencoded';
    const response = await fetch(url, { method, headers, redirect: 'manual', ...(form === undefined ? {} : { body: form.toString() }) });
    for (const line of response.headers.getSetCookie()) {
      const pair = line.split(';')[0] ?? '';
      const equals = pair.indexOf('=');
      if (equals > 0) this.cookies.set(pair.slice(0, equals).trim(), pair.slice(equals + 1).trim());
    }
    return response;
  }
}

/** The Location of a redirect, resolved against the response URL; fails the test when there is none. */
export function locationOf(response: Response): URL {
  const location = response.headers.get('location');
  assert.ok(location, `expected a redirect, got ${response.status}`);
  return new URL(location, response.url);
}

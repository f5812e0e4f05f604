import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { chromium, type Browser, type Page } from 'playwright-core';

/**
 * SSO through the proxy in headless Chromium, for the interop suites: the client's redirect, the OP's own login
 * page (filled by `signIn`), the proxy's confirmation page, and the client's landing URL with its loginToken.
 */
export const CHROMIUM = '/usr/bin/chromium';

export function chromiumMissing(): string | false {
  return existsSync(CHROMIUM) ? false : `${CHROMIUM} is not installed (apt-get install chromium)`;
}

export async function launchChromium(): Promise<Browser> {
  const missing = chromiumMissing();
  if (missing !== false) throw new Error(missing);
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync'],
  });
}

/** Runs one SSO login and resolves with the loginToken the client received. */
export async function ssoLoginInChromium(
  browser: Browser,
  options: { readonly proxyUrl: string; readonly idpId: string; readonly expectedUserId: string; readonly signIn: (page: Page) => Promise<void> },
): Promise<string> {
  const client = await startClient();
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    page.setDefaultTimeout(20_000);
    const redirectUrl = `${client.url}/sso-done`;
    await page.goto(`${options.proxyUrl}/_matrix/client/v3/login/sso/redirect/${encodeURIComponent(options.idpId)}?redirectUrl=${encodeURIComponent(redirectUrl)}`);
    await options.signIn(page);
    await page.waitForURL((url) => url.pathname.startsWith('/_matrix-compat-proxy/sso/confirm/'));
    assert.equal(await page.locator('.mxid').innerText(), options.expectedUserId);
    await page.getByRole('button', { name: 'Continue' }).click();
    await page.waitForURL((url) => url.href.startsWith(redirectUrl));
    const loginToken = new URL(page.url()).searchParams.get('loginToken');
    assert.ok(loginToken, `no loginToken in ${page.url()}`);
    return loginToken;
  } finally {
    await context.close();
    await new Promise<void>((resolve) => client.server.close(() => resolve()));
  }
}

async function startClient(): Promise<{ url: string; server: Server }> {
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end('<!doctype html><title>Client</title><h1>Client page</h1>');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

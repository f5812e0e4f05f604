import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { AutoDiscovery, createClient } from 'matrix-js-sdk';
import { interopSkipReason } from '../support/interop-stack.js';

// `npm run dev-stack` as a new user meets it: a client that discovers the homeserver from /.well-known/matrix/client
// (matrix-js-sdk's AutoDiscovery) must end up at the proxy, not at Synapse's own port (issue 18, item 6).

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

test('dev stack: /.well-known/matrix/client leads a discovering client to the proxy, where password login works', { skip: interopSkipReason(), timeout: 180_000 }, async () => {
  const child = spawn(process.execPath, ['--import', 'tsx', 'scripts/dev-stack.ts'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], detached: false });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  try {
    const banner = await Promise.race([
      (async () => {
        for (;;) {
          if (/Ctrl-C stops everything/.test(output)) return output;
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      })(),
      exited.then((code) => assert.fail(`dev-stack exited with ${code}:\n${output}`)),
    ]);
    const proxyUrl = /Homeserver URL for any Matrix client: (\S+)/.exec(banner)?.[1];
    const alicePassword = /alice \/ (\S+)/.exec(banner)?.[1];
    assert.ok(proxyUrl && alicePassword, banner);

    const wellKnown = (await (await fetch(`${proxyUrl}/.well-known/matrix/client`)).json()) as { 'm.homeserver': { base_url: string } };
    const discovered = await AutoDiscovery.fromDiscoveryConfig(wellKnown);
    const homeserver = discovered['m.homeserver'];
    assert.equal(homeserver.state, AutoDiscovery.SUCCESS, JSON.stringify(discovered));
    assert.equal(homeserver.base_url?.replace(/\/$/, ''), proxyUrl, 'discovery names the proxy');

    const client = createClient({ baseUrl: homeserver.base_url as string });
    const login = await client.loginRequest({ type: 'm.login.password', identifier: { type: 'm.id.user', user: 'alice' }, password: alicePassword });
    assert.match(login.user_id, /^@alice:/);
    const whoami = await createClient({ baseUrl: homeserver.base_url as string, accessToken: login.access_token }).whoami();
    assert.equal(whoami.user_id, login.user_id);
  } finally {
    if (child.exitCode === null) child.kill('SIGINT');
    const code = await exited;
    assert.equal(code, 0, `dev-stack stopped with ${code}:\n${output.slice(-3000)}`);
  }
});

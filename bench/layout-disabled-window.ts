// How long a legacy access token keeps working after its user is disabled at the OP, through each nginx layout of
// deploy/nginx (docs/deployment.md, "What each layout costs"). Real Synapse and Keycloak (the interop suite's), the
// proxy in-process with sessions.revalidate_interval 2s, Debian's nginx in both layouts at once. Takes about 2-3
// minutes (the auth-routes-only figure waits for Synapse's 2-minute introspection cache). Not part of `npm run bench`:
//   node --import tsx bench/layout-disabled-window.ts
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deployText, renderForNative, type DeployFile } from '../test/support/compose-native.js';
import { freePort } from '../test/support/free-port.js';
import { createKeycloakUser, jsonRequest, startInteropStack } from '../test/support/interop-stack.js';
import { startKeycloak, type RunningKeycloak } from '../test/support/keycloak.js';

const WHOAMI = '/_matrix/client/v3/account/whoami';
const LIMIT_MS = 200_000;

const keycloakStarting = startKeycloak();
const stack = await startInteropStack({ keycloak: keycloakStarting, revalidateInterval: '2s' });
const keycloak = await keycloakStarting;
const dir = await mkdtemp(join(tmpdir(), 'mcp-layout-window-'));
const children: ChildProcess[] = [];

async function startNginx(file: DeployFile): Promise<string> {
  const port = await freePort();
  const rules: [string, string][] = [
    ['access_log /dev/stdout', `access_log ${dir}/${file}-access.log`],
    ['error_log /dev/stderr', `error_log ${dir}/${file}-error.log`],
    ['listen 8080;', `listen 127.0.0.1:${port};`],
    ['server proxy:8009;', `server 127.0.0.1:${new URL(stack.url).port};`],
  ];
  if (file === 'nginxAuthOnly') rules.push(['server synapse:8008;', `server 127.0.0.1:${new URL(stack.synapse.url).port};`]);
  await writeFile(join(dir, `${file}.conf`), renderForNative(file, deployText(file), rules));
  children.push(spawn('/usr/sbin/nginx', ['-p', dir, '-c', join(dir, `${file}.conf`), '-e', join(dir, `${file}-early.log`), '-g', `daemon off; pid ${dir}/${file}.pid;`], { stdio: 'ignore' }));
  for (let attempt = 0; !(await portOpen(port)); attempt++) {
    if (attempt > 100) throw new Error(`nginx (${file}) did not listen on ${port}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return `http://127.0.0.1:${port}`;
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => resolve(socket.destroy() !== undefined));
    socket.once('error', () => resolve(false));
  });
}

/** Login, a few uses (Synapse caches its introspection answer), disable at Keycloak, poll whoami until refused. */
async function measure(layout: string, url: string, username: string, op: RunningKeycloak): Promise<string> {
  const user = await createKeycloakUser(op, username);
  const login = await jsonRequest(`${url}/_matrix/client/v3/login`, 'POST', { body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: user.username }, password: user.password } });
  if (login.status !== 200) throw new Error(`${layout}: login failed ${login.status} ${JSON.stringify(login.body)}`);
  const token = login.body.access_token as string;
  for (let i = 0; i < 3; i++) await jsonRequest(`${url}${WHOAMI}`, 'GET', { token });
  await op.disableUser(user.username);
  const disabledAt = performance.now();
  for (;;) {
    const response = await jsonRequest(`${url}${WHOAMI}`, 'GET', { token });
    const ms = Math.round(performance.now() - disabledAt);
    if (response.status !== 200) return `${layout}: user disabled in Keycloak → first ${response.status} ${response.body?.errcode} after ${ms} ms`;
    if (ms > LIMIT_MS) return `${layout}: token still accepted ${ms} ms after the user was disabled`;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

try {
  const [full, authOnly] = [await startNginx('nginxFull'), await startNginx('nginxAuthOnly')];
  const results = await Promise.all([measure('full-proxy', full, 'window-full', keycloak), measure('auth-routes-only', authOnly, 'window-auth', keycloak)]);
  console.log(`sessions.revalidate_interval 2 s, Synapse ${stack.synapse.version}, Keycloak ${keycloak.version}`);
  for (const line of results) console.log(line);
} finally {
  for (const child of children) child.kill('SIGTERM');
  await stack.stop();
  await keycloak.stop();
  await rm(dir, { recursive: true, force: true });
}
process.exit(0);

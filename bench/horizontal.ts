import { startHomeserverDouble } from '../test/support/homeserver-double.js';
import { reservePort } from '../test/support/free-port.js';
import { startTestOp } from '../test/support/test-op.js';
import { isEntryPoint, progress, runStandalone, type BenchEnvironment } from './harness/bench-environment.js';
import type { LoadGenerator } from './harness/load-generator-client.js';
import type { RequestShape, SequenceStep } from './harness/load-jobs.js';
import { benchUsers } from './harness/op-client.js';
import { ProxyChild } from './harness/proxy-child.js';
import { HOMESERVER_SECRET, IDP_ID, SERVER_NAME, proxyConfig } from './harness/proxy-config.js';
import { formatValue, ratioRow, type ResultRow, type ScenarioResult } from './harness/report.js';
import { median } from './harness/statistics.js';

/**
 * Issue 8, scenario 6: two proxy processes on one Redis, no stickiness. Each user logs in on A, uses the session
 * through B (the homeserver double, like Synapse, introspects at B), refreshes on B, is introspected on A, logs out
 * on B, and is then refused on A: every step on the replica that did not create or last change the session.
 */

const STEPS = ['login on A', 'use via B', 'refresh on B', 'introspect new token on A', 'logout on B', 'introspect on A after logout', 'use via A after logout'] as const;
type Step = (typeof STEPS)[number];

export async function horizontal(env: BenchEnvironment): Promise<ScenarioResult> {
  const settings = env.settings;
  const redis = await env.redis();
  const load = await env.loadGenerator();
  const users = benchUsers(Math.max(1, settings.horizontalUsers));
  // Held until the proxies start: the OP and the homeserver double below listen on port 0 meanwhile, and the kernel
  // may give them a port just picked and released (a proxy then failed to start with EADDRINUSE).
  const reserved = [await reservePort(), await reservePort(), await reservePort()] as const;
  const [portA, portB, homeserverPortB] = reserved.map((entry) => entry.port) as [number, number, number];
  const op = await startTestOp({ users, proxyBaseUrl: `http://127.0.0.1:${portA}`, idpId: IDP_ID });
  const homeserver = await startHomeserverDouble({ masEndpoint: `http://127.0.0.1:${homeserverPortB}/`, secret: HOMESERVER_SECRET, serverName: SERVER_NAME });
  const config = (clientPort: number, homeserverPort?: number) =>
    proxyConfig({ homeserverUrl: homeserver.url, redisUrl: redis.url, keyPrefix: 'mcp-bench-horizontal:', op, clientPort, ...(homeserverPort === undefined ? {} : { homeserverPort }) });
  await Promise.all(reserved.map((entry) => entry.release()));
  const [a, b] = await Promise.all([ProxyChild.start({ name: 'horizontal-a', config: config(portA) }), ProxyChild.start({ name: 'horizontal-b', config: config(portB, homeserverPortB) })]);

  const timings = new Map<Step, number[]>(STEPS.map((step) => [step, []]));
  const failures: string[] = [];
  let passed = 0;
  try {
    for (const user of users) {
      progress(`horizontal: ${user.username}`);
      const failed = await journey(load, a, b, user, timings);
      if (failed === undefined) passed += 1;
      else failures.push(`${user.username}: ${failed}`);
    }
  } finally {
    await Promise.all([a.stop(), b.stop()]);
    await homeserver.stop();
    await op.stop();
  }

  const rows: ResultRow[] = [
    ratioRow(`users whose whole session crossed replicas (${STEPS.length} steps each)`, passed, 'count', { label: 'users', value: users.length }, {
      target: { goal: 'all, no stickiness', met: passed === users.length, margin: `${passed}/${users.length}` },
    }),
  ];
  const notes = [
    `median per step: ${STEPS.map((step) => `${step} ${formatValue(median(timings.get(step) ?? []), 'ms')}`).join(', ')}`,
  ];
  return { scenario: 'horizontal', rows, notes, problems: failures, details: { users: users.length, passed, failures, timings: Object.fromEntries(timings) } };
}

async function journey(load: LoadGenerator, a: ProxyChild, b: ProxyChild, user: { username: string; password: string }, timings: Map<Step, number[]>): Promise<string | undefined> {
  const send = async (step: Step, shape: RequestShape, expectedStatus: number): Promise<SequenceStep> => {
    const result = (await load.run({ kind: 'sequence', steps: [shape] })).steps[0]!;
    timings.get(step)?.push(result.ms);
    if (result.status !== expectedStatus) throw new Error(`${step}: ${result.status} ${result.body.slice(0, 200)}`);
    return result;
  };
  const json = { 'content-type': 'application/json' };
  const introspect = (proxy: ProxyChild, token: string): RequestShape => ({
    url: `${proxy.homeserverFacingUrl}/oauth2/introspect`,
    method: 'POST',
    headers: { authorization: `Bearer ${HOMESERVER_SECRET}`, 'content-type': 'application/x-www-form-urlencoded', 'x-mas-supports-device-id': '1' },
    body: `token=${token}&token_type_hint=access_token`,
  });
  const whoami = (proxy: ProxyChild, token: string): RequestShape => ({ url: `${proxy.clientUrl}/_matrix/client/v3/account/whoami`, headers: { authorization: `Bearer ${token}` } });
  try {
    const loginBody = { type: 'm.login.password', identifier: { type: 'm.id.user', user: user.username }, password: user.password, refresh_token: true };
    const login = JSON.parse((await send('login on A', { url: `${a.clientUrl}/_matrix/client/v3/login`, method: 'POST', headers: json, body: JSON.stringify(loginBody) }, 200)).body) as {
      access_token: string;
      refresh_token: string;
      device_id: string;
      user_id: string;
    };
    const used = JSON.parse((await send('use via B', whoami(b, login.access_token), 200)).body) as { user_id?: string; device_id?: string };
    if (used.user_id !== login.user_id || used.device_id !== login.device_id) return `use via B saw ${JSON.stringify(used)}`;
    const refreshBody = { refresh_token: login.refresh_token };
    const refreshed = JSON.parse((await send('refresh on B', { url: `${b.clientUrl}/_matrix/client/v3/refresh`, method: 'POST', headers: json, body: JSON.stringify(refreshBody) }, 200)).body) as {
      access_token: string;
    };
    const active = JSON.parse((await send('introspect new token on A', introspect(a, refreshed.access_token), 200)).body) as { active?: boolean; username?: string };
    if (active.active !== true) return `A did not know the token B issued: ${JSON.stringify(active)}`;
    await send('logout on B', { url: `${b.clientUrl}/_matrix/client/v3/logout`, method: 'POST', headers: { authorization: `Bearer ${refreshed.access_token}`, 'content-type': 'application/json' }, body: '{}' }, 200);
    const inactive = JSON.parse((await send('introspect on A after logout', introspect(a, refreshed.access_token), 200)).body) as { active?: boolean };
    if (inactive.active !== false) return `A still answers active after the logout on B`;
    await send('use via A after logout', whoami(a, refreshed.access_token), 401);
    return undefined;
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  }
}

if (isEntryPoint(import.meta.url)) await runStandalone('horizontal', horizontal);

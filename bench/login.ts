import { startHomeserverDouble } from '../test/support/homeserver-double.js';
import { reservePort } from '../test/support/free-port.js';
import { startTestOp, type TestOp, type TestOpUser } from '../test/support/test-op.js';
import { isEntryPoint, progress, runStandalone, type BenchEnvironment } from './harness/bench-environment.js';
import type { LoadGenerator } from './harness/load-generator-client.js';
import type { RequestShape } from './harness/load-jobs.js';
import { benchUsers, passwordGrantRequest, tokenEndpointOf } from './harness/op-client.js';
import { ProxyChild } from './harness/proxy-child.js';
import type { CallTotals } from './harness/proxy-protocol.js';
import { HOMESERVER_SECRET, IDP_ID, SERVER_NAME, proxyConfig } from './harness/proxy-config.js';
import { atMost, formatValue, ratioRow, type ResultRow, type ScenarioResult } from './harness/report.js';
import { distributionOf, median } from './harness/statistics.js';

/**
 * Issue 8, scenario 4: m.login.password through the proxy against the OP's own password-grant call (same OP, same
 * client, same scopes), alternating one after the other; then the SSO callback, with the code exchange at the OP
 * timed inside the proxy and subtracted.
 */

const USERS = 20;
const SCOPES = 'openid profile email offline_access';
const WARM_UP_LOGINS = 10;
const CLIENT_REDIRECT = 'https://client.bench.test/sso-done';

export async function login(env: BenchEnvironment): Promise<ScenarioResult> {
  const settings = env.settings;
  const redis = await env.redis();
  const load = await env.loadGenerator();
  const users = benchUsers(USERS);
  // Held until the proxy starts (the OP and the homeserver double listen on port 0 meanwhile: horizontal.ts).
  const reserved = await reservePort();
  const clientPort = reserved.port;
  const op = await startTestOp({ users, proxyBaseUrl: `http://127.0.0.1:${clientPort}`, idpId: IDP_ID });
  const homeserver = await startHomeserverDouble({ masEndpoint: 'http://127.0.0.1:9/', secret: HOMESERVER_SECRET, serverName: SERVER_NAME });
  await reserved.release();
  const proxy = await ProxyChild.start({ name: 'login', config: proxyConfig({ homeserverUrl: homeserver.url, redisUrl: redis.url, keyPrefix: 'mcp-bench-login:', op, clientPort }), timeOpCalls: true });
  const problems: string[] = [];
  try {
    const tokenEndpoint = await tokenEndpointOf(op);
    const proxyLogin = (user: TestOpUser): RequestShape => ({
      url: `${proxy.clientUrl}/_matrix/client/v3/login`,
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ type: 'm.login.password', identifier: { type: 'm.id.user', user: user.username }, password: user.password, initial_device_display_name: 'bench' }),
    });
    const pairs = (count: number, offset: number) =>
      Array.from({ length: count }, (_, index) => {
        const user = users[(offset + index) % users.length]!;
        return [proxyLogin(user), passwordGrantRequest(op, tokenEndpoint, user, SCOPES)];
      }).flat();

    const provisioning = settings.mode === 'smoke' ? 1 : Math.max(WARM_UP_LOGINS, USERS);
    progress(`login: provisioning (${provisioning} logins each; first logins provision the users)`);
    await checked(load, pairs(provisioning, 0), problems);
    // The same measure just after start, before V8 has optimised the login's code: what the first logins of a
    // freshly started proxy cost (reported, not the target's figure; a proxy in service is warm).
    progress(`login: ${settings.logins} password logins just after start, alternating with the OP's grant`);
    const coldCpuBefore = proxy.cpuTimeMs();
    const coldSteps = await checked(load, pairs(settings.logins, 0), problems);
    const cold = { cpuPerLoginMs: (proxy.cpuTimeMs() - coldCpuBefore) / settings.logins, proxyMs: coldSteps.filter((_, index) => index % 2 === 0).map((step) => step.ms), opMs: coldSteps.filter((_, index) => index % 2 === 1).map((step) => step.ms) };
    if (settings.loginWarmUp > 0) {
      progress(`login: warm-up (${settings.loginWarmUp} more logins each, until the login's code is optimised)`);
      await checked(load, pairs(settings.loginWarmUp, 0), problems);
    }
    progress(`login: ${settings.logins} password logins through the proxy, alternating with ${settings.logins} password grants at the OP`);
    await proxy.opCallTimings();
    const cpuBefore = proxy.cpuTimeMs();
    // The proxy's clock around the logins: with BENCH_CPU_PROFILE_DIR, the profile's login window (details).
    const fromMicros = await proxy.clockMicros();
    const steps = await checked(load, pairs(settings.logins, 0), problems);
    const cpuPerLoginMs = (proxy.cpuTimeMs() - cpuBefore) / settings.logins;
    const profileWindow = { fromMicros, toMicros: await proxy.clockMicros() };
    const inside = await proxy.opCallTimings();
    const grantInsideMs = inside.passwordGrant;
    const proxyMs = steps.filter((_, index) => index % 2 === 0).map((step) => step.ms);
    const opMs = steps.filter((_, index) => index % 2 === 1).map((step) => step.ms);

    progress(`login: ${settings.ssoLogins} SSO logins (OP login form per login; the callback is timed)`);
    const sso = await ssoCallbacks(load, op, proxy, users, settings.ssoLogins, problems);

    const proxyDist = distributionOf(proxyMs);
    const opDist = distributionOf(opMs);
    const added = proxyDist.p50 - opDist.p50;
    // The proxy's own part: each login minus its password grant as the proxy timed it (openid-client included).
    const ownMs = proxyMs.map((ms, index) => ms - (grantInsideMs[index] ?? Number.NaN));
    const handling = sso.callbackMs.map((ms, index) => ms - (sso.exchangeMs[index] ?? Number.NaN));
    const handlingDist = distributionOf(handling);
    const rows: ResultRow[] = [
      ratioRow(`OP password grant (direct), ${opMs.length}×`, opDist.p50, 'ms', { label: 'OP', value: opDist.p50 }, { p99Ms: opDist.p99 }),
      ratioRow(`password login through the proxy, ${proxyMs.length}×`, proxyDist.p50, 'ms', { label: 'OP', value: opDist.p50 }, {
        p99Ms: proxyDist.p99,
        target: atMost('added median ≤ 3 ms', added, 3, (ms) => `+${formatValue(ms, 'ms')}`),
      }),
      // The same measure on the proxy just after its start (before V8 optimised the login's code): shown, no target.
      ratioRow(`password login just after start, ${cold.proxyMs.length}×`, median(cold.proxyMs), 'ms', { label: 'OP then', value: median(cold.opMs) }),
      ratioRow(`SSO callback without code exchange, ${handling.length}×`, handlingDist.p50, 'ms', { label: 'whole callback', value: median(sso.callbackMs) }, {
        p99Ms: handlingDist.p99,
        target: atMost('median ≤ 5 ms', handlingDist.p50, 5, (ms) => formatValue(ms, 'ms')),
      }),
    ];
    const notes = [
      `password login = proxy ${formatValue(proxyDist.p50, 'ms')} vs OP ${formatValue(opDist.p50, 'ms')} median: +${formatValue(added, 'ms')}; inside the proxy the password grant (openid-client: token request, ID token validation) took ${formatValue(median(grantInsideMs), 'ms')} median, the rest of the login (throttle, binding, device upsert at the homeserver over HTTP, session in Redis, response) ${formatValue(median(ownMs), 'ms')}`,
      `inside the proxy, per password login: ${callSplit('store', inside.store, settings.logins)}; ${callSplit('homeserver', inside.homeserver, settings.logins)} (waits of calls issued together overlap)`,
      `proxy CPU per password login (load-independent; openid-client's ID token check included): ${formatValue(cpuPerLoginMs, 'ms')}, after ${provisioning + 2 * settings.logins + settings.loginWarmUp} logins; just after start (logins ${provisioning + 1}–${provisioning + settings.logins}): ${formatValue(cold.cpuPerLoginMs, 'ms')}, proxy ${formatValue(median(cold.proxyMs), 'ms')} vs OP ${formatValue(median(cold.opMs), 'ms')} median (+${formatValue(median(cold.proxyMs) - median(cold.opMs), 'ms')})`,
      `SSO: whole callback median ${formatValue(median(sso.callbackMs), 'ms')}, of which code exchange at the OP ${formatValue(median(sso.exchangeMs), 'ms')} (timed inside the proxy around UpstreamProvider.exchangeCode); users already provisioned`,
    ];
    return { scenario: 'login', rows, notes, problems, details: { justStarted: cold, insideCalls: { store: inside.store, homeserver: inside.homeserver }, profileWindow, proxyMs, opMs, grantInsideMs, ssoCallbackMs: sso.callbackMs, ssoExchangeMs: sso.exchangeMs } };
  } finally {
    await proxy.stop();
    await homeserver.stop();
    await op.stop();
  }
}

/** "store 6 calls 1.2 ms (takeTokens 1× 0.2 ms, …)" per login, from the totals over `logins` logins. */
function callSplit(name: string, totals: Record<string, CallTotals>, logins: number): string {
  const entries = Object.entries(totals).sort((a, b) => b[1].totalMs - a[1].totalMs);
  const count = entries.reduce((sum, [, t]) => sum + t.count, 0) / logins;
  const ms = entries.reduce((sum, [, t]) => sum + t.totalMs, 0) / logins;
  const parts = entries.map(([method, t]) => `${method} ${(t.count / logins).toFixed(1)}× ${formatValue(t.totalMs / logins, 'ms')}`);
  return `${name} ${count.toFixed(1)} calls waiting ${formatValue(ms, 'ms')} (${parts.join(', ')})`;
}

async function checked(load: LoadGenerator, steps: RequestShape[], problems: string[]) {
  const result = await load.run({ kind: 'sequence', steps });
  for (const step of result.steps) if (step.status !== 200) problems.push(`login answered ${step.status}: ${step.body.slice(0, 200)}`);
  return result.steps;
}

/**
 * The browser's part of each SSO login is played here (redirect, OP login form); the load generator times only the
 * callback request, with the browser's cookie, and the proxy reports how long the exchange at the OP took in it.
 */
async function ssoCallbacks(load: LoadGenerator, op: TestOp, proxy: ProxyChild, users: readonly TestOpUser[], count: number, problems: string[]) {
  const callbackMs: number[] = [];
  await proxy.opCallTimings();
  for (let index = 0; index < count; index++) {
    const user = users[index % users.length]!;
    const redirect = await fetch(`${proxy.clientUrl}/_matrix/client/v3/login/sso/redirect?redirectUrl=${encodeURIComponent(CLIENT_REDIRECT)}`, { redirect: 'manual' });
    const location = redirect.headers.get('location');
    if (redirect.status !== 302 || location === null) throw new Error(`SSO redirect answered ${redirect.status}`);
    const cookie = redirect.headers
      .getSetCookie()
      .map((line) => line.split(';')[0])
      .join('; ');
    const callback = await op.browser().authorize(location, { login: user.username, password: user.password });
    const result = await load.run({ kind: 'sequence', steps: [{ url: callback.href, headers: { cookie } }] });
    const step = result.steps[0]!;
    if (step.status !== 302) problems.push(`SSO callback answered ${step.status}: ${step.body.slice(0, 200)}`);
    callbackMs.push(step.ms);
  }
  const exchangeMs = (await proxy.opCallTimings()).exchangeCode;
  if (exchangeMs.length !== callbackMs.length) throw new Error(`${callbackMs.length} callbacks but ${exchangeMs.length} code exchanges timed`);
  return { callbackMs, exchangeMs };
}

if (isEntryPoint(import.meta.url)) await runStandalone('login', login);

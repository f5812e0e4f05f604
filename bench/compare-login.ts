import { parseArgs } from 'node:util';
import { startHomeserverDouble } from '../test/support/homeserver-double.js';
import { reservePort } from '../test/support/free-port.js';
import { startTestOp, type TestOpUser } from '../test/support/test-op.js';
import { BenchEnvironment, progress } from './harness/bench-environment.js';
import { settingsFromArgs } from './harness/bench-settings.js';
import { compileProxyAt } from './harness/compile-proxy.js';
import type { RequestShape } from './harness/load-jobs.js';
import { benchUsers, passwordGrantRequest, tokenEndpointOf } from './harness/op-client.js';
import { ProxyChild } from './harness/proxy-child.js';
import { HOMESERVER_SECRET, IDP_ID, SERVER_NAME, proxyConfig } from './harness/proxy-config.js';
import { RoundFigures, startBaseAndThis } from './harness/rounds.js';
import { median } from './harness/statistics.js';

/**
 * Password logins through this tree's proxy against a baseline git ref's (default `main`), both running at once on
 * one OP, homeserver double and Redis, in one sequence: each step is the OP's own password grant followed by a login
 * through each proxy (which of the two goes first alternates step by step). A warm login's CPU is 2–4 ms, which the
 * 10 ms clock of /proc resolves only over many logins, and bench/login.ts runs in minutes-apart processes; here
 * both proxies see the same machine at the same moment. Per round: each proxy's CPU per login (/proc, its own
 * process) and the median login latency of each, and of the OP's grant.
 *
 *   node --import tsx bench/compare-login.ts [--base REF] [--rounds N] [--logins N] [--warm-up N] [--this-first]
 */

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: { base: { type: 'string' }, rounds: { type: 'string' }, logins: { type: 'string' }, 'warm-up': { type: 'string' }, 'this-first': { type: 'boolean' } },
  strict: true,
});
const baseRef = values.base ?? 'main';
const rounds = Number(values.rounds ?? '5');
const logins = Number(values.logins ?? '300');
const warmUp = Number(values['warm-up'] ?? '1200');
const USERS = 20;
const SCOPES = 'openid profile email offline_access';

type Tree = 'base' | 'this';

const env = new BenchEnvironment(settingsFromArgs([]));
const proxies: Partial<Record<Tree, ProxyChild>> = {};
const stops: (() => Promise<void>)[] = [];
try {
  const { entry: baseEntry, commit } = compileProxyAt(baseRef, 'compare-login');

  const redis = await env.redis();
  const load = await env.loadGenerator();
  const users = benchUsers(USERS);
  // Held until the proxies start (the OP and the homeserver double listen on port 0 meanwhile: horizontal.ts).
  const reserved = { base: await reservePort(), this: await reservePort() };
  const ports: Record<Tree, number> = { base: reserved.base.port, this: reserved.this.port };
  const op = await startTestOp({ users, proxyBaseUrl: `http://127.0.0.1:${ports.base}`, idpId: IDP_ID });
  stops.push(() => op.stop());
  const homeserver = await startHomeserverDouble({ masEndpoint: 'http://127.0.0.1:9/', secret: HOMESERVER_SECRET, serverName: SERVER_NAME });
  stops.push(() => homeserver.stop());
  // One store for both, as two replicas of one deployment: the first logins provision and bind the users once.
  const config = (tree: Tree) => proxyConfig({ homeserverUrl: homeserver.url, redisUrl: redis.url, keyPrefix: 'mcp-bench-compare-login:', op, clientPort: ports[tree] });
  const startBase = async () => {
    proxies.base = await ProxyChild.start({ name: 'compare-login-base', config: config('base'), entry: baseEntry });
  };
  const startThis = async () => {
    proxies.this = await ProxyChild.start({ name: 'compare-login-this', config: config('this') });
  };
  await Promise.all([reserved.base.release(), reserved.this.release()]);
  await startBaseAndThis(values['this-first'], startBase, startThis);
  const running = proxies as Record<Tree, ProxyChild>;

  const tokenEndpoint = await tokenEndpointOf(op);
  const login = (tree: Tree, user: TestOpUser): RequestShape => ({
    url: `${running[tree].clientUrl}/_matrix/client/v3/login`,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ type: 'm.login.password', identifier: { type: 'm.id.user', user: user.username }, password: user.password, initial_device_display_name: 'bench' }),
  });
  // Step i: the OP's grant, then both proxies, the first of them alternating (base first on even steps).
  const orderAt = (index: number): Tree[] => (index % 2 === 0 ? ['base', 'this'] : ['this', 'base']);
  const sequence = (count: number): { steps: RequestShape[]; labels: ('op' | Tree)[] } => {
    const steps: RequestShape[] = [];
    const labels: ('op' | Tree)[] = [];
    for (let index = 0; index < count; index++) {
      const user = users[index % users.length]!;
      steps.push(passwordGrantRequest(op, tokenEndpoint, user, SCOPES));
      labels.push('op');
      for (const tree of orderAt(index)) {
        steps.push(login(tree, user));
        labels.push(tree);
      }
    }
    return { steps, labels };
  };
  const run = async (count: number) => {
    const { steps, labels } = sequence(count);
    const result = await load.run({ kind: 'sequence', steps });
    for (const step of result.steps) if (step.status !== 200) throw new Error(`a login answered ${step.status}: ${step.body.slice(0, 200)}`);
    return result.steps.map((step, index) => ({ label: labels[index]!, ms: step.ms }));
  };

  progress(`compare-login: provisioning and warm-up (${USERS + warmUp} logins through each proxy)`);
  await run(USERS);
  await run(warmUp);
  const figures = new RoundFigures<Tree | 'op'>();
  for (let round = 0; round < rounds; round++) {
    const before = { base: running.base.cpuTimeMs(), this: running.this.cpuTimeMs() };
    const steps = await run(logins);
    for (const tree of ['base', 'this'] as const) {
      figures.add(tree, 'cpu', (running[tree].cpuTimeMs() - before[tree]) / logins);
      figures.add(tree, 'median', median(steps.filter((step) => step.label === tree).map((step) => step.ms)));
    }
    figures.add('op', 'median', median(steps.filter((step) => step.label === 'op').map((step) => step.ms)));
    const last = (key: Tree | 'op', figure: string) => (figures.rounds(key, figure).at(-1) as number).toFixed(3);
    progress(`compare-login: round ${round + 1}/${rounds}: CPU per login base ${last('base', 'cpu')} ms, this ${last('this', 'cpu')} ms; median base ${last('base', 'median')} ms, this ${last('this', 'median')} ms, OP ${last('op', 'median')} ms`);
  }
  const list = (key: Tree | 'op', figure: string) => figures.rounds(key, figure).map((value) => value.toFixed(2)).join(' ');
  const paired = (figure: string) => median(figures.rounds('this', figure).map((value, index) => value / (figures.rounds('base', figure)[index] as number)));
  const op50 = figures.median('op', 'median');
  process.stdout.write(`\npassword login, base ${baseRef} (${commit}) vs this tree, ${rounds} rounds of ${logins} interleaved logins each after ${warmUp} warm-up, load average ${(await import('node:os')).loadavg().map((value) => value.toFixed(2)).join(' ')}\n`);
  process.stdout.write(`CPU per login   base ${figures.median('base', 'cpu').toFixed(3)} ms [${list('base', 'cpu')}]  this ${figures.median('this', 'cpu').toFixed(3)} ms [${list('this', 'cpu')}]  paired median this/base ${paired('cpu').toFixed(3)}\n`);
  process.stdout.write(`median latency  base ${figures.median('base', 'median').toFixed(3)} ms [${list('base', 'median')}]  this ${figures.median('this', 'median').toFixed(3)} ms [${list('this', 'median')}]  paired median this/base ${paired('median').toFixed(3)}\n`);
  process.stdout.write(`OP's own grant  ${op50.toFixed(3)} ms [${list('op', 'median')}]; added median base +${(figures.median('base', 'median') - op50).toFixed(3)} ms, this +${(figures.median('this', 'median') - op50).toFixed(3)} ms\n`);
} finally {
  for (const proxy of Object.values(proxies)) await proxy.stop();
  for (const stop of stops.reverse()) await stop();
  await env.close();
}
process.exit(0);

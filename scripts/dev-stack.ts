// `npm run dev-stack`: real Synapse (cached virtualenv), a development OP (oidc-provider with demo users alice/bob)
// and the proxy with the in-memory store, all on loopback. Prints the URL and demo credentials; Ctrl-C stops all.
// `npm run dev-stack -- --homeserver synapse-appservice|dendrite`: the appservice mode (docs/homeservers.md) on
// Synapse without delegated auth, or on Dendrite (built into the cache by scripts/install-dendrite.sh on first use).
import { spawnSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import { writeRegistrations } from '../test/support/appservice-homeserver.js';
import { startDendrite } from '../test/support/dendrite.js';
import { buildDeps } from '../src/build-deps.js';
import { parseConfig } from '../src/config/load-config.js';
import { createLogger } from '../src/observability/logger.js';
import { createMetrics } from '../src/observability/metrics.js';
import { startProxy } from '../src/server.js';
import { MemoryStore } from '../src/store/memory-store.js';
import { freePort } from '../test/support/free-port.js';
import { startSynapse } from '../test/support/synapse.js';
import { startTestOp } from '../test/support/test-op.js';
import { testOpProviderBlock } from '../test/support/test-op-provider.js';

const SERVER_NAME = 'localhost';
const SECRET = 'dev-stack-shared-secret-0123456789';

type DevHomeserver = 'synapse' | 'synapse-appservice' | 'dendrite';

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { homeserver: { type: 'string', default: 'synapse' } } });
  const kind = values.homeserver as DevHomeserver;
  if (!['synapse', 'synapse-appservice', 'dendrite'].includes(kind)) throw new Error(`--homeserver must be synapse, synapse-appservice or dendrite (got ${kind})`);
  const proxyPort = await freePort();
  const facingPort = await freePort();
  const proxyUrl = `http://127.0.0.1:${proxyPort}`;
  process.stdout.write('dev-stack: starting the development OP...\n');
  const op = await startTestOp({ proxyBaseUrl: proxyUrl, idpId: 'dev' });

  let homeserver: { url: string; version: string; stop(): Promise<void> };
  let homeserverConfig: Record<string, unknown>;
  let cleanup = async () => {};
  if (kind === 'synapse') {
    process.stdout.write('dev-stack: starting Synapse (first run: `bash scripts/install-synapse.sh` installs it)...\n');
    // Synapse's public_baseurl is what it serves as m.homeserver.base_url at /.well-known/matrix/client (passed through
    // by the proxy): it must be the proxy, or a client that discovers the homeserver logs in at Synapse itself and
    // gets 404 M_UNRECOGNIZED (issue 18).
    homeserver = await startSynapse({ masEndpoint: `http://127.0.0.1:${facingPort}/`, masSecret: SECRET, serverName: SERVER_NAME, extraConfig: { public_baseurl: `${proxyUrl}/` } });
    homeserverConfig = { secret: SECRET, listen: { host: '127.0.0.1', port: facingPort } };
  } else {
    const registrations = await writeRegistrations(SERVER_NAME, { url: kind === 'dendrite' ? '' : null });
    cleanup = registrations.remove;
    const files = [registrations.proxy.path, registrations.bridge.path];
    if (kind === 'dendrite') {
      process.stdout.write('dev-stack: building Dendrite into the cache if needed (first run: about 4 minutes)...\n');
      const install = spawnSync('bash', ['scripts/install-dendrite.sh'], { stdio: ['ignore', 'ignore', 'inherit'] });
      if (install.status !== 0) throw new Error('scripts/install-dendrite.sh failed');
      homeserver = await startDendrite({ serverName: SERVER_NAME, appserviceConfigFiles: files });
    } else {
      homeserver = await startSynapse({ serverName: SERVER_NAME, extraConfig: { public_baseurl: `${proxyUrl}/`, app_service_config_files: files, enable_registration: false } });
    }
    homeserverConfig = { mode: 'appservice', flavour: kind === 'dendrite' ? 'dendrite' : 'synapse', appservice: { registration_file: registrations.proxy.path } };
  }

  const config = parseConfig(
    stringify({
      server_name: SERVER_NAME,
      public_baseurl: `${proxyUrl}/`,
      listen: { host: '127.0.0.1', port: proxyPort },
      homeserver: { url: homeserver.url, ...homeserverConfig },
      oidc_providers: [testOpProviderBlock(op, 'dev', 'Development OP')],
      password_login: { enabled: true, idp_id: 'dev' },
      sessions: { encryption_key: 'dev-stack-encryption-key-not-for-production-0123' },
      metrics: { enabled: false },
      log: { level: 'info' },
    }),
    { env: {} },
  );
  const store = new MemoryStore();
  const deps = await buildDeps(config, store, createLogger(config.log.level), createMetrics());
  const proxy = await startProxy(deps);

  process.stdout.write(
    [
      '',
      `matrix-compat-proxy dev stack is up (${kind === 'dendrite' ? 'Dendrite' : 'Synapse'} ${homeserver.version}, ${kind === 'synapse' ? 'delegated' : 'appservice'} mode).`,
      `  Homeserver URL for any Matrix client: ${proxy.clientUrl}`,
      `  Demo users (password login or SSO):   alice / ${op.users.alice.password}    bob / ${op.users.bob.password}`,
      `  OP (issuer):                          ${op.issuer}`,
      'Ctrl-C stops everything.',
      '',
    ].join('\n'),
  );

  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await proxy.stop(2000);
    await store.close();
    await homeserver.stop();
    await cleanup();
    await op.stop();
    process.exit(0);
  };
  process.once('SIGINT', () => void stop());
  process.once('SIGTERM', () => void stop());
}

main().catch((err: unknown) => {
  process.stderr.write(`dev-stack failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});

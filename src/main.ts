import cluster from 'node:cluster';
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { ConfigError } from './config/config-error.js';
import { loadConfigInThread } from './config/config-thread.js';
import type { Config } from './config/schema.js';
import { WORKER_READY } from './cluster-messages.js';

const USAGE = `Usage:
  matrix-compat-proxy --config FILE                 start the proxy
  matrix-compat-proxy --config FILE --check-config  validate the configuration and exit (0 = valid)
  matrix-compat-proxy admin COMMAND ...             call the admin API of a running proxy (admin --help)
  matrix-compat-proxy migrate synapse ...           import a Synapse's sessions and SSO links (migrate --help)
  matrix-compat-proxy doctor --config FILE [--json] check the config against the real OPs, homeserver and store
`;

/** Entry point: load config, build dependencies, listen, shut down gracefully on SIGTERM/SIGINT. */
export async function main(argv: readonly string[]): Promise<number> {
  if (argv[0] === 'admin') return (await import('./admin/admin-cli.js')).runAdminCli(argv.slice(1));
  if (argv[0] === 'migrate') return (await import('./migrate/migrate-cli.js')).runMigrateCli(argv.slice(1));
  if (argv[0] === 'doctor') return (await import('./doctor/doctor-cli.js')).runDoctorCli(argv.slice(1));
  let args;
  try {
    args = parseArgs({
      args: [...argv],
      options: { config: { type: 'string', short: 'c' }, 'check-config': { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
      strict: true,
    });
  } catch (err: unknown) {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n${USAGE}`);
    return 2;
  }
  if (args.values.help === true) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (args.values.config === undefined) {
    process.stderr.write(`--config FILE is required\n${USAGE}`);
    return 2;
  }

  // loadConfig runs every check start-up depends on (schema, secret and registration files, templates, OP rules), so
  // --check-config and a start refuse the same files with the same lines. It runs in a thread of its own, so that the
  // validation layer (zod, the schema, the YAML parser) does not stay loaded in a proxy that serves for months.
  let config: Config;
  try {
    config = await loadConfigInThread(args.values.config);
  } catch (err: unknown) {
    if (err instanceof ConfigError) return reportInvalid(args.values.config, err);
    throw err;
  }
  if (args.values['check-config'] === true) {
    process.stdout.write(`Configuration ${args.values.config} is valid.\n`);
    return 0;
  }

  // Several workers: this process stays the primary (it has run every start-up check above, so a refused config stops
  // here, before any fork) and each worker runs main() again with the same arguments, reaching runProxy below.
  const workers = config.workers === 'auto' ? availableParallelism() : config.workers;
  if (cluster.isPrimary && workers > 1) {
    const [{ runPrimary }, { createLogger }] = await Promise.all([import('./cluster.js'), import('./observability/logger.js')]);
    return runPrimary(workers, createLogger(config.log.level));
  }
  return runProxy(config, args.values.config);
}

/** Runs the proxy in this process (the only one, or one cluster worker) until SIGTERM/SIGINT. */
async function runProxy(config: Config, configPath: string): Promise<number> {
  // The rest of the proxy is loaded once the config is accepted: --check-config, and a start the config refuses, load
  // the config layer alone (half the time of loading everything).
  const [{ buildDeps }, { createLogger }, { createMetrics }, { startProxy }, { createStore, redisOptions }, { clusterMetricsSource }, { decideSessionFormat, describeSessionFormat }, { systemClock }] = await Promise.all([
    import('./build-deps.js'),
    import('./observability/logger.js'),
    import('./observability/metrics.js'),
    import('./server.js'),
    import('./store/index.js'),
    import('./observability/cluster-metrics.js'),
    import('./sessions/session-format.js'),
    import('./clock.js'),
  ]);
  const worker = cluster.worker;
  const rootLogger = createLogger(config.log.level);
  const logger = worker === undefined ? rootLogger : rootLogger.child({ worker: worker.id });
  const metrics = createMetrics(worker === undefined ? {} : { clusterText: clusterMetricsSource });
  const redis = redisOptions(config);
  if (redis === undefined) logger.warn('store.memory: no Redis configured; sessions live in this process only and are lost on restart');
  const store = await createStore({ ...(redis === undefined ? {} : { redis }) });
  const sessionFormat = await decideSessionFormat(config.store.session_format, store, systemClock, logger);
  logger.info({ event: 'sessions.format', format: sessionFormat.format, reason: sessionFormat.reason }, describeSessionFormat(sessionFormat));
  let deps;
  try {
    deps = await buildDeps(config, store, logger, metrics, { sessionFormat: sessionFormat.format });
  } catch (err: unknown) {
    // Only when a registration file changed between loading the config and reading it again.
    if (err instanceof ConfigError) {
      await store.close();
      return reportInvalid(configPath, err);
    }
    throw err;
  }
  for (const provider of config.oidc_providers) {
    if (provider.skip_verification) logger.warn({ idp_id: provider.idp_id }, 'oidc.skip_verification: ID token signatures are NOT checked for this provider; never use this in production');
  }
  const running = await startProxy(deps);
  logger.info({ client: running.clientUrl, homeserver_facing: running.homeserverFacingUrl, ops: running.opsUrl }, 'proxy.started');
  if (worker !== undefined) process.send?.(WORKER_READY);

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      logger.info({ signal }, 'proxy.stopping');
      void (async () => {
        try {
          await running.stop(10_000);
          await store.close();
          logger.info('proxy.stopped');
          resolve(0);
        } catch (err: unknown) {
          logger.error({ err }, 'proxy.stop_failed');
          resolve(1);
        }
      })();
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
    // A worker whose primary is gone (killed with SIGKILL) must not keep serving, unsupervised, on the shared ports.
    if (worker !== undefined) process.once('disconnect', () => stop('primary_gone'));
  });
}

function reportInvalid(path: string, err: ConfigError): number {
  process.stderr.write(`Configuration ${path} is invalid:\n${err.problems.map((p) => `  ${p}`).join('\n')}\n`);
  return 1;
}



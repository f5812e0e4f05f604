import { writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { systemClock } from '../clock.js';
import { ConfigError, loadConfig } from '../config/load-config.js';
import type { Config } from '../config/schema.js';
import { AppserviceRegistry } from '../identity/appservice-registry.js';
import { BindingStore } from '../identity/bindings.js';
import { deriveSessionKeys } from '../sessions/secret-box.js';
import { decideSessionFormat, previewSessionFormat } from '../sessions/session-format.js';
import { SessionStore } from '../sessions/session-store.js';
import { createStore, redisOptions } from '../store/index.js';
import type { RecordLogger } from '../store/record-format.js';
import { DatabaseUrlError, openSynapseDatabase, type SynapseRows } from './synapse-database.js';
import { progressLine, runImport, type ImportResult } from './synapse-import.js';
import { planMigration, SKIP_REASONS, type MigrationPlan } from './synapse-plan.js';
import { keycloakPartialImport, selectUsersToExport, usersCsv, type ExportFormat } from './user-export.js';

export const MIGRATE_USAGE = `Usage: matrix-compat-proxy migrate synapse --config FILE --database DSN [OPTIONS]

Imports a Synapse's live sessions (access and refresh tokens) and SSO links into the proxy's store, so nobody is
logged out when Synapse switches to the proxy (docs/migrating-from-synapse.md). Idempotent: run it again and it adds
only what is new. Stop Synapse first (a dry run may read a running Synapse).
  --config FILE          the proxy's configuration (its store, server_name, oidc_providers, appservice files)
  --database DSN         sqlite:///path/to/homeserver.db or postgres://user:password@host:port/synapse
  --dry-run              write nothing; print what would be imported, every skipped row and its reason
  --report FILE          also write the result as JSON
  --export-users FILE    write the users without an SSO link (password users) for the OP's import
  --format keycloak|csv  the export's format (keycloak: a partial-import JSON file)
  --include-password-hashes  put Synapse's bcrypt hashes in the export (see the runbook for what each target does)

Exit status: 0 done, 1 failed (config, database or store), 2 usage error.
`;

export interface MigrateIo {
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
  /** Whether stderr is a terminal: the progress line then rewrites itself. */
  readonly interactive: boolean;
}

const processIo: MigrateIo = {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
  interactive: process.stderr.isTTY === true,
};

class UsageError extends Error {}

interface Options {
  readonly configPath: string;
  readonly database: string;
  readonly dryRun: boolean;
  readonly reportPath?: string;
  readonly exportPath?: string;
  readonly format?: ExportFormat;
  readonly includePasswordHashes: boolean;
}

export async function runMigrateCli(argv: readonly string[], io: MigrateIo = processIo): Promise<number> {
  let options: Options;
  try {
    const parsed = parseOptions(argv);
    if (parsed === 'help') {
      io.stdout(MIGRATE_USAGE);
      return 0;
    }
    options = parsed;
  } catch (err: unknown) {
    if (err instanceof UsageError || (err instanceof TypeError && 'code' in err)) {
      io.stderr(`${err.message}\n${MIGRATE_USAGE}`);
      return 2;
    }
    throw err;
  }

  let config: Config;
  try {
    config = loadConfig(options.configPath);
  } catch (err: unknown) {
    if (!(err instanceof ConfigError)) throw err;
    io.stderr(`Configuration ${options.configPath} is invalid:\n${err.problems.map((p) => `  ${p}`).join('\n')}\n`);
    return 1;
  }
  const redis = redisOptions(config);
  if (redis === undefined && !options.dryRun) {
    io.stderr('The configuration has no Redis store (store.redis_url, sentinels or cluster_nodes): imported sessions would be lost when this command exits.\n');
    return 1;
  }

  let rows: SynapseRows;
  let engine: string;
  try {
    const database = await openSynapseDatabase(options.database);
    engine = database.engine;
    try {
      rows = await database.readAll();
    } finally {
      await database.close();
    }
  } catch (err: unknown) {
    io.stderr(`Cannot read the Synapse database: ${err instanceof DatabaseUrlError ? err.message : describe(err)}\n`);
    return 1;
  }

  const appservices = config.appservice_config_files.length === 0 ? AppserviceRegistry.empty() : await AppserviceRegistry.load(config.appservice_config_files);
  const isAppserviceLocalpart = (localpart: string) => appservices.ownsUser(`@${localpart}:${config.server_name}`, localpart);
  const providers = config.oidc_providers.map((provider) => ({ idpId: provider.idp_id, issuer: provider.issuer }));
  const clock = systemClock;
  const plan = planMigration(rows, { serverName: config.server_name, now: clock.now(), providers, isAppserviceLocalpart });

  const store = await createStore(redis === undefined ? {} : { redis });
  let result: ImportResult;
  try {
    const logger = stderrRecordLogger(io);
    const keys = deriveSessionKeys(config.sessions.encryption_key, config.sessions.previous_encryption_keys.map((entry) => entry.key));
    let lastLineLength = 0;
    // Imported sessions are written as the proxy writes sessions on this store (a real run on a fresh store decides it).
    const setting = config.store.session_format;
    const { format: writeFormat } = options.dryRun ? await previewSessionFormat(setting, store, logger) : await decideSessionFormat(setting, store, clock, logger);
    result = await runImport({ sessions: new SessionStore(store, clock, keys.tokenDerivationKeys, logger, { writeFormat }), bindings: new BindingStore(store, clock, logger), clock }, plan, {
      dryRun: options.dryRun,
      lifetimeMs: config.migration.imported_session_lifetime,
      serverName: config.server_name,
      providers,
      onProgress: (progress) => {
        const line = progressLine(progress);
        if (io.interactive) io.stderr(`\r${line.padEnd(lastLineLength)}`);
        else io.stderr(`${line}\n`);
        lastLineLength = line.length;
      },
    });
    if (io.interactive) io.stderr('\n');
  } catch (err: unknown) {
    io.stderr(`The import failed (run it again: it continues where it stopped): ${describe(err)}\n`);
    return 1;
  } finally {
    await store.close();
  }

  const report = reportOf(plan, result, { dryRun: options.dryRun, engine, lifetimeMs: config.migration.imported_session_lifetime });
  io.stdout(summaryText(report));
  if (options.reportPath !== undefined) await writeFile(options.reportPath, `${JSON.stringify(report, null, 2)}\n`);

  if (options.exportPath !== undefined && options.format !== undefined) {
    const linkedLocalparts = new Set(plan.bindings.map((binding) => binding.localpart));
    const exported = selectUsersToExport(rows, { serverName: config.server_name, linkedLocalparts, isAppserviceLocalpart, includePasswordHashes: options.includePasswordHashes });
    const text = options.format === 'keycloak' ? keycloakPartialImport(exported.users) : usersCsv(exported.users, options.includePasswordHashes);
    await writeFile(options.exportPath, text, { mode: 0o600 });
    const left = Object.entries(exported.skipped).map(([reason, count]) => `${reason} ${count}`).join(', ');
    io.stdout(`Exported ${exported.users.length} user(s) to ${options.exportPath} (${options.format}${options.includePasswordHashes ? ', with password hashes' : ''})${left === '' ? '' : `; left out: ${left}`}\n`);
    if (options.includePasswordHashes && options.format === 'keycloak') {
      io.stdout('Keycloak verifies these bcrypt hashes only with a bcrypt password-hash provider (id "bcrypt") installed; see docs/migrating-from-synapse.md.\n');
    }
  }
  return 0;
}

function parseOptions(argv: readonly string[]): Options | 'help' {
  const { values, positionals } = parseArgs({
    args: [...argv],
    options: {
      config: { type: 'string', short: 'c' },
      database: { type: 'string' },
      'dry-run': { type: 'boolean' },
      report: { type: 'string' },
      'export-users': { type: 'string' },
      format: { type: 'string' },
      'include-password-hashes': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    allowPositionals: true,
    strict: true,
  });
  if (values.help === true) return 'help';
  if (positionals[0] !== 'synapse' || positionals.length !== 1) throw new UsageError('migrate: the only source is "synapse" (migrate synapse ...)');
  if (values.config === undefined) throw new UsageError('--config FILE is required');
  if (values.database === undefined) throw new UsageError('--database DSN is required');
  const format = values.format;
  if (format !== undefined && format !== 'keycloak' && format !== 'csv') throw new UsageError('--format must be keycloak or csv');
  if ((values['export-users'] === undefined) !== (format === undefined)) throw new UsageError('--export-users FILE and --format go together');
  if (values['include-password-hashes'] === true && values['export-users'] === undefined) throw new UsageError('--include-password-hashes only applies to --export-users');
  return {
    configPath: values.config,
    database: values.database,
    dryRun: values['dry-run'] === true,
    ...(values.report === undefined ? {} : { reportPath: values.report }),
    ...(values['export-users'] === undefined ? {} : { exportPath: values['export-users'] }),
    ...(format === undefined ? {} : { format }),
    includePasswordHashes: values['include-password-hashes'] === true,
  };
}

export interface MigrationReport {
  readonly dry_run: boolean;
  readonly database: string;
  readonly imported_session_lifetime_ms: number;
  readonly rows: { readonly users: number; readonly access_tokens: number; readonly refresh_tokens: number; readonly user_external_ids: number; readonly devices: number };
  readonly sessions: { readonly imported: number; readonly already_imported: number; readonly with_op_subject: number };
  readonly bindings: { readonly created: number; readonly unchanged: number; readonly conflicts: readonly Record<string, unknown>[] };
  readonly skipped_by_reason: Readonly<Record<string, number>>;
  readonly skipped: readonly Record<string, unknown>[];
  readonly problems: readonly { readonly kind: string; readonly message: string }[];
  readonly elapsed_ms: number;
  readonly rows_per_second: number;
}

function reportOf(plan: MigrationPlan, result: ImportResult, context: { dryRun: boolean; engine: string; lifetimeMs: number }): MigrationReport {
  const byReason: Record<string, number> = Object.fromEntries(SKIP_REASONS.map((reason) => [reason, 0]));
  byReason['unknown_provider'] = 0;
  for (const row of plan.skipped) byReason[row.reason] = (byReason[row.reason] ?? 0) + 1;
  const done = result.sessions.imported + result.sessions.alreadyImported;
  return {
    dry_run: context.dryRun,
    database: context.engine,
    imported_session_lifetime_ms: context.lifetimeMs,
    rows: {
      users: plan.counts.users,
      access_tokens: plan.counts.accessTokens,
      refresh_tokens: plan.counts.refreshTokens,
      user_external_ids: plan.counts.externalIds,
      devices: plan.counts.devices,
    },
    sessions: { imported: result.sessions.imported, already_imported: result.sessions.alreadyImported, with_op_subject: result.sessions.withOpSubject },
    bindings: {
      created: result.bindings.created,
      unchanged: result.bindings.unchanged,
      conflicts: result.bindings.conflicts.map((conflict) => ({
        localpart: conflict.localpart ?? null,
        issuer: conflict.issuer ?? null,
        sub: conflict.sub ?? null,
        reason: conflict.problem,
        ...(conflict.existing === undefined ? {} : { existing: conflict.existing }),
      })),
    },
    skipped_by_reason: byReason,
    skipped: plan.skipped.map((row) => ({ table: row.table, row: row.row, user_id: row.userId, device_id: row.deviceId ?? null, reason: row.reason })),
    problems: plan.problems,
    elapsed_ms: result.elapsedMs,
    rows_per_second: result.elapsedMs > 0 ? Math.round((done * 1000) / result.elapsedMs) : done,
  };
}

function summaryText(report: MigrationReport): string {
  const verb = report.dry_run ? 'would import' : 'imported';
  const lines = [
    `${report.dry_run ? 'Dry run (nothing written)' : 'Migration'} from Synapse (${report.database}): ${report.rows.users} users, ${report.rows.access_tokens} access tokens, ${report.rows.refresh_tokens} refresh tokens, ${report.rows.user_external_ids} SSO links, ${report.rows.devices} devices`,
    `sessions: ${verb} ${report.sessions.imported}, already imported ${report.sessions.already_imported} (${report.sessions.with_op_subject} bound to an OP subject)`,
    `SSO links as bindings: ${report.dry_run ? 'would create' : 'created'} ${report.bindings.created}, unchanged ${report.bindings.unchanged}, conflicts ${report.bindings.conflicts.length}`,
    `skipped: ${Object.entries(report.skipped_by_reason).map(([reason, count]) => `${reason} ${count}`).join(', ')}`,
    ...report.skipped.map((row) => `  skipped ${String(row.table)} ${String(row.row)} of ${String(row.user_id)}${row.device_id === null ? '' : ` device ${String(row.device_id)}`}: ${String(row.reason)}`),
    ...report.bindings.conflicts.map((conflict) => `  binding conflict: ${String(conflict.localpart)} (${String(conflict.issuer)}, ${String(conflict.sub)}): ${String(conflict.reason)}`),
    ...report.problems.map((problem) => `problem: ${problem.message}`),
    `${report.elapsed_ms} ms, ${report.rows_per_second} rows/s`,
  ];
  return `${lines.join('\n')}\n`;
}

function stderrRecordLogger(io: MigrateIo): RecordLogger {
  return { warn: (fields, message) => io.stderr(`${message} ${JSON.stringify(fields)}\n`) };
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

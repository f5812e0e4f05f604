import type { Clock } from '../clock.js';
import { importBindings, type RowReport } from '../admin/binding-import.js';
import type { Binding, BindingStore } from '../identity/bindings.js';
import type { ImportedOrigin } from '../sessions/session.js';
import type { SessionStore } from '../sessions/session-store.js';
import type { MigrationPlan, PlannedSession } from './synapse-plan.js';

/**
 * Carries out a migration plan against the proxy's store (issue 14): SSO links first, as bindings (so the imported
 * sessions of a linked user carry its OP subject, and a back-channel logout of that subject ends them), then the
 * sessions. Idempotent: rows already imported are counted, never written again. A dry run reads the store (to count
 * what is already there) and writes nothing.
 */

export interface ImportOptions {
  readonly dryRun: boolean;
  readonly lifetimeMs: number;
  readonly serverName: string;
  readonly providers: readonly { readonly idpId: string; readonly issuer: string }[];
  /** Called about once a second and at the end, with the sessions done so far. */
  readonly onProgress?: (progress: Progress) => void;
  /** Sessions written at once (each is a few independent store writes). */
  readonly concurrency?: number;
}

export interface Progress {
  readonly done: number;
  readonly total: number;
  readonly elapsedMs: number;
}

export interface ImportResult {
  readonly sessions: { readonly imported: number; readonly alreadyImported: number; readonly withOpSubject: number };
  readonly bindings: { readonly created: number; readonly unchanged: number; readonly conflicts: readonly RowReport[] };
  readonly elapsedMs: number;
}

export async function runImport(
  deps: { readonly sessions: SessionStore; readonly bindings: BindingStore; readonly clock: Clock },
  plan: MigrationPlan,
  options: ImportOptions,
): Promise<ImportResult> {
  const started = deps.clock.now();
  const issuers = new Map(options.providers.map((provider) => [provider.issuer, provider.idpId]));
  const bindingReport = await importBindings(
    deps.bindings,
    plan.bindings.map((binding, index) => ({ line: index + 1, issuer: binding.issuer, sub: binding.sub, localpart: binding.localpart })),
    { dryRun: options.dryRun, idpIdOfIssuer: (issuer) => issuers.get(issuer), serverName: options.serverName },
  );

  // The subject each localpart is bound to now (an earlier binding, or one just imported); planned bindings stand in
  // for the store in a dry run, which wrote none.
  const planned = new Map(plan.bindings.map((binding) => [binding.localpart, binding]));
  const subjects = new Map<string, Promise<Pick<Binding, 'idpId' | 'issuer' | 'sub'> | undefined>>();
  const subjectOf = (localpart: string) => {
    let subject = subjects.get(localpart);
    if (subject === undefined) {
      subject = deps.bindings.findByLocalpart(localpart).then((binding) => binding ?? (options.dryRun ? planned.get(localpart) : undefined));
      subjects.set(localpart, subject);
    }
    return subject;
  };

  let imported = 0;
  let alreadyImported = 0;
  let withOpSubject = 0;
  let done = 0;
  let lastReport = started;
  const total = plan.sessions.length;
  const importOne = async (planned: PlannedSession): Promise<void> => {
    const subject = await subjectOf(planned.localpart);
    if (subject !== undefined) withOpSubject++;
    if (options.dryRun) {
      if (await deps.sessions.wasImported(planned.accessToken)) alreadyImported++;
      else imported++;
      return;
    }
    const now = deps.clock.now();
    const origin: ImportedOrigin = {
      kind: 'imported',
      importedAt: now,
      endsAt: now + options.lifetimeMs,
      ...(subject === undefined ? {} : { idpId: subject.idpId, issuer: subject.issuer, sub: subject.sub }),
    };
    const outcome = await deps.sessions.importSession({
      localpart: planned.localpart,
      deviceId: planned.deviceId,
      ...(planned.deviceDisplayName === undefined ? {} : { deviceDisplayName: planned.deviceDisplayName }),
      accessToken: planned.accessToken,
      ...(planned.accessExpiresAt === undefined ? {} : { accessExpiresAt: planned.accessExpiresAt }),
      ...(planned.refreshToken === undefined ? {} : { refreshToken: planned.refreshToken }),
      origin,
      ...(planned.lastSeenAt === undefined ? {} : { lastSeenAt: planned.lastSeenAt }),
      ...(planned.ip === undefined ? {} : { ip: planned.ip }),
      ...(planned.userAgent === undefined ? {} : { userAgent: planned.userAgent }),
    });
    if (outcome === 'imported') imported++;
    else alreadyImported++;
  };

  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < total) {
      const item = plan.sessions[next++];
      if (item === undefined) break;
      await importOne(item);
      done++;
      const now = deps.clock.now();
      if (options.onProgress !== undefined && now - lastReport >= 1000) {
        lastReport = now;
        options.onProgress({ done, total, elapsedMs: now - started });
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, options.concurrency ?? 64) }, worker));
  const elapsedMs = deps.clock.now() - started;
  options.onProgress?.({ done, total, elapsedMs });
  return {
    sessions: { imported, alreadyImported, withOpSubject },
    bindings: { created: bindingReport.created, unchanged: bindingReport.unchanged, conflicts: bindingReport.problems },
    elapsedMs,
  };
}

/** `1234/100000 sessions, 5120 rows/s, ETA 19s` */
export function progressLine(progress: Progress): string {
  const rate = progress.elapsedMs > 0 ? (progress.done * 1000) / progress.elapsedMs : 0;
  const left = progress.total - progress.done;
  const eta = rate > 0 ? `${Math.ceil(left / rate)}s` : '?';
  return `${progress.done}/${progress.total} sessions, ${Math.round(rate)} rows/s, ETA ${left === 0 ? '0s' : eta}`;
}

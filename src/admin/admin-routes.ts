import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { MatrixError } from '../errors/matrix-error.js';
import { readBodyText } from '../http/body.js';
import { matchesSecret } from '../security/shared-secret.js';
import { bearerTokenOf } from '../http/access-token.js';
import { paramOf, requestLog } from '../http/request-state.js';
import type { Binding } from '../identity/bindings.js';
import type { Session } from '../sessions/session.js';
import { ImportFormatError, importBindings, parseImport, type ImportReport } from './binding-import.js';

/** Under the proxy's own prefix (`OWN_PREFIX` in app.ts), versioned so the CLI and scripts can rely on it. */
export const ADMIN_PREFIX = '/_matrix-compat-proxy/admin/v1';

/** Binding imports are files of thousands of rows: a limit of its own, above the client API's. */
const IMPORT_BODY_LIMIT = 16 * 1024 * 1024;

/**
 * The admin API, for the non-public (homeserver-facing, else operators') listener only, authenticated with
 * `admin.token`. Without a configured token no route exists (routes.ts), so every admin path answers 404.
 */
export const adminEndpoints = [
  { method: 'GET', path: `${ADMIN_PREFIX}/users/:localpart/sessions`, handler: listUserSessions },
  { method: 'DELETE', path: `${ADMIN_PREFIX}/users/:localpart/sessions`, handler: endUserSessions },
  { method: 'DELETE', path: `${ADMIN_PREFIX}/sessions/:sessionId`, handler: endSession },
  { method: 'GET', path: `${ADMIN_PREFIX}/users/:localpart/binding`, handler: showBindingOfUser },
  { method: 'GET', path: `${ADMIN_PREFIX}/bindings/:issuer/:sub`, handler: showBinding },
  { method: 'DELETE', path: `${ADMIN_PREFIX}/bindings/:issuer/:sub`, handler: deleteBinding },
  { method: 'POST', path: `${ADMIN_PREFIX}/bindings/import`, handler: postBindingImport },
] as const satisfies readonly { method: string; path: string; handler: (ctx: Context, deps: AppDeps) => Promise<void> }[];

/** Every admin call: the admin token (constant-time), and answers that are never cached. */
export function requireAdminToken(ctx: Context, deps: AppDeps): void {
  const expectedDigest = deps.adminTokenDigest;
  if (expectedDigest === undefined) throw new MatrixError(404, 'M_UNRECOGNIZED', 'Unrecognized request');
  if (ctx.get('authorization') === '') throw new MatrixError(401, 'M_MISSING_TOKEN', 'Missing admin token', { headers: { 'WWW-Authenticate': 'Bearer' } });
  if (!matchesSecret(bearerTokenOf(ctx), expectedDigest)) {
    throw new MatrixError(401, 'M_UNKNOWN_TOKEN', 'Invalid admin token', { headers: { 'WWW-Authenticate': 'Bearer' } });
  }
  ctx.set('Cache-Control', 'no-store');
}

async function listUserSessions(ctx: Context, deps: AppDeps): Promise<void> {
  const localpart = requiredParam(ctx, 'localpart');
  const sessions = await sessionsOfUser(deps, localpart);
  sessions.sort((a, b) => a.createdAt - b.createdAt);
  ctx.body = { user_id: `@${localpart}:${deps.config.server_name}`, sessions: sessions.map(describeSession) };
}

async function endSession(ctx: Context, deps: AppDeps): Promise<void> {
  const ended = await deps.lifecycle.end(requiredParam(ctx, 'sessionId'), 'admin');
  if (ended === undefined) throw new MatrixError(404, 'M_NOT_FOUND', 'No such session');
  logAdmin(ctx, 'admin.session_ended', { session_id: ended.id, localpart: ended.localpart });
  ctx.body = { ended: [ended.id] };
}

async function endUserSessions(ctx: Context, deps: AppDeps): Promise<void> {
  const localpart = requiredParam(ctx, 'localpart');
  const ids = await deps.sessions.idsOfUser(localpart);
  const ended = await deps.lifecycle.endMany(ids, 'admin');
  logAdmin(ctx, 'admin.user_sessions_ended', { localpart, count: ended.length });
  ctx.body = { ended: ended.map((session) => session.id) };
}

async function showBinding(ctx: Context, deps: AppDeps): Promise<void> {
  const binding = await deps.bindings.find(requiredParam(ctx, 'issuer'), requiredParam(ctx, 'sub'));
  if (binding === undefined) throw new MatrixError(404, 'M_NOT_FOUND', 'No such binding');
  ctx.body = describeBinding(binding);
}

async function showBindingOfUser(ctx: Context, deps: AppDeps): Promise<void> {
  const binding = await deps.bindings.findByLocalpart(requiredParam(ctx, 'localpart'));
  if (binding === undefined) throw new MatrixError(404, 'M_NOT_FOUND', 'No binding for this user');
  ctx.body = describeBinding(binding);
}

/**
 * Removes the binding and ends the sessions the subject holds through it (no side path: a removed binding leaves
 * no live session). Sessions end before the binding goes, so a homeserver failure leaves the binding for a retry;
 * they are swept once more afterwards for a login that raced the removal.
 */
async function deleteBinding(ctx: Context, deps: AppDeps): Promise<void> {
  const issuer = requiredParam(ctx, 'issuer');
  const sub = requiredParam(ctx, 'sub');
  const binding = await deps.bindings.find(issuer, sub);
  if (binding === undefined) throw new MatrixError(404, 'M_NOT_FOUND', 'No such binding');
  const endBound = async () => {
    const sessions = (await sessionsOfUser(deps, binding.localpart)).filter((session) => session.origin.kind !== 'appservice' && session.origin.issuer === issuer);
    return deps.lifecycle.endMany(sessions.map((session) => session.id), 'admin');
  };
  const ended = await endBound();
  await deps.bindings.remove(issuer, sub);
  ended.push(...(await endBound()));
  logAdmin(ctx, 'admin.binding_deleted', { localpart: binding.localpart, idp_id: binding.idpId, sessions_ended: ended.length });
  ctx.body = { deleted: describeBinding(binding), ended: ended.map((session) => session.id) };
}

async function postBindingImport(ctx: Context, deps: AppDeps): Promise<void> {
  const dryRun = ['1', 'true', 'yes'].includes(String(ctx.query['dry_run'] ?? '').toLowerCase());
  const text = await readBodyText(ctx, { maxBytes: IMPORT_BODY_LIMIT, deadlineMs: deps.config.request_body_timeout });
  let parsed;
  try {
    parsed = parseImport(text, ctx.get('content-type').toLowerCase());
  } catch (err: unknown) {
    if (err instanceof ImportFormatError) throw new MatrixError(400, 'M_BAD_JSON', err.message);
    throw err;
  }
  const issuers = new Map(deps.config.oidc_providers.map((provider) => [provider.issuer, provider.idp_id]));
  const report = await importBindings(deps.bindings, parsed.rows, {
    dryRun,
    idpIdOfIssuer: (issuer) => issuers.get(issuer),
    serverName: deps.config.server_name,
  });
  logAdmin(ctx, 'admin.bindings_imported', { dry_run: dryRun, total: report.total, created: report.created, unchanged: report.unchanged, problems: report.problems.length });
  ctx.body = describeImport(report);
}

async function sessionsOfUser(deps: AppDeps, localpart: string): Promise<Session[]> {
  const ids = await deps.sessions.idsOfUser(localpart);
  const sessions = await Promise.all(ids.map((id) => deps.sessions.get(id)));
  return sessions.filter((session): session is Session => session !== undefined);
}

function describeSession(session: Session): Record<string, unknown> {
  const origin = session.origin;
  return {
    session_id: session.id,
    device_id: session.deviceId,
    device_display_name: session.deviceDisplayName ?? null,
    last_seen_user_agent: session.userAgent ?? null,
    last_seen_ip: session.ip ?? null,
    created_ts: session.createdAt,
    last_seen_ts: session.lastSeenAt,
    login_type: origin.kind,
    provider: origin.kind === 'appservice' ? null : (origin.idpId ?? null),
    appservice_id: origin.kind === 'appservice' ? origin.appserviceId : null,
    last_validated_ts: origin.kind === 'appservice' || origin.kind === 'imported' ? null : origin.lastValidatedAt,
    ...(origin.kind === 'imported' ? { imported_ts: origin.importedAt, ends_ts: origin.endsAt } : {}),
    refreshable: session.refresh !== undefined,
    soft_logged_out: session.softLoggedOut !== undefined,
  };
}

function describeBinding(binding: Binding): Record<string, unknown> {
  return {
    issuer: binding.issuer,
    sub: binding.sub,
    localpart: binding.localpart,
    idp_id: binding.idpId,
    created_ts: binding.createdAt,
    op_username: binding.opUsername ?? null,
  };
}

function describeImport(report: ImportReport): Record<string, unknown> {
  return {
    dry_run: report.dryRun,
    total: report.total,
    created: report.created,
    unchanged: report.unchanged,
    conflicts: report.problems.map((problem) => ({
      line: problem.line,
      issuer: problem.issuer ?? null,
      sub: problem.sub ?? null,
      localpart: problem.localpart ?? null,
      reason: problem.problem,
      ...(problem.existing === undefined ? {} : { existing: problem.existing }),
    })),
  };
}

/** A route parameter the admin API needs: empty → 400 naming it. */
function requiredParam(ctx: Context, name: string): string {
  const value = paramOf(ctx, name);
  if (value === '') throw new MatrixError(400, 'M_INVALID_PARAM', `Missing ${name}`);
  return value;
}

function logAdmin(ctx: Context, event: string, fields: Record<string, unknown>): void {
  requestLog(ctx)?.info({ event, ...fields }, event);
}

import type { AppPassword } from './app-passwords.js';
import { opOriginOf } from './session.js';
import type { SessionLifecycle } from './session-lifecycle.js';
import type { SessionStore } from './session-store.js';

/** Ends every session made with this app password (revocation); returns how many. */
export async function endAppPasswordSessions(deps: { sessions: SessionStore; lifecycle: SessionLifecycle }, appPassword: Pick<AppPassword, 'id' | 'localpart'>): Promise<number> {
  const ids: string[] = [];
  for (const id of await deps.sessions.idsOfUser(appPassword.localpart)) {
    const session = await deps.sessions.get(id);
    if (session !== undefined && opOriginOf(session)?.appPasswordId === appPassword.id) ids.push(id);
  }
  if (ids.length === 0) return 0;
  return (await deps.lifecycle.endMany(ids, 'app_password_revoked')).length;
}

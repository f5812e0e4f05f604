import type { IncomingMessage } from 'node:http';
import { matrixErrors, type MatrixError } from '../errors/matrix-error.js';
import { revalidateIfDue, revalidationDueAt, type RevalidationDeps } from '../sessions/revalidation.js';
import { hasValidChecksum, looksLikeOurToken, uncheckedTokenParts } from '../sessions/tokens.js';
import { accessTokenOfRequest } from '../http/access-token.js';

/** Sessions whose next check time this replica remembers; beyond it the oldest entries are forgotten. */
const MAX_REMEMBERED = 10_000;

/**
 * Re-validation on the client's way in (issue 7). Synapse keeps every introspection answer for 2 minutes and drops
 * one early only when the token's device is gone (synapse/api/auth/mas.py, `_introspection_cache`), so a check that
 * ran only at introspection let a token outlive a user disabled at the OP by up to those 2 minutes, whatever
 * `sessions.revalidate_interval` said. Every client request passes the proxy first: a session due for re-validation
 * is checked before the request is forwarded, and a session the OP refused has ended (device deleted) by then.
 *
 * Returns `undefined` synchronously when nothing is due (the common case: no I/O, no await), else a promise of the
 * error to answer instead of forwarding (`undefined`: forward).
 */
export function createRevalidationGate(deps: RevalidationDeps): (req: IncomingMessage) => Promise<MatrixError | undefined> | undefined {
  // session id → when this replica next needs to look at the session. Another replica's check only moves the true
  // time later, so a remembered time is never too late.
  const nextCheckAt = new Map<string, number>();
  const remember = (sessionId: string, at: number) => {
    nextCheckAt.delete(sessionId);
    if (nextCheckAt.size >= MAX_REMEMBERED) {
      const oldest = nextCheckAt.keys().next().value;
      if (oldest !== undefined) nextCheckAt.delete(oldest);
    }
    nextCheckAt.set(sessionId, at);
  };

  return function revalidateBeforeForwarding(req) {
    const token = accessTokenOfRequest(req);
    if (token === undefined || !looksLikeOurToken(token)) return undefined;
    const parsed = uncheckedTokenParts(token);
    if (parsed?.kind !== 'access') return undefined;
    const remembered = nextCheckAt.get(parsed.sessionId);
    if (remembered !== undefined && deps.clock.now() < remembered) return undefined;
    // The checksum only before the store is read: a mistyped or forged token is forwarded unread, as it always was
    // (a remembered time above forwards it unread too), and the CRC32 is not computed for every request.
    if (!hasValidChecksum(token)) return undefined;
    return check(parsed.sessionId, token);
  };

  async function check(sessionId: string, token: string): Promise<MatrixError | undefined> {
    const result = await deps.sessions.authenticate(token);
    // Unknown or expired tokens are Synapse's to refuse (through introspection), with its own error body.
    if (!result.ok) return undefined;
    const dueAt = revalidationDueAt(deps, result.session);
    if (dueAt === undefined) {
      remember(sessionId, Number.POSITIVE_INFINITY);
      return undefined;
    }
    if (deps.clock.now() < dueAt) {
      remember(sessionId, dueAt);
      return undefined;
    }
    const outcome = await revalidateIfDue(deps, result.session);
    switch (outcome) {
      case 'revalidated':
        remember(sessionId, deps.clock.now() + deps.config.sessions.revalidate_interval);
        return undefined;
      case 'fresh':
      case 'grace':
        // Checked elsewhere just now, or the OP is down and backing off: the next request reads the session again.
        return undefined;
      case 'ended':
        nextCheckAt.delete(sessionId);
        // The device is gone at the homeserver too; answering here also covers a failed deletion.
        return matrixErrors.unknownToken(false);
      case 'unavailable':
        return matrixErrors.unavailable('The identity provider');
    }
  }
}

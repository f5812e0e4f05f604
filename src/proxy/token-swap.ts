import type { IncomingMessage } from 'node:http';
import { matrixErrors, MatrixError } from '../errors/matrix-error.js';
import { bearerTokenOfHeader } from '../http/access-token.js';
import type { Clock } from '../clock.js';
import type { SessionKeys } from '../sessions/secret-box.js';
import type { SessionStore } from '../sessions/session-store.js';
import { looksLikeOurToken } from '../sessions/tokens.js';
import { matchesSecret } from '../security/shared-secret.js';

export interface TokenSwapDeps {
  readonly sessions: SessionStore;
  readonly keys: SessionKeys;
  readonly clock: Clock;
  /** How long an entry serves without reading the store (`homeserver.token_cache_ttl`). */
  readonly cacheTtlMs: number;
  /** The proxy's own as_token (appservice mode): refused from clients. */
  readonly ownAsTokenDigest: Buffer | undefined;
  readonly onSwap?: (outcome: 'hit' | 'miss' | 'refused') => void;
}

/** Entries beyond this are dropped oldest first; each is a few hundred bytes. */
const MAX_ENTRIES = 50_000;

interface Entry {
  readonly homeserverToken: string;
  readonly sessionId: string;
  readonly accessExpiresAt: number | undefined;
  readonly cachedUntil: number;
}

/**
 * Where the homeserver issues its own tokens (appservice and JWT login), the client holds only the proxy's token and
 * this swaps it for the session's homeserver token on every passed-through request: in the Authorization header and
 * in the deprecated `access_token` query parameter. The homeserver token never goes back to the client.
 *
 * Cost: a hit is one Map lookup and a header rewrite; a miss reads the session (one store round trip) and opens the
 * sealed token (AES-GCM). Staleness: an ended session's homeserver token is logged out AT THE HOMESERVER before the
 * session is removed (SessionLifecycle.end), so a stale entry on another replica leads to the homeserver's own 401 at
 * once; the TTL only bounds what ends without a homeserver logout (soft logout, a device taken over by a new login),
 * and this replica drops its entry at once for those too (SessionStore.onChange).
 *
 * Returns undefined: forward the (rewritten) request; a MatrixError: answer it instead; a promise of either on a miss.
 */
export function createTokenSwap(deps: TokenSwapDeps): (req: IncomingMessage) => MatrixError | undefined | Promise<MatrixError | undefined> {
  const cache = new Map<string, Entry>();
  const tokensOfSession = new Map<string, Set<string>>();
  const drop = (token: string) => {
    const entry = cache.get(token);
    if (entry === undefined) return;
    cache.delete(token);
    const tokens = tokensOfSession.get(entry.sessionId);
    tokens?.delete(token);
    if (tokens?.size === 0) tokensOfSession.delete(entry.sessionId);
  };
  deps.sessions.onChange((sessionId) => {
    for (const token of tokensOfSession.get(sessionId) ?? []) drop(token);
  });
  const remember = (token: string, entry: Entry) => {
    if (cache.size >= MAX_ENTRIES) {
      const oldest = cache.keys().next().value;
      if (oldest !== undefined) drop(oldest);
    }
    cache.set(token, entry);
    let tokens = tokensOfSession.get(entry.sessionId);
    if (tokens === undefined) tokensOfSession.set(entry.sessionId, (tokens = new Set()));
    tokens.add(token);
  };

  return function swapToken(req) {
    const fromHeader = req.headers.authorization === undefined ? undefined : bearerTokenOfHeader(req.headers.authorization);
    const fromQuery = queryToken(req.url ?? '');
    const token = fromHeader ?? fromQuery;
    if (token === undefined) return undefined;
    if (!looksLikeOurToken(token)) {
      // Bridges and native homeserver tokens pass untouched; the proxy's own appservice token never does.
      if (deps.ownAsTokenDigest !== undefined && (matchesSecret(fromHeader, deps.ownAsTokenDigest) || matchesSecret(fromQuery, deps.ownAsTokenDigest))) {
        deps.onSwap?.('refused');
        return new MatrixError(403, 'M_FORBIDDEN', 'This token cannot be used here');
      }
      return undefined;
    }
    const now = deps.clock.now();
    const entry = cache.get(token);
    if (entry !== undefined && now < entry.cachedUntil) {
      if (entry.accessExpiresAt !== undefined && entry.accessExpiresAt <= now) return matrixErrors.unknownToken(true);
      deps.onSwap?.('hit');
      rewrite(req, token, entry.homeserverToken);
      return undefined;
    }
    if (entry !== undefined) drop(token);
    return lookUp(req, token);
  };

  async function lookUp(req: IncomingMessage, token: string): Promise<MatrixError | undefined> {
    deps.onSwap?.('miss');
    const result = await deps.sessions.authenticate(token);
    if (!result.ok) return matrixErrors.unknownToken(result.reason === 'expired');
    const session = result.session;
    if (session.softLoggedOut !== undefined) return matrixErrors.unknownToken(true);
    // A session made before the switch from delegated mode has no homeserver token: it cannot be served any more.
    if (session.homeserverToken === undefined) return matrixErrors.unknownToken(false);
    const sealed = session.homeserverToken;
    const homeserverToken = deps.keys.open(sealed);
    // Sealed before a key rotation (sessions.previous_encryption_keys): sealed again with the current key, once, so
    // the old key can be retired while the session lives on. Like touch, before the entry is kept (onChange).
    if (!deps.keys.sealedWithCurrentKey(sealed)) {
      await deps.sessions.update(session.id, (current) => (current.homeserverToken === sealed ? { ...current, homeserverToken: deps.keys.seal(homeserverToken) } : current));
    }
    // First use of a rotated pair retires the previous refresh token; last-seen at most once a minute. Before the
    // entry is kept: a write here tells onChange, which would drop it again.
    await deps.sessions.touch(session);
    remember(token, { homeserverToken, sessionId: session.id, accessExpiresAt: session.accessExpiresAt, cachedUntil: deps.clock.now() + deps.cacheTtlMs });
    rewrite(req, token, homeserverToken);
    return undefined;
  }
}

function queryToken(url: string): string | undefined {
  const queryStart = url.indexOf('?');
  if (queryStart < 0 || !url.includes('access_token=', queryStart)) return undefined;
  const token = new URLSearchParams(url.slice(queryStart + 1)).get('access_token');
  return token === null || token === '' ? undefined : token;
}

/** Puts the homeserver token where the client put ours: the header, the query parameter, or both. */
function rewrite(req: IncomingMessage, ours: string, theirs: string): void {
  const header = req.headers.authorization;
  if (header !== undefined && bearerTokenOfHeader(header) === ours) req.headers.authorization = `Bearer ${theirs}`;
  const url = req.url ?? '';
  const queryStart = url.indexOf('?');
  if (queryStart < 0 || !url.includes('access_token=', queryStart)) return;
  // Only the parameter is rebuilt; the path and every other parameter keep their exact bytes.
  const parts = url.slice(queryStart + 1).split('&').map((part) => {
    if (!part.startsWith('access_token=')) return part;
    let value: string;
    try {
      value = decodeURIComponent(part.slice('access_token='.length).replace(/\+/g, ' '));
    } catch {
      return part;
    }
    return value === ours ? `access_token=${encodeURIComponent(theirs)}` : part;
  });
  req.url = `${url.slice(0, queryStart)}?${parts.join('&')}`;
}

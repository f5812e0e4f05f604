import { isFields, isNumber, isOptional, isString, isStringArray, type Fields } from '../store/record-format.js';
import type { ImportedOrigin, RefreshFamily, Session, SessionOrigin } from './session.js';

/**
 * Session record version 4, the compact form (issue 19: at most 1 KB of Redis per session). The same value as the
 * JSON versions 0–3 in about 70 % of the bytes:
 * - no id (it is in the key: decoding needs the id the record was read under);
 * - short field names; times after `c` (createdAt) as offsets from it;
 * - the origin flattened, its kind one letter, absent for password (the most common);
 * - the refresh family as `[generation, currentHash, previousHash or 0, successorUnused 0|1, ...retiredHashes]`.
 *
 *   v 4 · l localpart · d deviceId · n deviceDisplayName · oc oauthClientId · c createdAt · s lastSeenAt−c · a ip
 *   ua userAgent · h accessTokenHash · e accessExpiresAt−c · f refresh · x softLoggedOut.at−c (the reason is
 *   backchannel_logout, the only one) · ht homeserverToken (sealed)
 *   k origin kind: absent password, s sso, t token, a appservice, i imported
 *     OP logins: p idpId · is issuer · u sub · o sid · r sealedOpRefreshToken · ap appPasswordId · lv lastValidatedAt−c
 *     appservice: as appserviceId
 *     imported: ia importedAt−c · en endsAt−c · p, is, u when the user had an SSO link
 *   ox fields of the origin this version does not know; unknown session fields stay under their own names
 *
 * A release before this version reads it as an unknown version (a miss, then a logout): it is written only where
 * `store.session_format` says every replica reads it (see session-format.ts).
 */
export const COMPACT_SESSION_VERSION = 4;

const KIND_LETTER = { password: undefined, sso: 's', token: 't', appservice: 'a', imported: 'i' } as const;
const SESSION_FIELDS = new Set(['id', 'localpart', 'deviceId', 'deviceDisplayName', 'oauthClientId', 'origin', 'createdAt', 'lastSeenAt', 'ip', 'userAgent', 'accessTokenHash', 'accessExpiresAt', 'refresh', 'softLoggedOut', 'homeserverToken']);
const ORIGIN_FIELDS = new Set(['kind', 'idpId', 'issuer', 'sub', 'sid', 'sealedOpRefreshToken', 'appPasswordId', 'lastValidatedAt', 'appserviceId', 'importedAt', 'endsAt']);
const COMPACT_FIELDS = new Set(['v', 'l', 'd', 'n', 'oc', 'k', 'p', 'is', 'u', 'o', 'r', 'ap', 'lv', 'as', 'ia', 'en', 'ox', 'c', 's', 'a', 'ua', 'h', 'e', 'f', 'x', 'ht']);

export function encodeCompactSession(session: Session): string {
  const c = session.createdAt;
  const origin = session.origin;
  const out: Record<string, unknown> = { v: COMPACT_SESSION_VERSION, l: session.localpart, d: session.deviceId };
  if (session.deviceDisplayName !== undefined) out['n'] = session.deviceDisplayName;
  if (session.oauthClientId !== undefined) out['oc'] = session.oauthClientId;
  const letter = KIND_LETTER[origin.kind];
  if (letter !== undefined) out['k'] = letter;
  switch (origin.kind) {
    case 'appservice':
      out['as'] = origin.appserviceId;
      break;
    case 'imported':
      out['ia'] = origin.importedAt - c;
      out['en'] = origin.endsAt - c;
      if (origin.idpId !== undefined) out['p'] = origin.idpId;
      if (origin.issuer !== undefined) out['is'] = origin.issuer;
      if (origin.sub !== undefined) out['u'] = origin.sub;
      break;
    default:
      out['p'] = origin.idpId;
      out['is'] = origin.issuer;
      out['u'] = origin.sub;
      if (origin.sid !== undefined) out['o'] = origin.sid;
      if (origin.sealedOpRefreshToken !== undefined) out['r'] = origin.sealedOpRefreshToken;
      if (origin.appPasswordId !== undefined) out['ap'] = origin.appPasswordId;
      out['lv'] = origin.lastValidatedAt - c;
  }
  const originExtra = Object.entries(origin).filter(([key]) => !ORIGIN_FIELDS.has(key));
  if (originExtra.length > 0) out['ox'] = Object.fromEntries(originExtra);
  out['c'] = c;
  out['s'] = session.lastSeenAt - c;
  if (session.ip !== undefined) out['a'] = session.ip;
  if (session.userAgent !== undefined) out['ua'] = session.userAgent;
  out['h'] = session.accessTokenHash;
  if (session.accessExpiresAt !== undefined) out['e'] = session.accessExpiresAt - c;
  const family = session.refresh;
  if (family !== undefined) out['f'] = [family.generation, family.currentHash, family.previousHash ?? 0, family.successorUnused ? 1 : 0, ...family.retiredHashes];
  if (session.softLoggedOut !== undefined) out['x'] = session.softLoggedOut.at - c;
  if (session.homeserverToken !== undefined) out['ht'] = session.homeserverToken;
  // A newer release's optional additions, carried through a rewrite by this one (record-format.ts).
  for (const [key, value] of Object.entries(session)) if (!SESSION_FIELDS.has(key) && !COMPACT_FIELDS.has(key)) out[key] = value;
  return JSON.stringify(out);
}

/** The session a version-4 record holds (its `v` already checked), or undefined when a field has the wrong type. */
export function decodeCompactSession(f: Fields, id: string): Session | undefined {
  const c = f['c'];
  if (!isNumber(c) || !isString(f['l']) || !isString(f['d']) || !isString(f['h']) || !isNumber(f['s'])) return undefined;
  for (const name of ['n', 'oc', 'a', 'ua', 'ht'] as const) if (!isOptional(f[name], isString)) return undefined;
  for (const name of ['e', 'x'] as const) if (!isOptional(f[name], isNumber)) return undefined;
  const originExtra = f['ox'];
  if (!isOptional(originExtra, isFields)) return undefined;
  const origin = decodeOrigin(f, c, (originExtra ?? {}) as Fields);
  if (origin === undefined) return undefined;
  let refresh: RefreshFamily | undefined;
  if (f['f'] !== undefined) {
    refresh = decodeFamily(f['f']);
    if (refresh === undefined) return undefined;
  }
  // Built field by field in the order the spreads of the JSON versions' decoder give (a newer release's fields first,
  // then the known ones; a known name among them keeps its place and takes the known value), without the temporary
  // objects of `...(cond ? {} : {...})` and Object.entries: every introspection decodes one record (issue 19).
  const session: Record<string, unknown> = {};
  for (const key in f) {
    if (!Object.hasOwn(f, key) || COMPACT_FIELDS.has(key)) continue;
    // An own "__proto__" (JSON.parse makes one) stays a field, as Object.fromEntries and a spread keep it.
    if (key === '__proto__') Object.defineProperty(session, key, { value: f[key], writable: true, enumerable: true, configurable: true });
    else session[key] = f[key];
  }
  session['id'] = id;
  session['localpart'] = f['l'];
  session['deviceId'] = f['d'];
  if (f['n'] !== undefined) session['deviceDisplayName'] = f['n'];
  session['origin'] = origin;
  if (f['oc'] !== undefined) session['oauthClientId'] = f['oc'];
  session['createdAt'] = c;
  session['lastSeenAt'] = c + f['s'];
  if (f['a'] !== undefined) session['ip'] = f['a'];
  if (f['ua'] !== undefined) session['userAgent'] = f['ua'];
  session['accessTokenHash'] = f['h'];
  if (f['e'] !== undefined) session['accessExpiresAt'] = c + (f['e'] as number);
  if (refresh !== undefined) session['refresh'] = refresh;
  if (f['ht'] !== undefined) session['homeserverToken'] = f['ht'];
  if (f['x'] !== undefined) session['softLoggedOut'] = { at: c + (f['x'] as number), reason: 'backchannel_logout' };
  return session as unknown as Session;
}

function decodeOrigin(f: Fields, c: number, extra: Fields): SessionOrigin | undefined {
  const [idpId, issuer, sub] = [f['p'], f['is'], f['u']];
  switch (f['k']) {
    case 'a':
      return isString(f['as']) ? { ...extra, kind: 'appservice', appserviceId: f['as'] } : undefined;
    case 'i': {
      const [importedAt, endsAt] = [f['ia'], f['en']];
      if (!isNumber(importedAt) || !isNumber(endsAt) || !isOptional(idpId, isString) || !isOptional(issuer, isString) || !isOptional(sub, isString)) return undefined;
      const imported: ImportedOrigin = {
        ...extra,
        kind: 'imported',
        importedAt: c + importedAt,
        endsAt: c + endsAt,
        ...(idpId === undefined ? {} : { idpId: idpId as string }),
        ...(issuer === undefined ? {} : { issuer: issuer as string }),
        ...(sub === undefined ? {} : { sub: sub as string }),
      };
      return imported;
    }
    case undefined:
    case 's':
    case 't': {
      const kind = f['k'] === 's' ? 'sso' : f['k'] === 't' ? 'token' : 'password';
      const [sid, sealed, appPasswordId, lv] = [f['o'], f['r'], f['ap'], f['lv']];
      if (!isString(idpId) || !isString(issuer) || !isString(sub) || !isNumber(lv)) return undefined;
      if (!isOptional(sid, isString) || !isOptional(sealed, isString) || !isOptional(appPasswordId, isString)) return undefined;
      return {
        ...extra,
        kind,
        idpId,
        issuer,
        sub,
        ...(sid === undefined ? {} : { sid: sid as string }),
        ...(sealed === undefined ? {} : { sealedOpRefreshToken: sealed as string }),
        ...(appPasswordId === undefined ? {} : { appPasswordId: appPasswordId as string }),
        lastValidatedAt: c + lv,
      };
    }
    default:
      return undefined;
  }
}

function decodeFamily(value: unknown): RefreshFamily | undefined {
  if (!Array.isArray(value) || value.length < 4) return undefined;
  const [generation, currentHash, previousHash, successorUnused, ...retiredHashes] = value as unknown[];
  if (!Number.isSafeInteger(generation) || !isString(currentHash) || !(previousHash === 0 || isString(previousHash))) return undefined;
  if (!(successorUnused === 0 || successorUnused === 1) || !isStringArray(retiredHashes)) return undefined;
  return {
    generation: generation as number,
    currentHash,
    ...(previousHash === 0 ? {} : { previousHash: previousHash as string }),
    successorUnused: successorUnused === 1,
    retiredHashes,
  };
}

import type { AppDeps } from '../app-deps.js';
import { HomeserverError } from '../provisioning/homeserver-adapter.js';
import { resolveAccount, type ProviderPolicy } from '../identity/account-resolver.js';
import { provisionUser } from '../identity/account-provisioning.js';
import { MappingError } from '../identity/user-mapping.js';
import { UpstreamError, type UpstreamProvider } from '../oidc/upstream.js';
import { API_SCOPES, DEVICE_SCOPE_PREFIXES, INACTIVE, IntrospectionUnavailable } from './introspection-answer.js';
import { primaryProvider } from './metadata.js';
import { isSafeDeviceId } from '../sessions/device-id.js';

/**
 * The native-token relay (staged rollout): a token the proxy did not issue belongs to a native OIDC client and is
 * introspected at the OP; its subject is mapped to a Matrix user (bindings, templates) and its device created at
 * the homeserver on first sight.
 */

/** A short-lived, size-bounded memo of OP answers, so a busy homeserver does not hammer the OP. */
class OpIntrospectionCache {
  private readonly entries = new Map<string, { expiresAt: number; value: Record<string, unknown> }>();
  constructor(
    private readonly ttlMs: number,
    private readonly maxEntries: number,
  ) {}
  get(token: string, now: number): Record<string, unknown> | undefined {
    const entry = this.entries.get(token);
    if (entry === undefined) return undefined;
    if (entry.expiresAt <= now) {
      this.entries.delete(token);
      return undefined;
    }
    return entry.value;
  }
  set(token: string, value: Record<string, unknown>, now: number, notAfter?: number): void {
    if (this.entries.size >= this.maxEntries) {
      const oldest = this.entries.keys().next().value;
      if (oldest !== undefined) this.entries.delete(oldest);
    }
    this.entries.set(token, { expiresAt: Math.min(now + this.ttlMs, notAfter ?? Number.POSITIVE_INFINITY), value });
  }

  /** OP introspections under way, by token. */
  private readonly running = new Map<string, Promise<Record<string, unknown>>>();

  /** `ask` for a token no other request is asking about; otherwise that request's answer. */
  shared(token: string, ask: () => Promise<Record<string, unknown>>): Promise<Record<string, unknown>> {
    const running = this.running.get(token);
    if (running !== undefined) return running;
    const call = ask().finally(() => this.running.delete(token));
    this.running.set(token, call);
    return call;
  }
}

const caches = new WeakMap<AppDeps, OpIntrospectionCache>();

function cacheOf(deps: AppDeps): OpIntrospectionCache {
  let cache = caches.get(deps);
  if (cache === undefined) {
    cache = new OpIntrospectionCache(deps.config.homeserver.introspection_cache_ttl, 10_000);
    caches.set(deps, cache);
  }
  return cache;
}

const PLAUSIBLE_TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;
const MAX_PLAUSIBLE_TOKEN_LENGTH = 8192;

export async function introspectAtOp(deps: AppDeps, token: string): Promise<Record<string, unknown>> {
  const provider = primaryProvider(deps);
  if (provider === undefined) return INACTIVE;
  const policy = deps.policies.get(provider.idpId);
  if (policy === undefined) return INACTIVE;
  const cache = cacheOf(deps);
  const now = deps.clock.now();
  const cached = cache.get(token, now);
  if (cached !== undefined) return withExpiresIn(cached, now);

  // Only a token an OP could have issued is worth a call (RFC 6750 §2.1 b64token, bounded length); the rest of the
  // unknown tokens share one budget, so random bearer tokens cannot turn into a flood at the OP (issue 12 #7).
  if (token.length > MAX_PLAUSIBLE_TOKEN_LENGTH || !PLAUSIBLE_TOKEN.test(token)) return INACTIVE;

  // Synapse asks about a busy token from many requests at once; when its cached answer expires, they would each
  // call the OP (and each spend the shared budget above, refusing the rest with 503s): the first one asks, the
  // others wait for its answer.
  return cache.shared(token, () => relayToOp(deps, provider, policy, cache, token, now));
}

/** One OP introspection of a token no cached answer covers: budget, OP, account and device, then the cache. */
async function relayToOp(deps: AppDeps, provider: UpstreamProvider, policy: ProviderPolicy, cache: OpIntrospectionCache, token: string, now: number): Promise<Record<string, unknown>> {
  const budget = deps.config.rate_limits.op_introspection;
  const allowed = await deps.store.takeToken('rate:op-introspection', { burst: budget.burst, perSecond: budget.per_second }, now).catch((err: unknown) => {
    throw new IntrospectionUnavailable('The store is unavailable', err);
  });
  if (!allowed.allowed) {
    deps.metrics.introspectionBudgetSpent.inc();
    throw new IntrospectionUnavailable('Too many introspections of unknown tokens; try again shortly', undefined);
  }

  let answer;
  try {
    answer = await provider.introspect(token);
  } catch (err: unknown) {
    if (err instanceof UpstreamError && err.kind === 'unsupported') return INACTIVE;
    throw new IntrospectionUnavailable('The identity provider could not introspect the token', err);
  }
  if (!answer.active || answer.sub === undefined) {
    cache.set(token, INACTIVE, now);
    return INACTIVE;
  }
  if (!(await isAccessToken(provider, token, answer.claims))) {
    // OPs answer active:true for their refresh tokens too (Keycloak: typ "Refresh"; oidc-provider: no token_type),
    // with the grant's scope: such a token must never pass as an access token.
    cache.set(token, INACTIVE, now);
    return INACTIVE;
  }
  const scopes = (answer.scope ?? '').split(' ').filter((s) => s !== '');
  if (!scopes.some((scope) => API_SCOPES.includes(scope))) {
    cache.set(token, INACTIVE, now);
    return INACTIVE;
  }
  const deviceIds = new Set(
    scopes.flatMap((scope) => DEVICE_SCOPE_PREFIXES.filter((prefix) => scope.startsWith(prefix)).map((prefix) => scope.slice(prefix.length))),
  );
  const [deviceId] = [...deviceIds];
  // Synapse needs exactly one device for a client-server token; the OP's scope is as untrusted as a login body.
  if (deviceIds.size !== 1 || deviceId === undefined || !isSafeDeviceId(deviceId)) {
    cache.set(token, INACTIVE, now);
    return INACTIVE;
  }

  let localpart: string;
  try {
    // Introspection answers rarely carry profile claims; on first sight of a subject, ask userinfo with the
    // client's own token so the mapping templates see the same claims as at login.
    let claims: Record<string, unknown> = { ...answer.claims, sub: answer.sub };
    if ((await deps.bindings.find(policy.issuer, answer.sub)) === undefined) {
      claims = { ...claims, ...(await userinfoOrEmpty(deps, provider, token, answer.sub)) };
    }
    const account = await resolveAccount(policy, { sub: answer.sub, claims }, deps);
    if (!account.ok) {
      deps.logger.info({ reason: account.reason, idp_id: provider.idpId }, 'introspection.refused');
      cache.set(token, INACTIVE, now);
      return INACTIVE;
    }
    localpart = account.localpart;
    if (account.firstLogin) await provisionUser(deps.homeserver, localpart, account.identity);
    await ensureDevice(deps, localpart, deviceId);
  } catch (err: unknown) {
    if (err instanceof MappingError) {
      deps.logger.error({ err }, 'introspection.mapping_failed');
      return INACTIVE;
    }
    if (err instanceof HomeserverError) throw new IntrospectionUnavailable('The homeserver could not be provisioned', err);
    throw err;
  }

  const value: Record<string, unknown> = {
    active: true,
    scope: scopes.join(' '),
    client_id: answer.clientId ?? 'unknown',
    username: localpart,
    sub: answer.sub,
    device_id: deviceId,
    token_type: 'access_token',
    ...(answer.exp === undefined ? {} : { exp: answer.exp }),
  };
  cache.set(token, value, now, answer.exp === undefined ? undefined : answer.exp * 1000);
  return withExpiresIn(value, now);
}

/**
 * Whether an introspected token is an access token. RFC 7662 `token_type` / Keycloak's `typ` decide when present;
 * when the OP names no type (oidc-provider omits it for refresh tokens), the userinfo endpoint decides: a resource
 * server accepts only access tokens (RFC 6750).
 */
async function isAccessToken(provider: UpstreamProvider, token: string, claims: Readonly<Record<string, unknown>>): Promise<boolean> {
  const named = [claims['token_type'], claims['typ']].filter((value): value is string => typeof value === 'string');
  if (named.some((value) => /refresh|offline|^id$|id_token/i.test(value))) return false;
  if (named.length > 0) return true;
  const sub = typeof claims['sub'] === 'string' ? claims['sub'] : '';
  try {
    await provider.userinfo(token, sub);
    return true;
  } catch (err: unknown) {
    if (err instanceof UpstreamError && err.kind === 'unavailable') throw new IntrospectionUnavailable('The identity provider could not be reached for userinfo', err);
    // No userinfo endpoint: nothing more to learn; the scope checks that follow still apply.
    if (err instanceof UpstreamError && err.kind === 'unsupported') return true;
    return false;
  }
}

async function userinfoOrEmpty(deps: AppDeps, provider: UpstreamProvider, token: string, sub: string): Promise<Readonly<Record<string, unknown>>> {
  try {
    return await provider.userinfo(token, sub);
  } catch (err: unknown) {
    if (err instanceof UpstreamError && err.kind === 'unavailable') throw new IntrospectionUnavailable('The identity provider could not be reached for userinfo', err);
    // No userinfo endpoint, or the token lacks the openid scope: map from the introspection claims alone.
    deps.logger.debug({ err }, 'introspection.userinfo_skipped');
    return {};
  }
}

/** Remembers for a while which native devices exist, so a busy client does not cause an upsert per request. */
async function ensureDevice(deps: AppDeps, localpart: string, deviceId: string): Promise<void> {
  const key = `native-device:${localpart}:${deviceId}`;
  if ((await deps.store.get(key)) !== undefined) return;
  await deps.homeserver.upsertDevice(localpart, deviceId);
  await deps.store.set(key, '1', { ttlMs: 10 * 60_000 });
}

/** `expires_in` is relative, so it is computed per answer, also for cached ones. */
function withExpiresIn(value: Record<string, unknown>, nowMs: number): Record<string, unknown> {
  const exp = value['exp'];
  if (value['active'] !== true || typeof exp !== 'number') return value;
  return { ...value, expires_in: Math.max(0, exp - Math.floor(nowMs / 1000)) };
}

import type { Adapter, AdapterPayload } from 'oidc-provider';
import type { Clock } from '../clock.js';
import { isFields, isNumber, isOptional, readRecord, recordFormat, type RecordLogger } from '../store/record-format.js';
import type { Store } from '../store/store.js';

/**
 * oidc-provider's persistence (its `Adapter` contract, lib/adapters/memory_adapter.js is the reference) on the
 * proxy's Store, so the OAuth server's codes, tokens, grants, sessions and registered clients live in Redis (or
 * memory) with everything else, and every replica sees them.
 *
 * Keys: `oauth:<Model>:<id>` holds the entity; `oauth:uid:<uid>` and `oauth:user-code:<code>` are the two lookups
 * oidc-provider asks for; `oauth:grant:<grantId>` is the set of entity keys issued under a grant, so that
 * `revokeByGrantId` (refresh-token reuse, code replay, revocation of the grant) reaches all of them.
 */

/**
 * Device codes stay readable this long after they expire, so that the device's next poll is told `expired_token`
 * (RFC 8628 §3.5) and the user's code page says "expired", instead of both seeing an unknown code.
 */
const EXPIRED_DEVICE_CODE_RETENTION_MS = 10 * 60 * 1000;

const GRANTABLE = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode', 'BackchannelAuthenticationRequest']);

/** One stored entity: oidc-provider's payload as it gave it, and when the record expires (for the consume rewrite). */
interface StoredEntity {
  readonly payload: AdapterPayload;
  readonly expiresAt?: number;
}

export const OAUTH_ENTITY_RECORD = recordFormat<StoredEntity>({
  name: 'oauth-entity',
  version: 1,
  decoders: { 1: (fields) => isFields(fields['payload']) && isOptional(fields['expiresAt'], isNumber) },
});

export interface ProviderStoreOptions {
  readonly store: Store;
  readonly clock: Clock;
  readonly logger: RecordLogger;
  /** The longest life of anything issued under a grant (the refresh token's): the grant index outlives it. */
  readonly grantIndexTtlMs: number;
}

/** oidc-provider's `adapter` option: one adapter per model name. */
export function providerStoreAdapter(options: ProviderStoreOptions): (model: string) => Adapter {
  return (model) => new StoreAdapter(model, options);
}

const entityKey = (model: string, id: string): string => `oauth:${model}:${id}`;
const uidKey = (uid: string): string => `oauth:uid:${uid}`;
const userCodeKey = (userCode: string): string => `oauth:user-code:${userCode}`;
const grantKey = (grantId: string): string => `oauth:grant:${grantId}`;

class StoreAdapter implements Adapter {
  constructor(
    private readonly model: string,
    private readonly options: ProviderStoreOptions,
  ) {}

  async upsert(id: string, payload: AdapterPayload, expiresIn: number | undefined): Promise<void> {
    const { store, clock } = this.options;
    const ttlMs = typeof expiresIn === 'number' && expiresIn > 0 ? expiresIn * 1000 : undefined;
    const key = entityKey(this.model, id);
    const record: StoredEntity = ttlMs === undefined ? { payload } : { payload, expiresAt: clock.now() + ttlMs };
    const retainMs = ttlMs !== undefined && this.model === 'DeviceCode' ? ttlMs + EXPIRED_DEVICE_CODE_RETENTION_MS : ttlMs;
    const setOptions = retainMs === undefined ? {} : { ttlMs: retainMs };
    if (GRANTABLE.has(this.model) && typeof payload.grantId === 'string') {
      // Index first: a token that exists is always reachable from its grant.
      await store.addToSet(grantKey(payload.grantId), key, Math.max(this.options.grantIndexTtlMs, retainMs ?? 0));
    }
    if (this.model === 'Session' && typeof payload.uid === 'string') await store.set(uidKey(payload.uid), id, setOptions);
    if (typeof payload.userCode === 'string') await store.set(userCodeKey(payload.userCode), id, setOptions);
    await store.set(key, OAUTH_ENTITY_RECORD.encode(record), setOptions);
  }

  async find(id: string): Promise<AdapterPayload | undefined> {
    return (await this.read(entityKey(this.model, id)))?.record.payload;
  }

  async findByUid(uid: string): Promise<AdapterPayload | undefined> {
    const id = await this.options.store.get(uidKey(uid));
    return id === undefined ? undefined : this.find(id);
  }

  async findByUserCode(userCode: string): Promise<AdapterPayload | undefined> {
    const id = await this.options.store.get(userCodeKey(userCode));
    return id === undefined ? undefined : this.find(id);
  }

  /**
   * Marks a single-use entity (authorization code, device code) consumed — kept, not deleted, so that a second use
   * is recognised as a replay and oidc-provider revokes the whole grant (RFC 6749 §4.1.2). Compare-and-set: of two
   * concurrent consumers exactly one rewrites the record it read; the loser's later find() sees `consumed`.
   */
  async consume(id: string): Promise<void> {
    const { store, clock } = this.options;
    const key = entityKey(this.model, id);
    for (let attempt = 0; attempt < 3; attempt++) {
      const current = await this.read(key);
      if (current === undefined || current.record.payload.consumed !== undefined) return;
      const remainingMs = current.record.expiresAt === undefined ? undefined : current.record.expiresAt - clock.now();
      if (remainingMs !== undefined && remainingMs <= 0) return;
      const next: StoredEntity = { ...current.record, payload: { ...current.record.payload, consumed: Math.floor(clock.now() / 1000) } };
      if (await store.compareAndSet(key, current.raw, OAUTH_ENTITY_RECORD.encode(next), remainingMs === undefined ? {} : { ttlMs: remainingMs })) return;
    }
  }

  async destroy(id: string): Promise<void> {
    const { store } = this.options;
    const key = entityKey(this.model, id);
    const current = await this.read(key);
    await store.delete(key);
    const payload = current?.record.payload;
    if (payload === undefined) return;
    if (typeof payload.grantId === 'string' && GRANTABLE.has(this.model)) await store.removeFromSet(grantKey(payload.grantId), key);
    if (this.model === 'Session' && typeof payload.uid === 'string' && (await store.get(uidKey(payload.uid))) === id) await store.delete(uidKey(payload.uid));
  }

  /** Deletes everything issued under the grant, whatever its model (oidc-provider calls this on one model only). */
  async revokeByGrantId(grantId: string): Promise<void> {
    const { store } = this.options;
    const members = await store.setMembers(grantKey(grantId));
    if (members.length > 0) await store.delete(...members);
    await store.delete(grantKey(grantId));
  }

  private async read(key: string): Promise<{ raw: string; record: StoredEntity } | undefined> {
    const raw = await this.options.store.get(key);
    const record = readRecord(OAUTH_ENTITY_RECORD, raw, key, this.options.logger);
    return raw === undefined || record === undefined ? undefined : { raw, record };
  }
}

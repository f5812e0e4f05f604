import type { Clock } from '../clock.js';
import { isNumber, isOptional, isString, readRecord, recordFormat, type Fields, type RecordLogger } from '../store/record-format.js';
import type { Store } from '../store/store.js';

/**
 * The (issuer, sub) → localpart bindings. A binding is made once and never silently re-bound: the subject is the
 * OP's stable identifier, while claims such as preferred_username or email can change or be reassigned.
 */
export interface Binding {
  readonly issuer: string;
  readonly sub: string;
  readonly localpart: string;
  readonly idpId: string;
  readonly createdAt: number;
  /** The username the OP accepted for this subject, so a password login by Matrix localpart can reach the OP. */
  readonly opUsername?: string;
}

export type ClaimResult = { readonly ok: true; readonly binding: Binding } | { readonly ok: false; readonly reason: 'localpart_taken'; readonly owner: { issuer: string; sub: string } };

/** Which subject holds a localpart: the claim that makes "one localpart, one subject" atomic. */
export interface LocalpartOwner {
  readonly issuer: string;
  readonly sub: string;
}

export const bindingKeys = {
  binding: (issuer: string, sub: string) => `binding:${issuer}|${sub}`,
  owner: (localpart: string) => `localpart-owner:${localpart}`,
} as const;

/*
 * Version 1 of both records added only `v`. Those written without it (releases up to d73999c, version 0) are still
 * read: bindings never expire, so version 0 must stay readable until a release migrates them.
 */
export const bindingRecord = recordFormat<Binding>({ name: 'binding', version: 1, decoders: { 0: isBindingFields, 1: isBindingFields } });
export const localpartOwnerRecord = recordFormat<LocalpartOwner>({ name: 'localpart_owner', version: 1, decoders: { 0: isOwnerFields, 1: isOwnerFields } });

function isBindingFields(f: Fields): boolean {
  return isString(f.issuer) && isString(f.sub) && isString(f.localpart) && isString(f.idpId) && isNumber(f.createdAt) && isOptional(f.opUsername, isString);
}

function isOwnerFields(f: Fields): boolean {
  return isString(f.issuer) && isString(f.sub);
}

/**
 * An unreadable binding reads as no binding; an unreadable localpart owner reads as no owner, but `claim` still
 * cannot take the localpart (its write only succeeds on an absent key), so it never binds two subjects to one.
 */
export class BindingStore {
  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    private readonly logger: RecordLogger,
  ) {}

  async find(issuer: string, sub: string): Promise<Binding | undefined> {
    const key = bindingKeys.binding(issuer, sub);
    return readRecord(bindingRecord, await this.store.get(key), key, this.logger);
  }

  async ownerOf(localpart: string): Promise<LocalpartOwner | undefined> {
    const key = bindingKeys.owner(localpart);
    return readRecord(localpartOwnerRecord, await this.store.get(key), key, this.logger);
  }

  async findByLocalpart(localpart: string): Promise<Binding | undefined> {
    const owner = await this.ownerOf(localpart);
    return owner === undefined ? undefined : this.find(owner.issuer, owner.sub);
  }

  /**
   * Binds a subject to a localpart. The localpart is claimed atomically first, so two subjects racing for one
   * localpart cannot both win; a subject already bound keeps its binding (the caller looks it up first).
   */
  async claim(input: Omit<Binding, 'createdAt'>): Promise<ClaimResult> {
    const owner: LocalpartOwner = { issuer: input.issuer, sub: input.sub };
    const claimed = await this.store.set(bindingKeys.owner(input.localpart), localpartOwnerRecord.encode(owner), { onlyIfAbsent: true });
    if (!claimed) {
      const current = await this.ownerOf(input.localpart);
      if (current === undefined || current.issuer !== input.issuer || current.sub !== input.sub) {
        return { ok: false, reason: 'localpart_taken', owner: current ?? owner };
      }
    }
    const binding: Binding = { ...input, createdAt: this.clock.now() };
    const written = await this.store.set(bindingKeys.binding(input.issuer, input.sub), bindingRecord.encode(binding), { onlyIfAbsent: true });
    if (!written) {
      const existing = await this.find(input.issuer, input.sub);
      if (existing !== undefined) return { ok: true, binding: existing };
    }
    return { ok: true, binding };
  }

  /**
   * What to read when a session made through `binding` is written, and whether the value read then is still that
   * binding (same localpart). An admin's removal sweeps the user's sessions after it removed the binding
   * (admin-routes.ts), so read in the step that writes the session, one of the two sees the other.
   */
  stillBound(binding: Binding): { readonly key: string; readonly holds: (value: string | undefined) => boolean } {
    const key = bindingKeys.binding(binding.issuer, binding.sub);
    return { key, holds: (value) => readRecord(bindingRecord, value, key, this.logger)?.localpart === binding.localpart };
  }

  /** Records the OP username that worked for this subject (login by Matrix localpart uses it). */
  async rememberOpUsername(binding: Binding, opUsername: string): Promise<void> {
    if (binding.opUsername === opUsername) return;
    // Compare-and-set against what was read: a binding removed meanwhile (admin) must not come back.
    const key = bindingKeys.binding(binding.issuer, binding.sub);
    const current = await this.store.get(key);
    const stored = readRecord(bindingRecord, current, key, this.logger);
    if (current === undefined || stored === undefined || stored.localpart !== binding.localpart) return;
    await this.store.compareAndSet(key, current, bindingRecord.encode({ ...stored, opUsername }));
  }

  /**
   * Removes the binding and, if this subject holds it, its localpart. An unreadable binding is removed as asked, but
   * its localpart cannot be known and stays claimed.
   */
  async remove(issuer: string, sub: string): Promise<Binding | undefined> {
    const key = bindingKeys.binding(issuer, sub);
    const binding = readRecord(bindingRecord, await this.store.consume(key), key, this.logger);
    if (binding === undefined) return undefined;
    const owner = await this.ownerOf(binding.localpart);
    if (owner?.issuer === issuer && owner.sub === sub) await this.store.delete(bindingKeys.owner(binding.localpart));
    return binding;
  }
}

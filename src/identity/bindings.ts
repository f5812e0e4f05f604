import type { Clock } from '../clock.js';
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

const keys = {
  binding: (issuer: string, sub: string) => `binding:${issuer}|${sub}`,
  owner: (localpart: string) => `localpart-owner:${localpart}`,
};

export class BindingStore {
  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
  ) {}

  async find(issuer: string, sub: string): Promise<Binding | undefined> {
    const raw = await this.store.get(keys.binding(issuer, sub));
    return raw === undefined ? undefined : (JSON.parse(raw) as Binding);
  }

  async ownerOf(localpart: string): Promise<{ issuer: string; sub: string } | undefined> {
    const raw = await this.store.get(keys.owner(localpart));
    return raw === undefined ? undefined : (JSON.parse(raw) as { issuer: string; sub: string });
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
    const owner = { issuer: input.issuer, sub: input.sub };
    const claimed = await this.store.set(keys.owner(input.localpart), JSON.stringify(owner), { onlyIfAbsent: true });
    if (!claimed) {
      const current = await this.ownerOf(input.localpart);
      if (current === undefined || current.issuer !== input.issuer || current.sub !== input.sub) {
        return { ok: false, reason: 'localpart_taken', owner: current ?? owner };
      }
    }
    const binding: Binding = { ...input, createdAt: this.clock.now() };
    const written = await this.store.set(keys.binding(input.issuer, input.sub), JSON.stringify(binding), { onlyIfAbsent: true });
    if (!written) {
      const existing = await this.find(input.issuer, input.sub);
      if (existing !== undefined) return { ok: true, binding: existing };
    }
    return { ok: true, binding };
  }

  /** Records the OP username that worked for this subject (login by Matrix localpart uses it). */
  async rememberOpUsername(binding: Binding, opUsername: string): Promise<void> {
    if (binding.opUsername === opUsername) return;
    // Compare-and-set against what was read: a binding removed meanwhile (admin) must not come back.
    const key = keys.binding(binding.issuer, binding.sub);
    const current = await this.store.get(key);
    if (current === undefined) return;
    const stored = JSON.parse(current) as Binding;
    if (stored.localpart !== binding.localpart) return;
    await this.store.compareAndSet(key, current, JSON.stringify({ ...stored, opUsername }));
  }

  async remove(issuer: string, sub: string): Promise<Binding | undefined> {
    const raw = await this.store.consume(keys.binding(issuer, sub));
    if (raw === undefined) return undefined;
    const binding = JSON.parse(raw) as Binding;
    const owner = await this.ownerOf(binding.localpart);
    if (owner?.issuer === issuer && owner.sub === sub) await this.store.delete(keys.owner(binding.localpart));
    return binding;
  }
}

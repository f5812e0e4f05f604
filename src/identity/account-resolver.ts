import type { HomeserverAdapter, HomeserverUser } from '../provisioning/homeserver-adapter.js';
import type { UpstreamGrant } from '../oidc/upstream.js';
import type { BindingStore, Binding } from './bindings.js';
import { meetsRequirements, type AttributeRequirement, type MappedIdentity, type UserMapper } from './user-mapping.js';

/** The per-provider facts account resolution needs (from the provider's config block). */
export interface ProviderPolicy {
  readonly idpId: string;
  readonly issuer: string;
  readonly mapper: UserMapper;
  readonly attributeRequirements: readonly AttributeRequirement[];
  readonly allowExistingUsers: boolean;
  readonly enableRegistration: boolean;
}

export type ResolvedAccount = {
  readonly ok: true;
  readonly localpart: string;
  readonly binding: Binding;
  readonly identity: MappedIdentity;
  /** True when this login created the binding (first login of this subject). */
  readonly firstLogin: boolean;
  /** Whether the homeserver already has the account (so a login after the first need not provision it). */
  readonly existsAtHomeserver: boolean;
};

export type AccountRefusal =
  | 'requirements_not_met' // attribute_requirements of the provider do not hold
  | 'no_localpart' // no binding and the templates gave no localpart
  | 'localpart_taken' // bound to another subject, or an existing homeserver user and allow_existing_users is off
  | 'registration_disabled' // first login and enable_registration is off
  | 'deactivated'; // the homeserver account is deactivated

/**
 * What a password login can ask for before the OP's answer arrives, about the localpart it names: the homeserver's
 * user, used when resolution arrives at that same localpart (else a fresh query is made), and the binding that holds
 * the localpart, used only when it binds the subject the OP authenticated (else the binding is read as usual). A
 * binding read ahead can be older than the OP's answer: a caller that passes one must check, when the session is
 * written, that the binding still stands (BindingStore.stillBound; compat/login.ts does).
 */
export interface PrefetchedAccount {
  readonly localpart: string;
  readonly user: Promise<HomeserverUser | undefined>;
  readonly binding?: Promise<Binding | undefined>;
}

export type AccountResult = ResolvedAccount | { readonly ok: false; readonly reason: AccountRefusal };

/**
 * From an OP-authenticated identity to the Matrix account it may use: binding by (issuer, sub) first, else the
 * mapped localpart, claimed atomically; never an existing account of someone else.
 * Throws MappingError (template failure) and HomeserverError (homeserver unreachable) to the caller.
 */
export async function resolveAccount(
  policy: ProviderPolicy,
  grant: Pick<UpstreamGrant, 'sub' | 'claims'>,
  deps: { bindings: BindingStore; homeserver: HomeserverAdapter },
  opUsername?: string,
  prefetched?: PrefetchedAccount,
): Promise<AccountResult> {
  const queryUser = (localpart: string) => (prefetched?.localpart === localpart ? prefetched.user : deps.homeserver.queryUser(localpart));
  if (!meetsRequirements(grant.claims, policy.attributeRequirements)) return { ok: false, reason: 'requirements_not_met' };
  const identity = policy.mapper.map(grant.claims);
  // Bindings are keyed by the OP's `sub` unless the admin chose another subject claim (Synapse's subject_claim).
  const subject = identity.subject;

  const ahead = prefetched?.binding === undefined ? undefined : await prefetched.binding.catch(() => undefined);
  const existing = ahead !== undefined && ahead.issuer === policy.issuer && ahead.sub === subject ? ahead : await deps.bindings.find(policy.issuer, subject);
  if (existing !== undefined) {
    const user = await queryUser(existing.localpart);
    if (user?.deactivated === true) return { ok: false, reason: 'deactivated' };
    if (opUsername !== undefined) await deps.bindings.rememberOpUsername(existing, opUsername);
    return { ok: true, localpart: existing.localpart, binding: existing, identity, firstLogin: false, existsAtHomeserver: user !== undefined };
  }

  if (!policy.enableRegistration) return { ok: false, reason: 'registration_disabled' };
  if (identity.localpart === undefined) return { ok: false, reason: 'no_localpart' };

  const user = await queryUser(identity.localpart);
  if (user !== undefined) {
    // allow_existing_users binds only the exact, unfolded name: `ALICE` never takes over an existing `@alice`.
    if (!policy.allowExistingUsers || identity.localpartFolded === true) return { ok: false, reason: 'localpart_taken' };
    if (user.deactivated) return { ok: false, reason: 'deactivated' };
  }
  const claim = await deps.bindings.claim({
    issuer: policy.issuer,
    sub: subject,
    localpart: identity.localpart,
    idpId: policy.idpId,
    ...(opUsername === undefined ? {} : { opUsername }),
  });
  if (!claim.ok) return { ok: false, reason: 'localpart_taken' };
  return { ok: true, localpart: claim.binding.localpart, binding: claim.binding, identity, firstLogin: true, existsAtHomeserver: user !== undefined };
}

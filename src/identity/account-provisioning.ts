import { HomeserverError, type HomeserverAdapter } from '../provisioning/homeserver-adapter.js';
import type { BindingStore } from './bindings.js';
import type { MappedIdentity } from './user-mapping.js';
import type { ResolvedAccount } from './account-resolver.js';

/**
 * The homeserver refused the account it was asked to create or update (Synapse's 400: a localpart it reserves, a
 * display name or e-mail it will not take). Retrying cannot help, so this is a refusal (403 with the homeserver's
 * reason), not an outage (issue 12 #4).
 */
export class AccountRefusedByHomeserver extends Error {
  constructor(
    readonly localpart: string,
    readonly reason: string,
    cause: HomeserverError,
  ) {
    super(`the homeserver refused the account ${localpart}: ${reason}`, { cause });
    this.name = 'AccountRefusedByHomeserver';
  }
}

/**
 * Creates the homeserver account on the first login of a subject (with display name and email from the templates),
 * or when the homeserver lost it; later logins skip the round trip. Throws HomeserverError on an outage, and
 * AccountRefusedByHomeserver when the homeserver refused the request; a binding this very login made is then
 * released, so the localpart is not held by an account that does not exist.
 */
export async function provisionAccount(homeserver: HomeserverAdapter, account: ResolvedAccount, bindings: BindingStore): Promise<void> {
  try {
    if (account.firstLogin) return await provisionUser(homeserver, account.localpart, account.identity);
    if (!account.existsAtHomeserver) return await provisionUser(homeserver, account.localpart, undefined);
  } catch (err: unknown) {
    // 400 only: Synapse's 401/403/404 to the provisioning API mean a wrong secret or a disabled API (the admin's).
    if (!(err instanceof HomeserverError) || err.kind !== 'permanent' || err.status !== 400) throw err;
    if (account.firstLogin) await bindings.remove(account.binding.issuer, account.binding.sub);
    throw new AccountRefusedByHomeserver(account.localpart, err.detail ?? 'the request was refused', err);
  }
}

export async function provisionUser(homeserver: HomeserverAdapter, localpart: string, identity: Pick<MappedIdentity, 'displayName' | 'email'> | undefined): Promise<void> {
  await homeserver.provisionUser({
    localpart,
    ...(identity?.displayName === undefined ? {} : { displayName: identity.displayName }),
    ...(identity?.email === undefined ? {} : { emails: [identity.email] }),
  });
}

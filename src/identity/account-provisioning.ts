import type { HomeserverAdapter } from '../provisioning/homeserver-adapter.js';
import type { MappedIdentity } from './user-mapping.js';
import type { ResolvedAccount } from './account-resolver.js';

/**
 * Creates the homeserver account on the first login of a subject (with display name and email from the templates),
 * or when the homeserver lost it; later logins skip the round trip. Throws HomeserverError.
 */
export async function provisionAccount(homeserver: HomeserverAdapter, account: ResolvedAccount): Promise<void> {
  if (account.firstLogin) return provisionUser(homeserver, account.localpart, account.identity);
  if (!account.existsAtHomeserver) return provisionUser(homeserver, account.localpart, undefined);
}

export async function provisionUser(homeserver: HomeserverAdapter, localpart: string, identity: Pick<MappedIdentity, 'displayName' | 'email'> | undefined): Promise<void> {
  await homeserver.provisionUser({
    localpart,
    ...(identity?.displayName === undefined ? {} : { displayName: identity.displayName }),
    ...(identity?.email === undefined ? {} : { emails: [identity.email] }),
  });
}

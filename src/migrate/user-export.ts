import type { SynapseRows } from './synapse-database.js';

/**
 * Users who sign in with a Synapse password today have no account at the OP yet (issue 14, part 2): exported for the
 * OP's own import. After that import, their first sign-in through the proxy binds the OP subject to the existing
 * Matrix account when the provider has `allow_existing_users: true` (Synapse's semantics: an OP user whose mapped
 * localpart already exists is bound to it instead of being refused).
 *
 * Password hashes leave only with `includePasswordHashes`. Synapse stores bcrypt (`$2b$…`, salted, with the
 * optional `password_config.pepper` appended to the password first, which no database holds):
 * - CSV carries the hash as Synapse stores it, for a target that verifies bcrypt;
 * - Keycloak: the credential is written in Keycloak's representation with `algorithm: "bcrypt"` and the bcrypt cost
 *   as `hashIterations`. Keycloak imports it, but its built-in hash providers are PBKDF2 (and Argon2): the password
 *   verifies only with a bcrypt PasswordHashProvider extension installed under the provider id `bcrypt`. Without it
 *   those users reset their password (docs/migrating-from-synapse.md).
 */

export type ExportFormat = 'keycloak' | 'csv';

export interface ExportedUser {
  readonly localpart: string;
  readonly displayName?: string;
  readonly emails: readonly string[];
  readonly admin: boolean;
  readonly passwordHash?: string;
}

export interface UserExport {
  readonly users: readonly ExportedUser[];
  /** Users left out, with why (deactivated, guest, appservice, SSO-linked to a configured provider, no password). */
  readonly skipped: Readonly<Record<string, number>>;
}

export function selectUsersToExport(
  rows: SynapseRows,
  options: { serverName: string; linkedLocalparts: ReadonlySet<string>; isAppserviceLocalpart: (localpart: string) => boolean; includePasswordHashes: boolean },
): UserExport {
  const suffix = `:${options.serverName}`;
  const displayNames = new Map(rows.profiles.map((profile) => [profile.localpart, profile.displayName]));
  const emails = new Map<string, string[]>();
  for (const threepid of rows.threepids) {
    // Only verified addresses: Synapse writes validated_at when the address was confirmed.
    if (threepid.medium !== 'email' || threepid.validatedAt === undefined) continue;
    emails.set(threepid.userId, [...(emails.get(threepid.userId) ?? []), threepid.address]);
  }
  const skipped: Record<string, number> = {};
  const skip = (reason: string) => (skipped[reason] = (skipped[reason] ?? 0) + 1);
  const users: ExportedUser[] = [];
  for (const user of rows.users) {
    if (!user.name.startsWith('@') || !user.name.endsWith(suffix)) {
      skip('foreign_server');
      continue;
    }
    const localpart = user.name.slice(1, -suffix.length);
    if (user.deactivated) skip('deactivated_user');
    else if (user.isGuest) skip('guest');
    else if (user.appserviceId !== undefined || options.isAppserviceLocalpart(localpart)) skip('appservice_user');
    else if (options.linkedLocalparts.has(localpart)) skip('sso_linked');
    else {
      const displayName = displayNames.get(localpart);
      users.push({
        localpart,
        ...(displayName === undefined ? {} : { displayName }),
        emails: emails.get(user.name) ?? [],
        admin: user.admin,
        ...(options.includePasswordHashes && user.passwordHash !== undefined && user.passwordHash !== '' ? { passwordHash: user.passwordHash } : {}),
      });
    }
  }
  return { users, skipped };
}

/** Keycloak's partial import body (POST /admin/realms/{realm}/partialImport, or the admin console's Partial import). */
export function keycloakPartialImport(users: readonly ExportedUser[]): string {
  return `${JSON.stringify(
    {
      ifResourceExists: 'SKIP',
      users: users.map((user) => ({
        username: user.localpart,
        enabled: true,
        ...(user.emails[0] === undefined ? {} : { email: user.emails[0], emailVerified: true }),
        ...(user.displayName === undefined ? {} : { firstName: user.displayName }),
        attributes: {
          matrix_localpart: [user.localpart],
          ...(user.displayName === undefined ? {} : { matrix_display_name: [user.displayName] }),
          ...(user.emails.length > 1 ? { matrix_other_emails: user.emails.slice(1) } : {}),
          synapse_admin: [String(user.admin)],
        },
        ...(user.passwordHash === undefined ? {} : { credentials: [keycloakBcryptCredential(user.passwordHash)] }),
      })),
    },
    null,
    2,
  )}\n`;
}

function keycloakBcryptCredential(hash: string): Record<string, unknown> {
  // `$2b$12$<22 salt chars><31 hash chars>`: the cost is the second field. The whole hash goes in `value` (a bcrypt
  // provider parses it itself); Keycloak's own PBKDF2 providers would not verify it.
  const cost = Number(/^\$2[abxy]?\$(\d{2})\$/.exec(hash)?.[1] ?? 12);
  return {
    type: 'password',
    secretData: JSON.stringify({ value: hash, salt: '' }),
    credentialData: JSON.stringify({ hashIterations: cost, algorithm: 'bcrypt', additionalParameters: {} }),
  };
}

const CSV_HEADER = ['localpart', 'display_name', 'email', 'other_emails', 'admin'];

/** RFC 4180 CSV; the password_hash column only when hashes were asked for. */
export function usersCsv(users: readonly ExportedUser[], includePasswordHashes: boolean): string {
  const header = includePasswordHashes ? [...CSV_HEADER, 'password_hash'] : CSV_HEADER;
  const lines = [header.join(',')];
  for (const user of users) {
    const fields = [user.localpart, user.displayName ?? '', user.emails[0] ?? '', user.emails.slice(1).join(' '), String(user.admin)];
    if (includePasswordHashes) fields.push(user.passwordHash ?? '');
    lines.push(fields.map(csvField).join(','));
  }
  return `${lines.join('\r\n')}\r\n`;
}

function csvField(value: string): string {
  return /[",\r\n]/.test(value) ? `"${value.replaceAll('"', '""')}"` : value;
}

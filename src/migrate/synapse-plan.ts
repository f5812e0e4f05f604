import type { SynapseAccessTokenRow, SynapseRefreshTokenRow, SynapseRows, SynapseUserRow } from './synapse-database.js';

/**
 * What `migrate synapse` will do with a Synapse database, decided without touching any store (issue 14): which
 * access tokens become imported sessions, which SSO links become bindings, and every row left out with its reason.
 * The rules follow Synapse's own schema (synapse/storage/schema: access_tokens, refresh_tokens, devices,
 * user_external_ids, users) and what Synapse keeps handling itself after the switch.
 */

export type SkipReason =
  | 'deactivated_user' // users.deactivated: Synapse refuses the account anyway
  | 'guest' // users.is_guest: guests never log in through the proxy
  | 'appservice_user' // users.appservice_id, or an exclusive appservice namespace: Synapse keeps handling appservices
  | 'puppet_token' // access_tokens.puppets_user_id: an admin's "login as" token, not the user's own session
  | 'expired' // valid_until_ms passed with no refresh token, or the refresh token's expiry passed
  | 'superseded' // a refresh token replaced by a newer pair that was already used (Synapse deletes it at next use)
  | 'no_device' // a token without a device (proxy sessions are one device each)
  | 'device_missing' // the token names a device Synapse no longer has
  | 'unknown_user' // a token or link of a user that is not in `users`
  | 'foreign_server' // a user id of another server name
  | 'refresh_token_missing'; // access_tokens.refresh_token_id names no refresh token

export const SKIP_REASONS: readonly SkipReason[] = [
  'deactivated_user',
  'guest',
  'appservice_user',
  'puppet_token',
  'expired',
  'superseded',
  'no_device',
  'device_missing',
  'unknown_user',
  'foreign_server',
  'refresh_token_missing',
];

export interface SkippedRow {
  readonly table: 'access_tokens' | 'refresh_tokens' | 'user_external_ids';
  /** The row's id (tokens) or (auth_provider, external_id) — never a token. */
  readonly row: string;
  readonly userId: string;
  readonly deviceId?: string;
  readonly reason: SkipReason | 'unknown_provider';
}

export interface PlannedSession {
  readonly synapseTokenId: number;
  readonly userId: string;
  readonly localpart: string;
  readonly deviceId: string;
  readonly deviceDisplayName?: string;
  readonly accessToken: string;
  readonly accessExpiresAt?: number;
  readonly refreshToken?: string;
  readonly lastSeenAt?: number;
  readonly ip?: string;
  readonly userAgent?: string;
}

export interface PlannedBinding {
  readonly localpart: string;
  readonly idpId: string;
  readonly issuer: string;
  readonly sub: string;
}

export interface PlanProblem {
  readonly kind: 'unknown_provider' | 'wrong_server_name';
  readonly message: string;
}

export interface MigrationPlan {
  readonly sessions: readonly PlannedSession[];
  readonly bindings: readonly PlannedBinding[];
  readonly skipped: readonly SkippedRow[];
  readonly problems: readonly PlanProblem[];
  readonly counts: {
    readonly users: number;
    readonly accessTokens: number;
    readonly refreshTokens: number;
    readonly externalIds: number;
    readonly devices: number;
  };
}

export interface PlanOptions {
  readonly serverName: string;
  readonly now: number;
  /** The proxy's providers: a Synapse link `oidc-<idp_id>` (or `<idp_id>`) maps to the provider of that idp_id. */
  readonly providers: readonly { readonly idpId: string; readonly issuer: string }[];
  /** Whether a localpart is in an appservice's namespace (the proxy's appservice_config_files, Synapse's files). */
  readonly isAppserviceLocalpart: (localpart: string) => boolean;
}

export function planMigration(rows: SynapseRows, options: PlanOptions): MigrationPlan {
  const skipped: SkippedRow[] = [];
  const problems: PlanProblem[] = [];
  const users = new Map(rows.users.map((user) => [user.name, user]));
  const devices = new Map(rows.devices.filter((device) => !device.hidden).map((device) => [`${device.userId}\u0000${device.deviceId}`, device]));
  const refreshById = new Map(rows.refreshTokens.map((token) => [token.id, token]));
  const accessByRefreshId = new Map<number, SynapseAccessTokenRow>();
  for (const token of rows.accessTokens) if (token.refreshTokenId !== undefined) accessByRefreshId.set(token.refreshTokenId, token);
  const suffix = `:${options.serverName}`;
  const localpartOf = (userId: string): string | undefined => (userId.startsWith('@') && userId.endsWith(suffix) ? userId.slice(1, -suffix.length) : undefined);
  const wrongServer = new Set<string>();

  /** Why a user's rows are not imported at all, if they are not. */
  const userSkipReason = (userId: string, user: SynapseUserRow | undefined): SkipReason | undefined => {
    const localpart = localpartOf(userId);
    if (localpart === undefined) {
      wrongServer.add(userId);
      return 'foreign_server';
    }
    if (user === undefined) return 'unknown_user';
    if (user.deactivated) return 'deactivated_user';
    if (user.isGuest) return 'guest';
    if (user.appserviceId !== undefined || options.isAppserviceLocalpart(localpart)) return 'appservice_user';
    return undefined;
  };

  const sessions: PlannedSession[] = [];
  for (const token of rows.accessTokens) {
    const skip = (reason: SkipReason) =>
      skipped.push({ table: 'access_tokens', row: String(token.id), userId: token.userId, ...(token.deviceId === undefined ? {} : { deviceId: token.deviceId }), reason });
    const userReason = userSkipReason(token.userId, users.get(token.userId));
    if (userReason !== undefined) {
      skip(userReason);
      continue;
    }
    if (token.puppetsUserId !== undefined) {
      skip('puppet_token');
      continue;
    }
    if (token.deviceId === undefined) {
      skip('no_device');
      continue;
    }
    let refreshToken: SynapseRefreshTokenRow | undefined;
    if (token.refreshTokenId !== undefined) {
      refreshToken = refreshById.get(token.refreshTokenId);
      if (refreshToken === undefined) {
        skip('refresh_token_missing');
        continue;
      }
      // The chain (refresh_tokens.next_token_id): a pair that was refreshed is replaced by the newer pair, which is
      // the one imported. Synapse keeps the older pair valid until the newer access token is first used; a client
      // that lost the refresh answer in exactly that window must log in again (the proxy's rotation derives the
      // successors of a previous token itself, which Synapse's random successors cannot match).
      if (refreshToken.nextTokenId !== undefined && accessByRefreshId.has(refreshToken.nextTokenId)) {
        skip('superseded');
        continue;
      }
      if (isPast(refreshToken.expiryTs, options.now) || isPast(refreshToken.ultimateSessionExpiryTs, options.now)) {
        skip('expired');
        continue;
      }
    } else if (isPast(token.validUntilMs, options.now)) {
      skip('expired');
      continue;
    }
    const device = devices.get(`${token.userId}\u0000${token.deviceId}`);
    if (device === undefined) {
      skip('device_missing');
      continue;
    }
    sessions.push({
      synapseTokenId: token.id,
      userId: token.userId,
      localpart: localpartOf(token.userId) as string,
      deviceId: token.deviceId,
      ...(device.displayName === undefined ? {} : { deviceDisplayName: device.displayName }),
      accessToken: token.token,
      ...(token.validUntilMs === undefined || refreshToken === undefined ? {} : { accessExpiresAt: token.validUntilMs }),
      ...(refreshToken === undefined ? {} : { refreshToken: refreshToken.token }),
      ...(device.lastSeen === undefined ? {} : { lastSeenAt: device.lastSeen }),
      ...(device.ip === undefined ? {} : { ip: device.ip }),
      ...(device.userAgent === undefined ? {} : { userAgent: device.userAgent }),
    });
  }

  // SSO links: Synapse names its built-in OIDC providers `oidc-<idp_id>` (the legacy single provider: `oidc`).
  const providerOf = new Map<string, { idpId: string; issuer: string }>();
  for (const provider of options.providers) {
    providerOf.set(`oidc-${provider.idpId}`, provider);
    if (!providerOf.has(provider.idpId)) providerOf.set(provider.idpId, provider);
  }
  const bindings: PlannedBinding[] = [];
  const unknownProviders = new Map<string, number>();
  for (const link of rows.externalIds) {
    const skipLink = (reason: SkippedRow['reason']) => skipped.push({ table: 'user_external_ids', row: `${link.authProvider}|${link.externalId}`, userId: link.userId, reason });
    const userReason = userSkipReason(link.userId, users.get(link.userId));
    if (userReason !== undefined) {
      skipLink(userReason);
      continue;
    }
    const provider = providerOf.get(link.authProvider);
    if (provider === undefined) {
      unknownProviders.set(link.authProvider, (unknownProviders.get(link.authProvider) ?? 0) + 1);
      skipLink('unknown_provider');
      continue;
    }
    bindings.push({ localpart: localpartOf(link.userId) as string, idpId: provider.idpId, issuer: provider.issuer, sub: link.externalId });
  }
  for (const [authProvider, count] of unknownProviders) {
    const idpId = authProvider.startsWith('oidc-') ? authProvider.slice('oidc-'.length) : authProvider;
    problems.push({
      kind: 'unknown_provider',
      message: `${count} SSO link(s) of Synapse provider "${authProvider}" have no provider with idp_id "${idpId}" in oidc_providers: not imported (add the provider, then run the migration again)`,
    });
  }
  if (wrongServer.size > 0) {
    problems.push({
      kind: 'wrong_server_name',
      message: `${wrongServer.size} user id(s) are not of server_name "${options.serverName}" (e.g. ${[...wrongServer][0]}): is this the right database and config?`,
    });
  }

  return {
    sessions,
    bindings,
    skipped,
    problems,
    counts: {
      users: rows.users.length,
      accessTokens: rows.accessTokens.length,
      refreshTokens: rows.refreshTokens.length,
      externalIds: rows.externalIds.length,
      devices: rows.devices.length,
    },
  };
}

function isPast(ts: number | undefined, now: number): boolean {
  return ts !== undefined && ts <= now;
}

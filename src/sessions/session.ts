/**
 * A legacy (compat) session: one device of one user, created by password, SSO or appservice login, or imported from
 * the homeserver's own tokens by `migrate synapse` (issue 14).
 */
export interface Session {
  readonly id: string;
  readonly localpart: string;
  readonly deviceId: string;
  readonly deviceDisplayName?: string;
  readonly origin: SessionOrigin;
  readonly createdAt: number;
  readonly lastSeenAt: number;
  readonly ip?: string;
  readonly userAgent?: string;
  readonly accessTokenHash: string;
  /** Absent: the access token never expires on its own (clients that did not ask for refresh tokens). */
  readonly accessExpiresAt?: number;
  readonly refresh?: RefreshFamily;
  /**
   * Set when the OP ended the session by back-channel logout in soft mode: the tokens are dead (clients get
   * `soft_logout: true`) but the device stays at the homeserver so its E2EE keys survive a new login on it.
   */
  readonly softLoggedOut?: { readonly at: number; readonly reason: 'backchannel_logout' };
  /**
   * Set for a session a native OAuth 2.0 client obtained from this proxy's authorization server (native_clients:
   * serve): the client_id it was registered under, so its refresh token is bound to that client (RFC 6749 §6).
   */
  readonly oauthClientId?: string;
  /**
   * The homeserver's own access token for this device, sealed (AES-GCM), when the homeserver issues tokens
   * (appservice and JWT login): the proxy swaps the client's token for it on the way through and never lets it out.
   * Absent in delegated mode, where the homeserver accepts the proxy's token by introspection.
   */
  readonly homeserverToken?: string;
}

export type SessionOrigin =
  | {
      readonly kind: 'password' | 'sso' | 'token';
      readonly idpId: string;
      readonly issuer: string;
      readonly sub: string;
      readonly sid?: string;
      /** The OP's refresh token, sealed (AES-GCM) — kept to re-validate the user at the OP later. */
      readonly sealedOpRefreshToken?: string;
      /**
       * The app password this password login used (issue 15): its sessions are re-validated with the app password's
       * OP grant (no sealedOpRefreshToken of their own) and end when it is revoked.
       */
      readonly appPasswordId?: string;
      readonly lastValidatedAt: number;
    }
  | { readonly kind: 'appservice'; readonly appserviceId: string }
  | ImportedOrigin;

/**
 * A session the homeserver issued before the switch (issue 14), imported by `migrate synapse`. It has no grant at the
 * OP, so it cannot be re-validated there: it lives until `endsAt` (`migration.imported_session_lifetime` after the
 * import) unless ended earlier (logout, admin, binding deleted, back-channel logout of the bound subject, or an OP
 * login on the same device, which replaces it with a normal session). The OP fields are present when the user had
 * an SSO link to a configured provider, so the bound subject's back-channel logout finds the session.
 */
export interface ImportedOrigin {
  readonly kind: 'imported';
  readonly importedAt: number;
  readonly endsAt: number;
  readonly idpId?: string;
  readonly issuer?: string;
  readonly sub?: string;
}

/** The OP origin of a session that came from a login at the OP (not appservice, not imported). */
export type OpOrigin = Extract<SessionOrigin, { kind: 'password' | 'sso' | 'token' }>;

export function opOriginOf(session: Pick<Session, 'origin'>): OpOrigin | undefined {
  const origin = session.origin;
  return origin.kind === 'appservice' || origin.kind === 'imported' ? undefined : origin;
}

/** The (provider, subject) a session belongs to at an OP, when it has one (OP logins, imported SSO-linked sessions). */
export function opSubjectOf(session: Pick<Session, 'origin'>): { idpId: string; issuer: string; sub: string; sid?: string } | undefined {
  const origin = session.origin;
  if (origin.kind === 'appservice') return undefined;
  if (origin.kind === 'imported') {
    return origin.idpId === undefined || origin.issuer === undefined || origin.sub === undefined ? undefined : { idpId: origin.idpId, issuer: origin.issuer, sub: origin.sub };
  }
  return origin;
}

/**
 * Refresh-token rotation state (Matrix C-S spec, "Refreshing access tokens"): after a rotation the previous refresh
 * token stays valid until the new access or refresh token is first used; any older generation presented again
 * means the family leaked, and the whole session ends.
 */
export interface RefreshFamily {
  readonly generation: number;
  readonly currentHash: string;
  /** The refresh token this generation replaced, still accepted while `successorUnused`. */
  readonly previousHash?: string;
  readonly successorUnused: boolean;
  /** Hashes of older generations (bounded), to recognise reuse. */
  readonly retiredHashes: readonly string[];
}

export function userIdOf(session: Pick<Session, 'localpart'>, serverName: string): string {
  return `@${session.localpart}:${serverName}`;
}

/**
 * How login, logout and refresh reach the homeserver. Shaped after Synapse's `/_synapse/mas/*` provisioning API
 * (provision_user, upsert_device, delete_device, sync_devices, query_user) so the Synapse adapter is a thin client.
 * Every method throws `HomeserverError` on failure; callers turn that into 503 (never a half-made session).
 */
export interface HomeserverAdapter {
  /** Creates the user, or updates the given profile fields of an existing one. */
  provisionUser(user: ProvisionedUser): Promise<void>;
  /** What the homeserver knows of a localpart; undefined when no such user exists. */
  queryUser(localpart: string): Promise<HomeserverUser | undefined>;
  /** Creates the device, or updates its display name. Must complete before the client gets its token. */
  upsertDevice(localpart: string, deviceId: string, displayName?: string): Promise<void>;
  /** Removes the device (the homeserver then rejects every cached token of it at once). Missing device: no error. */
  deleteDevice(localpart: string, deviceId: string): Promise<void>;
  /** Makes the homeserver's device list of the user exactly `deviceIds` (adds missing, deletes others). */
  syncDevices(localpart: string, deviceIds: readonly string[]): Promise<void>;
  /**
   * Lets the user replace their cross-signing master key without User-Interactive Auth for a short while (Synapse:
   * 10 minutes), after they approved the reset on the account page.
   */
  allowCrossSigningReset(localpart: string): Promise<void>;
  /**
   * The user's devices as the homeserver lists them to the user (client API `GET /devices`), read with a token
   * that authenticates as that user (the account page's own). Every device: legacy, native OIDC, any other.
   */
  listDevices(userAccessToken: string): Promise<HomeserverDevice[]>;
  /**
   * Present when the homeserver issues its own access tokens (appservice and JWT login): the proxy logs each device
   * in itself, keeps the homeserver token sealed in the session and swaps it in on the way through. Absent in the
   * delegated mode, where the homeserver accepts the proxy's own tokens by introspection.
   */
  readonly tokens?: HomeserverTokens;
}

export interface HomeserverDevice {
  readonly deviceId: string;
  readonly displayName?: string;
  readonly lastSeenTs?: number;
  readonly lastSeenIp?: string;
}

/** Token life cycle at a homeserver that issues its own tokens. Throws `HomeserverError`, or `UserNotAllowed`. */
export interface HomeserverTokens {
  /** Logs the device in (the homeserver creates it if new) and returns the homeserver's access token for it. */
  login(localpart: string, deviceId: string, displayName?: string): Promise<string>;
  /** Whether `token` is still accepted for exactly this user and device (so a re-login on the device may keep it). */
  isLive(token: string, localpart: string, deviceId: string): Promise<boolean>;
  /** Ends the token and its device at the homeserver. A token the homeserver no longer knows is no error. */
  logout(localpart: string, deviceId: string, token: string): Promise<void>;
  /** Ends every token of the user at the homeserver, also those the proxy never saw. */
  logoutAll(localpart: string): Promise<void>;
  /** Locks (or unlocks) the account with the homeserver admin token; false when no admin token is configured. */
  setLocked(localpart: string, locked: boolean): Promise<boolean>;
}

/** The backend's own allow/deny rules refused to act as this user (the as_token could, so the proxy must not). */
export class UserNotAllowed extends Error {
  readonly userId: string;
  constructor(userId: string, reason: string) {
    super(`${userId} may not log in through the proxy: ${reason}`);
    this.name = 'UserNotAllowed';
    this.userId = userId;
  }
}

export interface ProvisionedUser {
  readonly localpart: string;
  readonly displayName?: string;
  readonly emails?: readonly string[];
  readonly avatarUrl?: string;
}

export interface HomeserverUser {
  readonly userId: string;
  readonly displayName?: string;
  readonly deactivated: boolean;
  readonly suspended: boolean;
}

export class HomeserverError extends Error {
  /** transient: worth a retry (network, 5xx); permanent: the homeserver refused (4xx). */
  readonly kind: 'transient' | 'permanent';
  readonly status?: number;
  /** The homeserver's own words (Synapse's `error`), safe to show the user when it refused what it was given. */
  readonly detail?: string;
  constructor(kind: 'transient' | 'permanent', message: string, options: { status?: number; detail?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'HomeserverError';
    this.kind = kind;
    if (options.status !== undefined) this.status = options.status;
    if (options.detail !== undefined) this.detail = options.detail;
  }
}

/**
 * For backends whose homeserver keeps its own auth (appservice, JWT login): the account page's device list and
 * cross-signing approval need Synapse's delegated-auth contract (`/_synapse/mas/*`, and a page token the homeserver
 * accepts by introspection). The page says the homeserver could not answer; the rest of it works.
 */
export function onlyWithDelegatedAuth(what: string): HomeserverError {
  return new HomeserverError('permanent', `${what} needs homeserver.mode: delegated`);
}

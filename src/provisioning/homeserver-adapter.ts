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

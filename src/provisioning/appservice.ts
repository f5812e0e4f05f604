import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { ClientApi, errcodeOf, isRecord, statusError, type ClientApiResponse } from './client-api.js';
import { HomeserverError, UserNotAllowed, onlyWithDelegatedAuth, type HomeserverAdapter, type HomeserverDevice, type HomeserverTokens, type HomeserverUser, type ProvisionedUser } from './homeserver-adapter.js';
import type { UserPolicy } from './user-policy.js';

export type HomeserverFlavour = 'synapse' | 'dendrite' | 'conduit' | 'conduwuit' | 'tuwunel' | 'continuwuity';

export interface AppserviceBackendOptions {
  readonly baseUrl: string;
  readonly serverName: string;
  readonly flavour: HomeserverFlavour;
  /** The as_token of the proxy's own registration. Never leaves this module except in requests to the homeserver. */
  readonly asToken: string;
  readonly policy: UserPolicy;
  /** A homeserver admin's token (Synapse, tuwunel): locks accounts the OP disabled. */
  readonly adminToken?: string;
  readonly timeoutMs: number;
  readonly logger: Logger;
}

const V3 = '/_matrix/client/v3';

/**
 * The appservice backend: users are logged in with `m.login.application_service` (Matrix C-S spec, "Appservice
 * Login"), which every homeserver implementation supports, so no homeserver change beyond the registration file.
 * Quirks by flavour, as measured (docs/homeservers.md):
 * - users must exist first (Synapse 404s, Dendrite makes a ghost device, Conduit 500s): register with
 *   `inhibit_login`, and M_USER_IN_USE means it exists;
 * - the Conduit family treats a user registered without a password as deactivated (no push): send a random one;
 * - device deletion by the appservice works on Synapse only; elsewhere the device's own token logs it out.
 */
export class AppserviceBackend implements HomeserverAdapter, HomeserverTokens {
  readonly tokens: HomeserverTokens = this;
  readonly #api: ClientApi;
  readonly #options: AppserviceBackendOptions;
  readonly #log: Logger;

  constructor(options: AppserviceBackendOptions) {
    this.#options = options;
    this.#log = options.logger.child({ component: 'appservice-backend' });
    this.#api = new ClientApi({ baseUrl: options.baseUrl, timeoutMs: options.timeoutMs, logger: this.#log });
  }

  async provisionUser(user: ProvisionedUser): Promise<void> {
    const userId = this.#allowed(user.localpart);
    const body: Record<string, unknown> = { type: 'm.login.application_service', username: user.localpart, inhibit_login: true };
    // Conduit and its forks read a user without a password hash as deactivated (no push, is_guest): give one nobody knows.
    if (this.#options.flavour !== 'synapse' && this.#options.flavour !== 'dendrite') body['password'] = randomBytes(32).toString('base64url');
    const registered = await this.#api.call('register', 'POST', `${V3}/register`, { token: this.#options.asToken, body, idempotent: true });
    const exists = registered.status === 400 && errcodeOf(registered.body) === 'M_USER_IN_USE';
    if (!exists) this.#expect('register', registered);
    if (user.displayName !== undefined) {
      const path = `${V3}/profile/${encodeURIComponent(userId)}/displayname`;
      const profile = await this.#api.call('set display name', 'PUT', path, { token: this.#options.asToken, query: { user_id: userId }, body: { displayname: user.displayName }, idempotent: true });
      this.#expect('set display name', profile);
    }
  }

  async queryUser(localpart: string): Promise<HomeserverUser | undefined> {
    const userId = this.#userId(localpart);
    const response = await this.#api.call('profile', 'GET', `${V3}/profile/${encodeURIComponent(userId)}`, { token: this.#options.asToken, idempotent: true });
    if (response.status === 404) return undefined;
    this.#expect('profile', response);
    const displayName = isRecord(response.body) ? response.body['displayname'] : undefined;
    return { userId, ...(typeof displayName === 'string' && displayName !== '' ? { displayName } : {}), deactivated: false, suspended: false };
  }

  /** The device is made by login here; this only renames an existing one. */
  async upsertDevice(localpart: string, deviceId: string, displayName?: string): Promise<void> {
    if (displayName === undefined) return;
    const userId = this.#userId(localpart);
    const response = await this.#api.call('rename device', 'PUT', `${V3}/devices/${encodeURIComponent(deviceId)}`, {
      token: this.#options.asToken,
      query: { user_id: userId },
      body: { display_name: displayName },
      idempotent: true,
    });
    if (response.status === 404) return;
    this.#expect('rename device', response);
  }

  async deleteDevice(localpart: string, deviceId: string): Promise<void> {
    if (this.#options.flavour !== 'synapse') {
      // Dendrite asks the appservice for UIA, Conduit answers 500: the device's own token is the only way (logout).
      this.#log.warn({ event: 'homeserver.device_delete.unsupported', localpart, device_id: deviceId, flavour: this.#options.flavour }, 'device deletion without its token is not possible on this homeserver');
      return;
    }
    const response = await this.#api.call('delete device', 'DELETE', `${V3}/devices/${encodeURIComponent(deviceId)}`, {
      token: this.#options.asToken,
      query: { user_id: this.#userId(localpart) },
      body: {},
      idempotent: true,
    });
    if (response.status === 404) return;
    this.#expect('delete device', response);
  }

  async syncDevices(localpart: string, deviceIds: readonly string[]): Promise<void> {
    if (this.#options.flavour !== 'synapse') throw new HomeserverError('permanent', `device reconciliation is not possible on ${this.#options.flavour} with an appservice`);
    const userId = this.#userId(localpart);
    const listed = await this.#api.call('list devices', 'GET', `${V3}/devices`, { token: this.#options.asToken, query: { user_id: userId }, idempotent: true });
    this.#expect('list devices', listed);
    const devices = isRecord(listed.body) && Array.isArray(listed.body['devices']) ? listed.body['devices'] : [];
    for (const device of devices) {
      const id = isRecord(device) && typeof device['device_id'] === 'string' ? device['device_id'] : undefined;
      if (id !== undefined && !deviceIds.includes(id)) await this.deleteDevice(localpart, id);
    }
  }

  async login(localpart: string, deviceId: string, displayName?: string): Promise<string> {
    const userId = this.#allowed(localpart);
    const response = await this.#api.call('appservice login', 'POST', `${V3}/login`, {
      token: this.#options.asToken,
      body: {
        type: 'm.login.application_service',
        identifier: { type: 'm.id.user', user: userId },
        device_id: deviceId,
        ...(displayName === undefined ? {} : { initial_device_display_name: displayName }),
      },
    });
    if (response.status === 403 && errcodeOf(response.body) === 'M_USER_DEACTIVATED') throw new UserNotAllowed(userId, 'deactivated at the homeserver');
    if (response.status === 403 && errcodeOf(response.body) === 'M_USER_LOCKED') throw new UserNotAllowed(userId, 'locked at the homeserver');
    this.#expect('appservice login', response);
    const token = isRecord(response.body) ? response.body['access_token'] : undefined;
    if (typeof token !== 'string' || token === '') throw new HomeserverError('permanent', 'appservice login: no access_token in the answer');
    return token;
  }

  async isLive(token: string, localpart: string, deviceId: string): Promise<boolean> {
    const response = await this.#api.call('whoami', 'GET', `${V3}/account/whoami`, { token, idempotent: true });
    if (response.status === 401) return false;
    this.#expect('whoami', response);
    return isRecord(response.body) && response.body['user_id'] === this.#userId(localpart) && response.body['device_id'] === deviceId;
  }

  async logout(localpart: string, deviceId: string, token: string): Promise<void> {
    // The device's own token works on every homeserver, and deletes the device with it (Synapse, Dendrite, Conduit).
    const response = await this.#api.call('logout', 'POST', `${V3}/logout`, { token, body: {}, idempotent: true });
    if (response.status === 401) {
      // The token is gone already (logout/all, an admin); on Synapse the device may not be: remove it too.
      await this.deleteDevice(localpart, deviceId);
      return;
    }
    this.#expect('logout', response);
  }

  async allowCrossSigningReset(): Promise<void> {
    throw onlyWithDelegatedAuth('approving a cross-signing reset');
  }

  async listDevices(): Promise<HomeserverDevice[]> {
    throw onlyWithDelegatedAuth("reading the homeserver's device list for the account page");
  }

  async logoutAll(localpart: string): Promise<void> {
    const response = await this.#api.call('logout all', 'POST', `${V3}/logout/all`, { token: this.#options.asToken, query: { user_id: this.#userId(localpart) }, body: {}, idempotent: true });
    this.#expect('logout all', response);
  }

  async setLocked(localpart: string, locked: boolean): Promise<boolean> {
    return setLockedWithAdminToken(this.#api, this.#options, this.#userId(localpart), locked);
  }

  #userId(localpart: string): string {
    return `@${localpart}:${this.#options.serverName}`;
  }

  #allowed(localpart: string): string {
    return this.#options.policy.allowedUserId(localpart, this.#options.serverName, this.#log);
  }

  #expect(what: string, response: ClientApiResponse): void {
    if (response.status >= 200 && response.status < 300) return;
    throw statusError(what, response);
  }
}

/**
 * Synapse's reversible lock (admin API `PUT /_synapse/admin/v2/users/<id>`, `locked`), which tuwunel implements too:
 * it stops tokens the proxy never saw. Other homeservers have no lock reachable this way.
 */
export async function setLockedWithAdminToken(
  api: ClientApi,
  options: { readonly flavour: HomeserverFlavour; readonly adminToken?: string },
  userId: string,
  locked: boolean,
): Promise<boolean> {
  if (options.adminToken === undefined || (options.flavour !== 'synapse' && options.flavour !== 'tuwunel')) return false;
  const response = await api.call(locked ? 'lock' : 'unlock', 'PUT', `/_synapse/admin/v2/users/${encodeURIComponent(userId)}`, {
    token: options.adminToken,
    body: { locked },
    idempotent: true,
  });
  if (response.status < 200 || response.status >= 300) throw statusError(locked ? 'lock' : 'unlock', response);
  return true;
}

import { createSecretKey, createPrivateKey, randomUUID, type KeyObject } from 'node:crypto';
import { SignJWT } from 'jose';
import type { Logger } from 'pino';
import { setLockedWithAdminToken, type HomeserverFlavour } from './appservice.js';
import { ClientApi, errcodeOf, isRecord, statusError, type ClientApiResponse } from './client-api.js';
import { HomeserverError, UserNotAllowed, onlyWithDelegatedAuth, type HomeserverAdapter, type HomeserverDevice, type HomeserverTokens, type HomeserverUser, type ProvisionedUser } from './homeserver-adapter.js';
import type { UserPolicy } from './user-policy.js';

export interface JwtLoginSettings {
  readonly key: string;
  readonly algorithm: string;
  readonly issuer?: string | undefined;
  readonly audience?: string | undefined;
  readonly subject_claim: string;
  readonly display_name_claim: string;
  /** Milliseconds. */
  readonly lifetime: number;
}

export interface JwtLoginBackendOptions {
  readonly baseUrl: string;
  readonly serverName: string;
  readonly flavour: HomeserverFlavour;
  readonly jwt: JwtLoginSettings;
  readonly policy: UserPolicy;
  readonly adminToken?: string;
  readonly timeoutMs: number;
  readonly logger: Logger;
}

const V3 = '/_matrix/client/v3';
/** Display names handed from provisioning to the login of the same request; bounded, in case a login never follows. */
const MAX_PENDING_NAMES = 1_000;

/**
 * The JWT backend: `org.matrix.login.jwt` (Synapse `jwt_config`, tuwunel `[global.jwt]`), for admins who will not
 * grant a namespace-wide appservice. The homeserver creates the user at the first login and takes the display name
 * from the token then (Synapse: only then). Without an appservice there is no way to act for a user except with a
 * token of theirs: logout/all logs a fresh device in and calls /logout/all with it.
 */
export class JwtLoginBackend implements HomeserverAdapter, HomeserverTokens {
  readonly tokens: HomeserverTokens = this;
  readonly #api: ClientApi;
  readonly #options: JwtLoginBackendOptions;
  readonly #key: KeyObject;
  readonly #log: Logger;
  readonly #pendingDisplayNames = new Map<string, string>();

  constructor(options: JwtLoginBackendOptions) {
    this.#options = options;
    this.#log = options.logger.child({ component: 'jwt-backend' });
    this.#api = new ClientApi({ baseUrl: options.baseUrl, timeoutMs: options.timeoutMs, logger: this.#log });
    this.#key = options.jwt.algorithm.startsWith('HS') ? createSecretKey(Buffer.from(options.jwt.key, 'utf8')) : createPrivateKey(options.jwt.key);
  }

  async provisionUser(user: ProvisionedUser): Promise<void> {
    this.#allowed(user.localpart);
    // The homeserver creates the user at its first JWT login, with the display name carried in the token.
    if (user.displayName === undefined) return;
    if (this.#pendingDisplayNames.size >= MAX_PENDING_NAMES) this.#pendingDisplayNames.clear();
    this.#pendingDisplayNames.set(user.localpart, user.displayName);
  }

  async queryUser(localpart: string): Promise<HomeserverUser | undefined> {
    const userId = this.#userId(localpart);
    // Profile lookups need no token on Synapse by default (require_auth_for_profile_requests: false).
    const response = await this.#api.call('profile', 'GET', `${V3}/profile/${encodeURIComponent(userId)}`, { idempotent: true });
    if (response.status === 404) return undefined;
    expect('profile', response);
    const displayName = isRecord(response.body) ? response.body['displayname'] : undefined;
    return { userId, ...(typeof displayName === 'string' && displayName !== '' ? { displayName } : {}), deactivated: false, suspended: false };
  }

  /** Devices are made by login; renaming needs the device's own token, which the swap path does not spend on this. */
  async upsertDevice(): Promise<void> {}

  async deleteDevice(localpart: string, deviceId: string): Promise<void> {
    if (this.#options.adminToken === undefined) {
      this.#log.warn({ event: 'homeserver.device_delete.unsupported', localpart, device_id: deviceId }, 'device deletion without its token needs homeserver.admin_token');
      return;
    }
    const path = `/_synapse/admin/v2/users/${encodeURIComponent(this.#userId(localpart))}/devices/${encodeURIComponent(deviceId)}`;
    const response = await this.#api.call('delete device', 'DELETE', path, { token: this.#options.adminToken, idempotent: true });
    if (response.status === 404) return;
    expect('delete device', response);
  }

  async syncDevices(): Promise<void> {
    throw new HomeserverError('permanent', 'device reconciliation is not possible with the JWT backend');
  }

  async login(localpart: string, deviceId: string, displayName?: string): Promise<string> {
    const userId = this.#allowed(localpart);
    const profileName = this.#pendingDisplayNames.get(localpart);
    this.#pendingDisplayNames.delete(localpart);
    const { jwt } = this.#options;
    const now = Math.floor(Date.now() / 1000);
    let builder = new SignJWT({ [jwt.subject_claim]: localpart, ...(profileName === undefined ? {} : { [jwt.display_name_claim]: profileName }) })
      .setProtectedHeader({ alg: jwt.algorithm, typ: 'JWT' })
      .setIssuedAt(now)
      .setNotBefore(now - 5)
      .setExpirationTime(now + Math.max(1, Math.round(jwt.lifetime / 1000)))
      .setJti(randomUUID());
    if (jwt.issuer !== undefined) builder = builder.setIssuer(jwt.issuer);
    if (jwt.audience !== undefined) builder = builder.setAudience(jwt.audience);
    const token = await builder.sign(this.#key);
    const response = await this.#api.call('jwt login', 'POST', `${V3}/login`, {
      body: { type: 'org.matrix.login.jwt', token, device_id: deviceId, ...(displayName === undefined ? {} : { initial_device_display_name: displayName }) },
    });
    if (response.status === 403 && errcodeOf(response.body) === 'M_USER_DEACTIVATED') throw new UserNotAllowed(userId, 'deactivated at the homeserver');
    if (response.status === 403 && errcodeOf(response.body) === 'M_USER_LOCKED') throw new UserNotAllowed(userId, 'locked at the homeserver');
    expect('jwt login', response);
    const accessToken = isRecord(response.body) ? response.body['access_token'] : undefined;
    if (typeof accessToken !== 'string' || accessToken === '') throw new HomeserverError('permanent', 'jwt login: no access_token in the answer');
    return accessToken;
  }

  async isLive(token: string, localpart: string, deviceId: string): Promise<boolean> {
    const response = await this.#api.call('whoami', 'GET', `${V3}/account/whoami`, { token, idempotent: true });
    if (response.status === 401) return false;
    expect('whoami', response);
    return isRecord(response.body) && response.body['user_id'] === this.#userId(localpart) && response.body['device_id'] === deviceId;
  }

  async logout(localpart: string, deviceId: string, token: string): Promise<void> {
    const response = await this.#api.call('logout', 'POST', `${V3}/logout`, { token, body: {}, idempotent: true });
    if (response.status === 401) return this.deleteDevice(localpart, deviceId);
    expect('logout', response);
  }

  async allowCrossSigningReset(): Promise<void> {
    throw onlyWithDelegatedAuth('approving a cross-signing reset');
  }

  async listDevices(): Promise<HomeserverDevice[]> {
    throw onlyWithDelegatedAuth("reading the homeserver's device list for the account page");
  }

  async logoutAll(localpart: string): Promise<void> {
    // Any token of the user may end all of them; a fresh device's is the one we can make (it dies with the rest).
    const token = await this.login(localpart, `MCPLOGOUT${randomUUID().slice(0, 8).toUpperCase()}`);
    const response = await this.#api.call('logout all', 'POST', `${V3}/logout/all`, { token, body: {}, idempotent: true });
    expect('logout all', response);
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
}

function expect(what: string, response: ClientApiResponse): void {
  if (response.status >= 200 && response.status < 300) return;
  throw statusError(what, response);
}

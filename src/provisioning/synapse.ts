import type { Logger } from 'pino';
import { outboundRequest, type OutboundAnswer } from '../outbound/http-client.js';
import { answerBody, describeFetchError, isRecord } from './client-api.js';
import { HomeserverError, type HomeserverAdapter, type HomeserverDevice, type HomeserverUser, type ProvisionedUser } from './homeserver-adapter.js';

export interface SynapseProvisioningOptions {
  /** Synapse's base URL (the one serving `/_synapse/mas/*`). */
  readonly baseUrl: string;
  /** `matrix_authentication_service.secret` of Synapse's config. */
  readonly secret: string;
  /**
   * During a rotation (`homeserver.previous_secrets`): secrets tried, in order, when Synapse refuses the one in use
   * (403); the one it accepts is used from then on, so each replica follows Synapse through the change on its own.
   */
  readonly previousSecrets?: readonly string[];
  /** Budget of one adapter call, retries included; each attempt gets what is left of it. */
  readonly timeoutMs: number;
  readonly logger: Logger;
  /** Further attempts after a transient failure (default 3). */
  readonly retries?: number;
  /** First back-off delay; doubles per retry, with jitter (default 100 ms). */
  readonly retryBaseDelayMs?: number;
}

type MasEndpoint = 'provision_user' | 'query_user' | 'upsert_device' | 'delete_device' | 'sync_devices' | 'allow_cross_signing_reset';

interface MasResponse {
  readonly status: number;
  readonly body: unknown;
}

const DEFAULT_RETRIES = 3;
const DEFAULT_RETRY_BASE_DELAY_MS = 100;
const MAX_RETRY_DELAY_MS = 2_000;

/**
 * The homeserver adapter for Synapse with `matrix_authentication_service` enabled: a client of the provisioning API
 * Synapse serves to MAS under `/_synapse/mas/*` (synapse/rest/synapse/mas/{users,devices}.py), authenticated with
 * the shared secret as a Bearer token.
 *
 * Every call is idempotent on Synapse's side (create-or-update, delete, reconcile), so transient failures (network,
 * timeout, 5xx, 429) are retried with exponential back-off and jitter; a 4xx is final.
 */
export class SynapseProvisioning implements HomeserverAdapter {
  readonly #baseUrl: string;
  readonly #secrets: readonly string[];
  /** Index into #secrets of the secret Synapse accepted last. */
  #secretInUse = 0;
  readonly #timeoutMs: number;
  readonly #logger: Logger;
  readonly #retries: number;
  readonly #retryBaseDelayMs: number;

  constructor(options: SynapseProvisioningOptions) {
    this.#baseUrl = options.baseUrl.replace(/\/+$/, '');
    this.#secrets = [options.secret, ...(options.previousSecrets ?? []).filter((secret) => secret !== options.secret)];
    this.#timeoutMs = options.timeoutMs;
    this.#logger = options.logger.child({ component: 'synapse-provisioning' });
    this.#retries = options.retries ?? DEFAULT_RETRIES;
    this.#retryBaseDelayMs = options.retryBaseDelayMs ?? DEFAULT_RETRY_BASE_DELAY_MS;
  }

  async provisionUser(user: ProvisionedUser): Promise<void> {
    // Fields left out stay as they are in Synapse; `set_*` replaces (set_emails replaces the whole list).
    const body: Record<string, unknown> = { localpart: user.localpart };
    if (user.displayName !== undefined) body['set_displayname'] = user.displayName;
    if (user.avatarUrl !== undefined) body['set_avatar_url'] = user.avatarUrl;
    if (user.emails !== undefined) body['set_emails'] = [...user.emails];
    const response = await this.#call('provision_user', 'POST', body);
    this.#expectSuccess('provision_user', response);
  }

  async queryUser(localpart: string): Promise<HomeserverUser | undefined> {
    const response = await this.#call('query_user', 'GET', undefined, new URLSearchParams({ localpart }));
    if (isUnknownUser(response)) return undefined;
    this.#expectSuccess('query_user', response);
    return parseQueryUser(response.body);
  }

  async upsertDevice(localpart: string, deviceId: string, displayName?: string): Promise<void> {
    const body: Record<string, unknown> = { localpart, device_id: deviceId };
    if (displayName !== undefined) body['display_name'] = displayName;
    const response = await this.#call('upsert_device', 'POST', body);
    this.#expectSuccess('upsert_device', response);
  }

  async deleteDevice(localpart: string, deviceId: string): Promise<void> {
    const response = await this.#call('delete_device', 'POST', { localpart, device_id: deviceId });
    // A user Synapse never heard of has no device to delete: the goal (no such device) holds.
    if (isUnknownUser(response)) return;
    this.#expectSuccess('delete_device', response);
  }

  async syncDevices(localpart: string, deviceIds: readonly string[]): Promise<void> {
    const response = await this.#call('sync_devices', 'POST', { localpart, devices: [...deviceIds] });
    // Same reasoning as deleteDevice, but only when the wanted list is empty: devices of an unknown user
    // cannot be created, so a non-empty list is a real failure.
    if (deviceIds.length === 0 && isUnknownUser(response)) return;
    this.#expectSuccess('sync_devices', response);
  }

  async allowCrossSigningReset(localpart: string): Promise<void> {
    // synapse/rest/synapse/mas/users.py MasAllowCrossSigningResetResource: 10 minutes; no master key yet is a no-op.
    const response = await this.#call('allow_cross_signing_reset', 'POST', { localpart });
    this.#expectSuccess('allow_cross_signing_reset', response);
  }

  async listDevices(userAccessToken: string): Promise<HomeserverDevice[]> {
    // The client API, as the user: Synapse has no device list under /_synapse/mas (the admin API would need an admin
    // token). One attempt: a page render, not a state change, so a failure is shown rather than retried.
    let response: OutboundAnswer;
    try {
      response = await outboundRequest(`${this.#baseUrl}/_matrix/client/v3/devices`, {
        headers: { authorization: `Bearer ${userAccessToken}`, accept: 'application/json' },
        timeoutMs: this.#timeoutMs,
        redirect: 'error',
      });
    } catch (error) {
      throw new HomeserverError('transient', `devices: Synapse unreachable (${describeFetchError(error)})`, { cause: error });
    }
    const body = answerBody(response.body);
    if (response.status < 200 || response.status >= 300) {
      throw new HomeserverError(isTransientStatus(response.status) ? 'transient' : 'permanent', `devices: Synapse answered ${response.status}${errcodeOf(body) === undefined ? '' : ` ${errcodeOf(body)}`}`, { status: response.status });
    }
    const devices = isRecord(body) && Array.isArray(body['devices']) ? body['devices'] : [];
    return devices.filter(isRecord).flatMap((device): HomeserverDevice[] => {
      const deviceId = device['device_id'];
      if (typeof deviceId !== 'string') return [];
      const displayName = device['display_name'];
      const lastSeenTs = device['last_seen_ts'];
      const lastSeenIp = device['last_seen_ip'];
      return [
        {
          deviceId,
          ...(typeof displayName === 'string' ? { displayName } : {}),
          ...(typeof lastSeenTs === 'number' ? { lastSeenTs } : {}),
          ...(typeof lastSeenIp === 'string' ? { lastSeenIp } : {}),
        },
      ];
    });
  }

  /** One adapter call: attempts until a final answer, the retry budget, or the time budget runs out. */
  async #call(endpoint: MasEndpoint, method: 'GET' | 'POST', body: unknown, query?: URLSearchParams): Promise<MasResponse> {
    const deadline = performance.now() + this.#timeoutMs;
    for (let attempt = 0; ; attempt += 1) {
      const remaining = deadline - performance.now();
      let failure: HomeserverError;
      let retryAfterMs: number | undefined;
      try {
        const response = await this.#attempt(endpoint, method, body, query, Math.max(1, Math.floor(remaining)));
        if (!isTransientStatus(response.status)) return response;
        failure = statusError(endpoint, response);
        retryAfterMs = response.status === 429 ? retryAfterFrom(response) : undefined;
      } catch (error) {
        failure = new HomeserverError('transient', `${endpoint}: Synapse unreachable (${describeFetchError(error)})`, { cause: error });
      }
      const delay = retryAfterMs ?? this.#backoff(attempt);
      const timeLeft = deadline - performance.now();
      if (attempt >= this.#retries || delay >= timeLeft) {
        this.#logger.error({ event: 'homeserver.provisioning.failed', endpoint, attempts: attempt + 1, err: failure }, failure.message);
        throw failure;
      }
      this.#logger.warn(
        { event: 'homeserver.provisioning.retry', endpoint, attempt: attempt + 1, delayMs: Math.round(delay), status: failure.status },
        failure.message,
      );
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }

  async #attempt(
    endpoint: MasEndpoint,
    method: 'GET' | 'POST',
    body: unknown,
    query: URLSearchParams | undefined,
    timeoutMs: number,
  ): Promise<MasResponse & { retryAfter: string | undefined }> {
    const url = `${this.#baseUrl}/_synapse/mas/${endpoint}${query === undefined ? '' : `?${query.toString()}`}`;
    const inUse = this.#secretInUse;
    // One budget for the attempt, whichever secrets it tries.
    const deadline = Date.now() + timeoutMs;
    const left = () => Math.max(1, deadline - Date.now());
    const first = await this.#send(url, method, body, left(), this.#secrets[inUse] ?? '');
    if (first.status !== 403 || this.#secrets.length === 1) return first;
    // Synapse refuses the secret in use: a rotation may be under way (synapse/rest/synapse/mas/_base.py answers 403
    // to a wrong secret, before doing anything, so sending again is safe for every endpoint).
    for (const [index, secret] of this.#secrets.entries()) {
      if (index === inUse) continue;
      const retried = await this.#send(url, method, body, left(), secret);
      if (retried.status === 403) continue;
      this.#secretInUse = index;
      this.#logger.warn(
        { event: 'homeserver.secret.switched', secret: index === 0 ? 'homeserver.secret' : `homeserver.previous_secrets[${index - 1}]` },
        'Synapse refused the shared secret in use and accepted another configured one (a rotation in progress?)',
      );
      return retried;
    }
    return first;
  }

  async #send(url: string, method: 'GET' | 'POST', body: unknown, timeoutMs: number, secret: string): Promise<MasResponse & { retryAfter: string | undefined }> {
    const headers: Record<string, string> = { authorization: `Bearer ${secret}`, accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const response = await outboundRequest(url, {
      method,
      headers,
      // Every /_synapse/mas call is safe to repeat (upserts, deletes, queries; see the retry loop above).
      idempotent: true,
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      timeoutMs,
      redirect: 'error',
    });
    return { status: response.status, body: answerBody(response.body), retryAfter: response.headers['retry-after'] };
  }

  #backoff(attempt: number): number {
    const ceiling = Math.min(MAX_RETRY_DELAY_MS, this.#retryBaseDelayMs * 2 ** attempt);
    // "Equal jitter": at least half the step, so retries never bunch up at zero, spread over the other half.
    return ceiling / 2 + Math.random() * (ceiling / 2);
  }

  #expectSuccess(endpoint: MasEndpoint, response: MasResponse): void {
    if (response.status >= 200 && response.status < 300) return;
    const error = statusError(endpoint, response);
    this.#logger.error({ event: 'homeserver.provisioning.failed', endpoint, status: response.status, err: error }, error.message);
    throw error;
  }
}

function isTransientStatus(status: number): boolean {
  return status >= 500 || status === 429;
}

/**
 * Synapse's "User not found" (404 M_NOT_FOUND). A 404 with another errcode (M_UNRECOGNIZED: no `/_synapse/mas`
 * at all, MAS integration off) is a misconfiguration, not an unknown user.
 */
function isUnknownUser(response: MasResponse): boolean {
  return response.status === 404 && errcodeOf(response.body) === 'M_NOT_FOUND';
}

function statusError(endpoint: MasEndpoint, response: MasResponse): HomeserverError {
  const errcode = errcodeOf(response.body);
  const detail = errorTextOf(response.body);
  let hint = '';
  if (response.status === 401 || response.status === 403) {
    hint = ' (does homeserver.secret match matrix_authentication_service.secret in homeserver.yaml?)';
  } else if (response.status === 404 && errcode === 'M_UNRECOGNIZED') {
    hint = ' (is matrix_authentication_service enabled in homeserver.yaml?)';
  }
  const kind = isTransientStatus(response.status) ? 'transient' : 'permanent';
  const message = `${endpoint}: Synapse answered ${response.status}${errcode === undefined ? '' : ` ${errcode}`}${detail === undefined ? '' : `: ${detail}`}${hint}`;
  return new HomeserverError(kind, message, { status: response.status, ...(detail === undefined ? {} : { detail }) });
}

function errcodeOf(body: unknown): string | undefined {
  return isRecord(body) && typeof body['errcode'] === 'string' ? body['errcode'] : undefined;
}

function errorTextOf(body: unknown): string | undefined {
  if (isRecord(body) && typeof body['error'] === 'string') return body['error'].slice(0, 300);
  return typeof body === 'string' && body !== '' ? body : undefined;
}

/** Matrix 429s carry retry_after_ms (and maybe Retry-After); honour it within reason. */
function retryAfterFrom(response: MasResponse & { retryAfter: string | undefined }): number | undefined {
  const fromBody = isRecord(response.body) ? response.body['retry_after_ms'] : undefined;
  if (typeof fromBody === 'number' && Number.isFinite(fromBody) && fromBody >= 0) return Math.min(fromBody, MAX_RETRY_DELAY_MS);
  const header = Number(response.retryAfter);
  if (Number.isFinite(header) && header > 0) return Math.min(header * 1000, MAX_RETRY_DELAY_MS);
  return undefined;
}

function parseQueryUser(body: unknown): HomeserverUser {
  if (!isRecord(body) || typeof body['user_id'] !== 'string') {
    throw new HomeserverError('permanent', 'query_user: Synapse answered without a user_id');
  }
  const displayName = body['display_name'];
  return {
    userId: body['user_id'],
    ...(typeof displayName === 'string' && displayName !== '' ? { displayName } : {}),
    deactivated: body['is_deactivated'] === true,
    suspended: body['is_suspended'] === true,
  };
}

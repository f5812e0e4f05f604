import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Clock } from '../../src/clock.js';
import { systemClock } from '../../src/clock.js';

/**
 * A small stand-in for current Synapse with `matrix_authentication_service` enabled, for the parts the proxy
 * touches: the `/_synapse/mas/*` provisioning API and token checks through the auth service's introspection.
 * Also `GET /_matrix/client/v1/auth_metadata` (the auth service's metadata, fetched lazily and kept like Synapse
 * does) and `/_matrix/client/versions`. Its behaviour was taken from Synapse 1.163 (synapse/rest/synapse/mas/*.py, synapse/api/auth/mas.py) and is
 * proven against the real thing by the shared checks in test/interop/synapse-provisioning.test.ts.
 *
 * Deliberate differences: validation error texts are shorter than pydantic's (status and errcode match); any
 * client path it does not model answers, once authenticated, 200 `{user_id, device_id, method, path}` so
 * pass-through tests can see who Synapse took the caller for (real Synapse answers 404 M_UNRECOGNIZED for unknown
 * paths). Not modelled: appservices, guests, rooms.
 */
export interface HomeserverDoubleOptions {
  /** `matrix_authentication_service.endpoint`: where introspection goes. */
  readonly masEndpoint: string;
  /** `matrix_authentication_service.secret`. */
  readonly secret: string;
  readonly serverName: string;
  /** Drives the 2-minute introspection cache and `expires_in`; default the system clock. */
  readonly clock?: Clock;
}

export interface DoubleUser {
  readonly localpart: string;
  displayName: string | null;
  avatarUrl: string | null;
  emails: string[];
  locked: boolean;
  deactivated: boolean;
  suspended: boolean;
}

export interface DoubleDevice {
  readonly deviceId: string;
  displayName: string | null;
  lastSeenTs: number | null;
  lastSeenIp: string | null;
}

/** One request to `/_synapse/mas/*` as the double answered it. */
export interface ProvisioningCall {
  readonly endpoint: string;
  readonly method: string;
  readonly body: unknown;
  readonly status: number;
}

/** One introspection request the double sent to the auth service. */
export interface IntrospectionCall {
  readonly token: string;
  /** HTTP status of the answer; undefined when the request itself failed. */
  readonly status: number | undefined;
  readonly response?: unknown;
  readonly error?: string;
}

export interface HomeserverDouble {
  readonly url: string;
  readonly serverName: string;
  /** By localpart; tests may add or edit users directly. */
  readonly users: Map<string, DoubleUser>;
  /** The user's devices by device id (an empty map for unknown users). */
  devices(localpart: string): ReadonlyMap<string, DoubleDevice>;
  readonly calls: ProvisioningCall[];
  readonly introspections: IntrospectionCall[];
  /** Every request that reached the double, as `METHOD raw-target` (what the proxy passed through). */
  readonly requestsSeen: string[];
  /**
   * The next `times` calls to `endpoint` ('*' = any) under /_synapse/mas answer `status` (errcode M_UNKNOWN) without
   * doing anything. Replaces what was pending for that endpoint; `times` 0 clears it.
   */
  failProvisioning(endpoint: string, status: number, times?: number): void;
  /**
   * The next call to `endpoint` under /_synapse/mas waits, once it arrived, until `release` is called, then is
   * handled as usual: `reached` resolves when it arrived (a test acts while the proxy waits for the homeserver).
   */
  holdProvisioning(endpoint: string): { readonly reached: Promise<void>; release(): void };
  /** Drops every cached introspection result (as a Synapse restart would). */
  forgetIntrospections(): void;
  stop(): Promise<void>;
}

// synapse/api/auth/mas.py
const STABLE_API_SCOPE = 'urn:matrix:client:api:*';
const UNSTABLE_API_SCOPE = 'urn:matrix:org.matrix.msc2967.client:api:*';
const STABLE_DEVICE_PREFIX = 'urn:matrix:client:device:';
const UNSTABLE_DEVICE_PREFIX = 'urn:matrix:org.matrix.msc2967.client:device:';
const INTROSPECTION_CACHE_MS = 2 * 60 * 1000;
const CROSS_SIGNING_REPLACEMENT_MS = 10 * 60 * 1000;
const INTROSPECTION_RESPONSE_LIMIT = 1024 * 1024;
// synapse/handlers/device.py, synapse/handlers/profile.py, synapse/api/constants.py
const MAX_DEVICE_DISPLAY_NAME_LEN = 100;
const MAX_DISPLAYNAME_LEN = 256;
const MAX_USERID_LENGTH = 255;
const LOCALPART_CHARACTERS = /^[a-z0-9._=\-/+]*$/;
const LEGACY_AUTH_PATHS = /^\/_matrix\/client\/(?:r0|v3|unstable)\/(?:login(?:\/.*)?|logout(?:\/all)?|refresh|delete_devices|account\/password(?:\/.*)?|account\/deactivate|account\/3pid(?:\/.*)?|register\/[^/]+\/requestToken)$/;
// synapse/rest/client/auth_metadata.py: unauthenticated, the auth service's metadata as Synapse fetched it.
const AUTH_METADATA_PATHS = new Set(['/_matrix/client/v1/auth_metadata', '/_matrix/client/unstable/org.matrix.msc2965/auth_metadata']);
const CLIENT_PATH = /^\/_matrix\/client\/(?:r0|v3|v1|unstable)(\/.*)$/;

class SynapseError extends Error {
  constructor(
    readonly status: number,
    readonly errcode: string,
    message: string,
    readonly extra: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

interface Introspection {
  readonly retrievedAtMs: number;
  readonly active: boolean;
  readonly scope: string | null;
  readonly username: string | null;
  readonly deviceId: string | null;
  readonly expiresIn: number | null;
}

interface CacheEntry {
  readonly result: Promise<Introspection>;
  settledAtMs?: number;
}

interface Requester {
  readonly userId: string;
  readonly localpart: string;
  readonly deviceId: string | null;
}

export async function startHomeserverDouble(options: HomeserverDoubleOptions): Promise<HomeserverDouble> {
  const clock = options.clock ?? systemClock;
  const introspectionUrl = `${options.masEndpoint.replace(/\/+$/, '')}/oauth2/introspect`;
  const metadataUrl = `${options.masEndpoint.replace(/\/+$/, '')}/.well-known/openid-configuration`;
  const users = new Map<string, DoubleUser>();
  const deviceTable = new Map<string, Map<string, DoubleDevice>>();
  /** Uploaded cross-signing keys per localpart (the body as sent) and until when a replacement needs no approval. */
  const signingKeys = new Map<string, { body: string; replaceableUntil: number }>();
  const calls: ProvisioningCall[] = [];
  const introspections: IntrospectionCall[] = [];
  const cache = new Map<string, CacheEntry>();
  const faults: { endpoint: string; status: number; times: number }[] = [];
  const holds: { endpoint: string; arrived: () => void; released: Promise<void> }[] = [];

  const userId = (localpart: string) => `@${localpart}:${options.serverName}`;
  const devicesOf = (localpart: string) => {
    let devices = deviceTable.get(localpart);
    if (devices === undefined) {
      devices = new Map();
      deviceTable.set(localpart, devices);
    }
    return devices;
  };
  const requireUser = (localpart: string): DoubleUser => {
    const user = users.get(localpart);
    if (user === undefined) throw new SynapseError(404, 'M_NOT_FOUND', 'User not found');
    return user;
  };

  // ------------------------------------------------------------------------------------ /_synapse/mas/*

  type MasHandler = (request: { query: URLSearchParams; body: () => Record<string, unknown> }) => [number, unknown];
  const str = { type: 'string', required: true } as const;
  const optStr = { type: 'string', required: false } as const;
  const optBool = { type: 'boolean', required: false } as const;

  const masApi: Record<string, { GET?: MasHandler; POST?: MasHandler }> = {
    query_user: {
      GET: ({ query }) => {
        const localpart = query.get('localpart');
        if (localpart === null) throw new SynapseError(400, 'M_MISSING_PARAM', "Missing string query parameter 'localpart'");
        const user = requireUser(localpart);
        return [200, {
          user_id: userId(localpart),
          display_name: user.displayName,
          avatar_url: user.avatarUrl,
          is_suspended: user.suspended,
          is_deactivated: user.deactivated,
        }];
      },
    },
    provision_user: {
      POST: ({ body }) => {
        const raw = body();
        for (const field of ['displayname', 'avatar_url', 'emails']) {
          if (`unset_${field}` in raw && `set_${field}` in raw) {
            throw new SynapseError(400, 'M_INVALID_PARAM', `Cannot specify both unset_${field} and set_${field}`);
          }
        }
        const input = validate(raw, {
          localpart: str,
          unset_displayname: optBool,
          set_displayname: optStr,
          unset_avatar_url: optBool,
          set_avatar_url: optStr,
          unset_emails: optBool,
          set_emails: { type: 'string[]', required: false },
          locked: optBool,
        });
        const localpart = input['localpart'] as string;
        // Synapse canonicalises each address (synapse/util/threepids.py canonicalise_email) and refuses what it
        // cannot parse: exactly one @ once trimmed.
        for (const email of (input['set_emails'] as string[] | undefined) ?? []) {
          if (email.trim().split('@').length !== 2) throw new SynapseError(400, 'M_INVALID_PARAM', 'Unable to parse email address');
        }
        let user = users.get(localpart);
        const created = user === undefined;
        if (user === undefined) {
          checkUsername(localpart, options.serverName, users);
          user = {
            localpart,
            // Synapse registers with the given display name, else the localpart.
            displayName: (input['set_displayname'] as string | undefined) ?? localpart,
            avatarUrl: null,
            emails: [...new Set((input['set_emails'] as string[] | undefined) ?? [])],
            locked: false,
            deactivated: false,
            suspended: false,
          };
          users.set(localpart, user);
        } else {
          if (input['unset_displayname'] === true) user.displayName = null;
          else if (typeof input['set_displayname'] === 'string') user.displayName = displayNameValue(input['set_displayname']);
          if (input['unset_emails'] === true) user.emails = [];
          else if (Array.isArray(input['set_emails'])) user.emails = [...new Set(input['set_emails'] as string[])];
        }
        if (typeof input['locked'] === 'boolean') user.locked = input['locked'];
        if (input['unset_avatar_url'] === true) user.avatarUrl = null;
        else if (typeof input['set_avatar_url'] === 'string') user.avatarUrl = input['set_avatar_url'] === '' ? null : input['set_avatar_url'];
        return [created ? 201 : 200, {}];
      },
    },
    is_localpart_available: {
      GET: ({ query }) => {
        const localpart = query.get('localpart');
        if (localpart === null) throw new SynapseError(400, 'M_UNKNOWN', 'Missing localpart');
        checkUsername(localpart, options.serverName, users);
        return [200, {}];
      },
    },
    delete_user: {
      POST: ({ body }) => {
        const input = validate(body(), { localpart: str, erase: { type: 'boolean', required: true } });
        const localpart = input['localpart'] as string;
        const user = requireUser(localpart);
        user.deactivated = true;
        user.emails = [];
        devicesOf(localpart).clear();
        if (input['erase'] === true) {
          user.displayName = null;
          user.avatarUrl = null;
        }
        return [200, {}];
      },
    },
    reactivate_user: {
      POST: ({ body }) => {
        const input = validate(body(), { localpart: str });
        requireUser(input['localpart'] as string).deactivated = false;
        return [200, {}];
      },
    },
    set_displayname: {
      POST: ({ body }) => {
        const input = validate(body(), { localpart: str, displayname: str });
        requireUser(input['localpart'] as string).displayName = displayNameValue(input['displayname'] as string);
        return [200, {}];
      },
    },
    unset_displayname: {
      POST: ({ body }) => {
        const input = validate(body(), { localpart: str });
        requireUser(input['localpart'] as string).displayName = null;
        return [200, {}];
      },
    },
    upsert_device: {
      POST: ({ body }) => {
        const input = validate(body(), { localpart: str, device_id: str, display_name: optStr });
        const localpart = input['localpart'] as string;
        requireUser(localpart);
        const displayName = (input['display_name'] as string | undefined) ?? null;
        checkDeviceNameLength(displayName);
        const devices = devicesOf(localpart);
        const deviceId = input['device_id'] as string;
        const existing = devices.get(deviceId);
        if (existing === undefined) {
          devices.set(deviceId, { deviceId, displayName, lastSeenTs: null, lastSeenIp: null });
          return [201, {}];
        }
        // A missing display name leaves the existing one alone.
        if (displayName !== null) existing.displayName = displayName;
        return [200, {}];
      },
    },
    delete_device: {
      POST: ({ body }) => {
        const input = validate(body(), { localpart: str, device_id: str });
        const localpart = input['localpart'] as string;
        requireUser(localpart);
        devicesOf(localpart).delete(input['device_id'] as string);
        return [204, undefined];
      },
    },
    update_device_display_name: {
      POST: ({ body }) => {
        const input = validate(body(), { localpart: str, device_id: str, display_name: str });
        const localpart = input['localpart'] as string;
        requireUser(localpart);
        checkDeviceNameLength(input['display_name'] as string);
        const device = devicesOf(localpart).get(input['device_id'] as string);
        if (device === undefined) throw new SynapseError(404, 'M_NOT_FOUND', 'Not found');
        device.displayName = input['display_name'] as string;
        return [200, {}];
      },
    },
    // synapse/rest/synapse/mas/users.py MasAllowCrossSigningResetResource: 10 minutes; no master key yet is a no-op.
    allow_cross_signing_reset: {
      POST: ({ body }) => {
        const input = validate(body(), { localpart: str });
        const localpart = input['localpart'] as string;
        requireUser(localpart);
        const keys = signingKeys.get(localpart);
        if (keys !== undefined) keys.replaceableUntil = clock.now() + CROSS_SIGNING_REPLACEMENT_MS;
        return [200, {}];
      },
    },
    sync_devices: {
      POST: ({ body }) => {
        const input = validate(body(), { localpart: str, devices: { type: 'string[]', required: true } });
        const localpart = input['localpart'] as string;
        requireUser(localpart);
        const wanted = new Set(input['devices'] as string[]);
        const devices = devicesOf(localpart);
        for (const deviceId of [...devices.keys()]) if (!wanted.has(deviceId)) devices.delete(deviceId);
        for (const deviceId of wanted) {
          if (!devices.has(deviceId)) devices.set(deviceId, { deviceId, displayName: null, lastSeenTs: null, lastSeenIp: null });
        }
        return [200, {}];
      },
    },
  };

  async function handleMas(req: IncomingMessage, res: ServerResponse, url: URL, endpoint: string): Promise<void> {
    const route = masApi[endpoint];
    if (route === undefined) {
      // A Twisted resource tree, not a JSON servlet: unknown children get Twisted's HTML 404.
      res.writeHead(404, { 'content-type': 'text/html; charset=utf-8' }).end('<html><body><h1>No Such Resource</h1></body></html>');
      return;
    }
    const rawBody = await readBody(req);
    const holdAt = holds.findIndex((hold) => hold.endpoint === endpoint);
    if (holdAt >= 0) {
      const [hold] = holds.splice(holdAt, 1);
      hold?.arrived();
      await hold?.released;
    }
    let parsedBody: unknown;
    let status: number;
    let payload: unknown;
    try {
      const handler = route[req.method as 'GET' | 'POST'];
      if (handler === undefined) throw new SynapseError(405, 'M_UNRECOGNIZED', 'Unrecognized request');
      const secret = accessToken(req, url);
      if (secret !== options.secret) throw new SynapseError(403, 'M_UNKNOWN', 'This endpoint must only be called by MAS');
      const fault = faults.find((candidate) => candidate.times > 0 && (candidate.endpoint === endpoint || candidate.endpoint === '*'));
      if (fault !== undefined) {
        fault.times -= 1;
        throw new SynapseError(fault.status, 'M_UNKNOWN', 'Injected failure');
      }
      [status, payload] = handler({
        query: url.searchParams,
        body: () => {
          parsedBody = parseJsonObject(rawBody);
          return parsedBody as Record<string, unknown>;
        },
      });
    } catch (error) {
      [status, payload] = errorResponse(error);
    }
    calls.push({ endpoint, method: req.method ?? '', body: parsedBody ?? tryParse(rawBody), status });
    sendJson(res, status, payload);
  }

  // ------------------------------------------------------------------------------------ client API

  let metadata: Promise<Record<string, unknown>> | undefined;
  /** Synapse's RetryOnExceptionCachedCall: fetched on first use, kept for the process lifetime, failures retried. */
  function serverMetadata(): Promise<Record<string, unknown>> {
    if (metadata === undefined) {
      const fetching = (async () => {
        const response = await fetch(metadataUrl, { headers: { accept: 'application/json' }, signal: AbortSignal.timeout(30_000) });
        if (!response.ok) throw new Error(`metadata answered ${response.status}`);
        const body = (await response.json()) as Record<string, unknown>;
        // synapse/api/auth/mas.py ServerMetadata: both strictly strings, other fields kept.
        if (typeof body['issuer'] !== 'string' || typeof body['account_management_uri'] !== 'string') {
          throw new Error('metadata lacks issuer or account_management_uri');
        }
        return body;
      })();
      metadata = fetching;
      fetching.catch(() => {
        if (metadata === fetching) metadata = undefined;
      });
    }
    return metadata;
  }

  async function introspect(token: string): Promise<Introspection> {
    let status: number | undefined;
    let parsed: unknown;
    try {
      const response = await fetch(introspectionUrl, {
        method: 'POST',
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          accept: 'application/json',
          authorization: `Bearer ${options.secret}`,
          // Synapse reads the device from `device_id` and says so (MAS 0.15+ then leaves it out of the scope).
          'x-mas-supports-device-id': '1',
        },
        body: new URLSearchParams({ token, token_type_hint: 'access_token' }).toString(),
        signal: AbortSignal.timeout(30_000),
      });
      status = response.status;
      const text = await response.text();
      if (text.length > INTROSPECTION_RESPONSE_LIMIT) throw new Error('introspection response too large');
      if (status < 200 || status >= 300) throw new Error(`introspection answered ${status}`);
      parsed = JSON.parse(text);
      const result = parseIntrospection(parsed, clock.now());
      introspections.push({ token, status, response: parsed });
      return result;
    } catch (error) {
      introspections.push({ token, status, response: parsed, error: error instanceof Error ? error.message : String(error) });
      throw error;
    }
  }

  /** Synapse's ResponseCache: concurrent lookups share one request; only valid answers stay, for 2 minutes. */
  async function cachedIntrospection(token: string): Promise<Introspection> {
    const cached = cache.get(token);
    if (cached !== undefined && (cached.settledAtMs === undefined || clock.now() - cached.settledAtMs < INTROSPECTION_CACHE_MS)) {
      return cached.result;
    }
    const entry: CacheEntry = { result: introspect(token) };
    cache.set(token, entry);
    try {
      await entry.result;
      entry.settledAtMs = clock.now();
    } catch {
      if (cache.get(token) === entry) cache.delete(token);
    }
    return entry.result;
  }

  /** synapse/api/auth/mas.py MasDelegatedAuth.get_user_by_access_token */
  async function authenticate(req: IncomingMessage, url: URL): Promise<Requester> {
    const token = accessToken(req, url);
    let result: Introspection;
    try {
      result = await cachedIntrospection(token);
    } catch {
      throw new SynapseError(503, 'M_UNKNOWN', 'Unable to introspect the access token');
    }
    const now = clock.now();
    const active = result.active && (result.expiresIn === null || now < result.retrievedAtMs + result.expiresIn * 1000);
    if (!active) throw new SynapseError(401, 'M_UNKNOWN_TOKEN', 'Token is not active', { soft_logout: false });
    const scopes = new Set((result.scope ?? '').split(' ').filter((scope) => scope !== ''));
    if (!scopes.has(STABLE_API_SCOPE) && !scopes.has(UNSTABLE_API_SCOPE)) {
      throw new SynapseError(401, 'M_UNKNOWN_TOKEN', "Token doesn't grant access to the Matrix C-S API", { soft_logout: false });
    }
    if (result.username === null) throw new SynapseError(500, 'M_FORBIDDEN', 'Invalid username claim in the introspection result');
    const localpart = result.username;
    // Users are never created on the fly: the auth service must have provisioned them.
    if (!users.has(localpart)) throw new SynapseError(500, 'M_FORBIDDEN', 'User not found');
    let deviceId = result.deviceId;
    if (deviceId === null) {
      const fromScope = new Set<string>();
      for (const scope of scopes) {
        if (scope.startsWith(UNSTABLE_DEVICE_PREFIX)) fromScope.add(scope.slice(UNSTABLE_DEVICE_PREFIX.length));
        else if (scope.startsWith(STABLE_DEVICE_PREFIX)) fromScope.add(scope.slice(STABLE_DEVICE_PREFIX.length));
      }
      if (fromScope.size > 1) throw new SynapseError(500, 'M_FORBIDDEN', 'Multiple device IDs in scope');
      deviceId = fromScope.values().next().value ?? null;
    }
    if (deviceId !== null) {
      if (deviceId.length < 1 || deviceId.length > 255) {
        throw new SynapseError(500, 'M_FORBIDDEN', 'Invalid device ID in introspection result');
      }
      const device = devicesOf(localpart).get(deviceId);
      if (device === undefined) {
        // The only invalidation Synapse has: logging out deletes the device, so its cached tokens die with it.
        cache.delete(token);
        throw new SynapseError(401, 'M_UNKNOWN_TOKEN', 'Token is not active', { soft_logout: false });
      }
      device.lastSeenTs = now;
      device.lastSeenIp = req.socket.remoteAddress?.replace(/^::ffff:/, '') ?? null;
    }
    return { userId: userId(localpart), localpart, deviceId };
  }

  async function handleClient(req: IncomingMessage, res: ServerResponse, url: URL, subPath: string): Promise<void> {
    const method = req.method ?? 'GET';
    const rawBody = await readBody(req);
    const requester = await authenticate(req, url);
    const deviceView = (device: DoubleDevice) => ({
      user_id: requester.userId,
      device_id: device.deviceId,
      display_name: device.displayName,
      last_seen_ts: device.lastSeenTs,
      last_seen_ip: device.lastSeenIp,
    });
    if (subPath === '/account/whoami' && method === 'GET') {
      sendJson(res, 200, { user_id: requester.userId, is_guest: false, ...(requester.deviceId === null ? {} : { device_id: requester.deviceId }) });
      return;
    }
    if (subPath === '/keys/device_signing/upload' && method === 'POST') {
      // synapse/rest/client/keys.py SigningKeyUploadServlet under delegated auth: the first upload needs nothing, the
      // same keys again are a no-op, a replacement needs the auth service's approval (allow_cross_signing_reset).
      const input = parseJsonObject(rawBody);
      const { auth: _auth, ...keys } = input;
      const serialised = JSON.stringify(keys);
      const existing = signingKeys.get(requester.localpart);
      if (existing !== undefined && existing.body !== serialised && clock.now() >= existing.replaceableUntil) {
        const url = `${String((await serverMetadata())['account_management_uri'])}?action=org.matrix.cross_signing_reset`;
        sendJson(res, 401, {
          session: 'dummy',
          flows: [{ stages: ['m.oauth'] }, { stages: ['org.matrix.cross_signing_reset'] }],
          params: { 'm.oauth': { url }, 'org.matrix.cross_signing_reset': { url } },
          msg: `To reset your end-to-end encryption cross-signing identity, you first need to approve it at ${url} and then try again.`,
        });
        return;
      }
      signingKeys.set(requester.localpart, { body: serialised, replaceableUntil: existing?.replaceableUntil ?? 0 });
      sendJson(res, 200, {});
      return;
    }
    if (subPath === '/devices' && method === 'GET') {
      sendJson(res, 200, { devices: [...devicesOf(requester.localpart).values()].map(deviceView) });
      return;
    }
    const deviceMatch = /^\/devices\/([^/]*)$/.exec(subPath);
    if (deviceMatch !== null) {
      const deviceId = decodeURIComponent(deviceMatch[1] ?? '');
      const device = devicesOf(requester.localpart).get(deviceId);
      if (method === 'GET') {
        if (device === undefined) throw new SynapseError(404, 'M_NOT_FOUND', 'Not found');
        sendJson(res, 200, deviceView(device));
        return;
      }
      if (method === 'PUT') {
        const input = validate(parseJsonObject(rawBody), { display_name: optStr });
        const displayName = (input['display_name'] as string | undefined) ?? null;
        checkDeviceNameLength(displayName);
        if (device === undefined) throw new SynapseError(404, 'M_NOT_FOUND', 'Not found');
        if (displayName !== null) device.displayName = displayName;
        sendJson(res, 200, {});
        return;
      }
      if (method === 'DELETE') {
        // Under delegated auth only appservices may delete devices here (MSC4190); users must go through MAS.
        throw new SynapseError(404, 'M_UNRECOGNIZED', 'Unrecognized request');
      }
    }
    sendJson(res, 200, { user_id: requester.userId, device_id: requester.deviceId, method, path: url.pathname });
  }

  const requestsSeen: string[] = [];
  const server = createServer((req, res) => {
    requestsSeen.push(`${req.method ?? 'GET'} ${req.url ?? '/'}`);
    const url = new URL(req.url ?? '/', 'http://double.invalid');
    const path = url.pathname;
    void (async () => {
      if (path === '/health') {
        res.writeHead(200, { 'content-type': 'text/plain' }).end('OK');
        return;
      }
      const mas = /^\/_synapse\/mas\/([^/]+)$/.exec(path);
      if (mas !== null) {
        await handleMas(req, res, url, mas[1] ?? '');
        return;
      }
      if (path === '/_matrix/client/versions' && req.method === 'GET') {
        sendJson(res, 200, { versions: ['r0.6.1', 'v1.1', 'v1.2', 'v1.3', 'v1.4', 'v1.5', 'v1.6', 'v1.7', 'v1.8', 'v1.9', 'v1.10', 'v1.11', 'v1.12', 'v1.13', 'v1.14', 'v1.15'], unstable_features: {} });
        return;
      }
      if (path === '/.well-known/matrix/client' && req.method === 'GET') {
        // Synapse with an auth service adds MSC2965's discovery key naming the auth service's issuer (seen on 1.163.2).
        const metadata = await serverMetadata().catch(() => ({}) as Record<string, unknown>);
        sendJson(res, 200, {
          'm.homeserver': { base_url: `http://127.0.0.1:${port}/` },
          'org.matrix.msc2965.authentication': { issuer: metadata['issuer'], account: metadata['account_management_uri'] },
        });
        return;
      }
      if (AUTH_METADATA_PATHS.has(path) && req.method === 'GET') {
        let body: Record<string, unknown>;
        try {
          body = await serverMetadata();
        } catch {
          throw new SynapseError(500, 'M_UNKNOWN', 'Internal server error');
        }
        res.setHeader('cache-control', 'public, max-age=600, s-maxage=3600, stale-while-revalidate=600');
        sendJson(res, 200, body);
        return;
      }
      if (path === '/_matrix/client/v3/register' || path === '/_matrix/client/r0/register') {
        // Only the appservice registration servlet stays registered under delegated auth.
        throw new SynapseError(403, 'M_FORBIDDEN', 'Registration has been disabled. Only m.login.application_service registrations are allowed.');
      }
      const client = CLIENT_PATH.exec(path);
      if (client === null || LEGACY_AUTH_PATHS.test(path)) throw new SynapseError(404, 'M_UNRECOGNIZED', 'Unrecognized request');
      await handleClient(req, res, url, client[1] ?? '');
    })().catch((error: unknown) => {
      const [status, payload] = errorResponse(error);
      if (!res.headersSent) sendJson(res, status, payload);
      else res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    requestsSeen,
    serverName: options.serverName,
    users,
    devices: (localpart) => deviceTable.get(localpart) ?? new Map(),
    calls,
    introspections,
    failProvisioning: (endpoint, status, times = 1) => {
      const index = faults.findIndex((fault) => fault.endpoint === endpoint);
      if (index >= 0) faults.splice(index, 1);
      if (times > 0) faults.push({ endpoint, status, times });
    },
    holdProvisioning: (endpoint) => {
      let arrived = () => {};
      let release = () => {};
      const reached = new Promise<void>((resolve) => (arrived = resolve));
      const released = new Promise<void>((resolve) => (release = resolve));
      holds.push({ endpoint, arrived, released });
      return { reached, release };
    },
    forgetIntrospections: () => cache.clear(),
    stop: () =>
      new Promise<void>((resolve, reject) => {
        server.close((error) => (error === undefined ? resolve() : reject(error)));
        server.closeAllConnections();
      }),
  };
}

// ---------------------------------------------------------------------------------------------------- helpers

/** synapse/api/auth/base.py get_access_token_from_request */
function accessToken(req: IncomingMessage, url: URL): string {
  const header = req.headersDistinct['authorization'];
  const fromQuery = url.searchParams.getAll('access_token');
  if (header !== undefined && header.length > 0) {
    if (fromQuery.length > 0) throw new SynapseError(401, 'M_MISSING_TOKEN', 'Mixing Authorization headers and access_token query parameters.');
    if (header.length > 1) throw new SynapseError(401, 'M_MISSING_TOKEN', 'Too many Authorization headers.');
    const parts = (header[0] ?? '').split(' ');
    if (parts[0] === 'Bearer' && parts.length === 2) return parts[1] ?? '';
    throw new SynapseError(401, 'M_MISSING_TOKEN', 'Invalid Authorization header.');
  }
  const token = fromQuery[0];
  if (token === undefined || token === '') throw new SynapseError(401, 'M_MISSING_TOKEN', 'Missing access token');
  return token;
}

/** synapse/api/auth/mas.py IntrospectionResponse: pydantic strict types; anything else is an introspection failure. */
function parseIntrospection(raw: unknown, retrievedAtMs: number): Introspection {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error('introspection answer is not an object');
  const record = raw as Record<string, unknown>;
  if (typeof record['active'] !== 'boolean') throw new Error('introspection answer lacks a boolean `active`');
  const optionalString = (name: string): string | null => {
    const value = record[name];
    if (value === undefined || value === null) return null;
    if (typeof value !== 'string') throw new Error(`introspection field ${name} is not a string`);
    return value;
  };
  const expiresIn = record['expires_in'];
  if (expiresIn !== undefined && expiresIn !== null && !Number.isInteger(expiresIn)) throw new Error('expires_in is not an integer');
  optionalString('sub');
  return {
    retrievedAtMs,
    active: record['active'],
    scope: optionalString('scope'),
    username: optionalString('username'),
    deviceId: optionalString('device_id'),
    expiresIn: (expiresIn as number | null | undefined) ?? null,
  };
}

type FieldSpec = { readonly type: 'string' | 'boolean' | 'string[]'; readonly required: boolean };

/** Synapse's strict pydantic body models (unknown fields ignored). One missing field: M_MISSING_PARAM; else M_BAD_JSON. */
function validate(body: Record<string, unknown>, fields: Record<string, FieldSpec>): Record<string, unknown> {
  const problems: { field: string; kind: 'missing' | 'type' }[] = [];
  for (const [field, spec] of Object.entries(fields)) {
    const value = body[field];
    if (value === undefined) {
      if (spec.required) problems.push({ field, kind: 'missing' });
      continue;
    }
    // Optional fields are `X | None`: null is accepted and means "not given".
    if (value === null && !spec.required) continue;
    const ok =
      spec.type === 'string[]'
        ? Array.isArray(value) && value.every((item) => typeof item === 'string')
        : typeof value === spec.type;
    if (!ok) problems.push({ field, kind: 'type' });
  }
  if (problems.length === 0) {
    return Object.fromEntries(Object.keys(fields).flatMap((field) => (body[field] === undefined || body[field] === null ? [] : [[field, body[field]]])));
  }
  const errcode = problems.length === 1 && problems[0]?.kind === 'missing' ? 'M_MISSING_PARAM' : 'M_BAD_JSON';
  const text = problems.map((problem) => `${problem.field}: ${problem.kind === 'missing' ? 'Field required' : 'Input has the wrong type'}`);
  throw new SynapseError(400, errcode, `${problems.length} validation error(s) for PostBody\n${text.join('\n')}`);
}

/** synapse/handlers/register.py check_username */
function checkUsername(localpart: string, serverName: string, users: ReadonlyMap<string, DoubleUser>): void {
  if (!LOCALPART_CHARACTERS.test(localpart)) {
    throw new SynapseError(400, 'M_INVALID_USERNAME', "User ID can only contain characters a-z, 0-9, or '=_-./+'");
  }
  if (localpart === '') throw new SynapseError(400, 'M_INVALID_USERNAME', 'User ID cannot be empty');
  if (localpart.startsWith('_')) throw new SynapseError(400, 'M_INVALID_USERNAME', 'User ID may not begin with _');
  if (`@${localpart}:${serverName}`.length > MAX_USERID_LENGTH) {
    throw new SynapseError(400, 'M_INVALID_USERNAME', `User ID may not be longer than ${MAX_USERID_LENGTH} characters`);
  }
  if (users.has(localpart)) throw new SynapseError(400, 'M_USER_IN_USE', 'User ID already taken.');
}

/** synapse/handlers/profile.py set_displayname: trimmed, "" clears it. */
function displayNameValue(value: string): string | null {
  if (value.length > MAX_DISPLAYNAME_LEN) throw new SynapseError(400, 'M_UNKNOWN', `Displayname is too long (max ${MAX_DISPLAYNAME_LEN})`);
  return value === '' ? null : value.trim();
}

function checkDeviceNameLength(name: string | null): void {
  if (name !== null && name.length > MAX_DEVICE_DISPLAY_NAME_LEN) {
    throw new SynapseError(400, 'M_TOO_LARGE', `Device display name is too long (max ${MAX_DEVICE_DISPLAY_NAME_LEN})`);
  }
}

/** synapse/http/servlet.py parse_json_object_from_request */
function parseJsonObject(raw: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    throw new SynapseError(400, 'M_NOT_JSON', 'Content not JSON.');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new SynapseError(400, 'M_BAD_JSON', 'Content must be a JSON object.');
  }
  return value as Record<string, unknown>;
}

function tryParse(raw: string): unknown {
  try {
    return raw === '' ? undefined : JSON.parse(raw);
  } catch {
    return raw;
  }
}

function errorResponse(error: unknown): [number, unknown] {
  if (error instanceof SynapseError) return [error.status, { errcode: error.errcode, error: error.message, ...error.extra }];
  return [500, { errcode: 'M_UNKNOWN', error: 'Internal server error' }];
}

function sendJson(res: ServerResponse, status: number, payload: unknown): void {
  // Like Twisted, a 204 goes out without a body.
  if (status === 204 || payload === undefined) {
    res.writeHead(status, { 'content-type': 'application/json' }).end();
    return;
  }
  const body = JSON.stringify(payload);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

import type { Clock } from '../clock.js';
import { isFields, isNumber, isString, isStringArray, readRecord, recordFormat, type Fields, type RecordLogger } from '../store/record-format.js';
import type { Store } from '../store/store.js';
import { hashToken, isOpaqueSecret, newOpaqueSecret } from './tokens.js';

/**
 * User-Interactive Authentication sessions terminated at the proxy (Matrix C-S spec, "User-interactive
 * authentication API"). Under delegated auth the homeserver runs no UIA at all (Synapse answers 404 for a user's
 * `DELETE /devices/{id}`), so the proxy asks the user to prove it is them again — password at the OP (or an app
 * password), or a fresh sign-in at the OP through the SSO fallback page — before it deletes devices itself.
 *
 * A UIA session is bound to the proxy session (access token) that started it and to the operation it was started
 * for: another token, another user or another set of devices cannot use it. It is used up by the operation it
 * authorised (a replayed session id authorises nothing); what Synapse's `ui_auth.session_timeout` allows — skipping
 * UIA for a while after a success on the same access token — is the separate "recently validated" marker.
 */
export type UiaStage = 'm.login.password' | 'm.login.sso';

export interface UiaOperation {
  readonly kind: 'delete_devices';
  /** Sorted, unique. */
  readonly deviceIds: readonly string[];
}

export interface UiaSession {
  readonly localpart: string;
  /** The proxy session whose access token started it. */
  readonly proxySessionId: string;
  /** The OP identity a re-authentication must prove. */
  readonly idpId: string;
  readonly sub: string;
  readonly operation: UiaOperation;
  readonly completed: readonly UiaStage[];
  readonly expiresAt: number;
}

export const uiaKeys = {
  session: (id: string) => `uia:${hashToken(id)}`,
  validated: (proxySessionId: string) => `uia-validated:${proxySessionId}`,
} as const;

export const uiaSessionRecord = recordFormat<UiaSession>({ name: 'uia_session', version: 1, decoders: { 1: isUiaSessionFields } });

function isUiaSessionFields(f: Fields): boolean {
  return (
    isString(f.localpart) &&
    isString(f.proxySessionId) &&
    isString(f.idpId) &&
    isString(f.sub) &&
    isFields(f.operation) &&
    f.operation.kind === 'delete_devices' &&
    isStringArray(f.operation.deviceIds) &&
    isStringArray(f.completed) &&
    f.completed.every((stage) => stage === 'm.login.password' || stage === 'm.login.sso') &&
    isNumber(f.expiresAt)
  );
}

/** The operation in its canonical form, so the same request compares equal however the client ordered it. */
export function deleteDevicesOperation(deviceIds: readonly string[]): UiaOperation {
  return { kind: 'delete_devices', deviceIds: [...new Set(deviceIds)].sort() };
}

export function sameOperation(a: UiaOperation, b: UiaOperation): boolean {
  return a.kind === b.kind && a.deviceIds.length === b.deviceIds.length && a.deviceIds.every((id, i) => id === b.deviceIds[i]);
}

export class UiaSessions {
  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    private readonly logger: RecordLogger,
  ) {}

  async begin(input: Omit<UiaSession, 'completed' | 'expiresAt'>, lifetimeMs: number): Promise<{ id: string; session: UiaSession }> {
    const id = newOpaqueSecret();
    const session: UiaSession = { ...input, completed: [], expiresAt: this.clock.now() + lifetimeMs };
    await this.store.set(uiaKeys.session(id), uiaSessionRecord.encode(session), { ttlMs: lifetimeMs });
    return { id, session };
  }

  /** The live session of `id`; undefined when unknown, used up, expired or unreadable. */
  async get(id: string): Promise<UiaSession | undefined> {
    if (!isOpaqueSecret(id)) return undefined;
    const key = uiaKeys.session(id);
    const session = readRecord(uiaSessionRecord, await this.store.get(key), key, this.logger);
    return session !== undefined && this.clock.now() < session.expiresAt ? session : undefined;
  }

  /** Records a completed stage (compare-and-set: a concurrent completion is not lost). False when the session is gone. */
  async complete(id: string, stage: UiaStage): Promise<boolean> {
    if (!isOpaqueSecret(id)) return false;
    const key = uiaKeys.session(id);
    for (let attempt = 0; attempt < 10; attempt++) {
      const raw = await this.store.get(key);
      const current = readRecord(uiaSessionRecord, raw, key, this.logger);
      if (raw === undefined || current === undefined || this.clock.now() >= current.expiresAt) return false;
      if (current.completed.includes(stage)) return true;
      const next: UiaSession = { ...current, completed: [...current.completed, stage] };
      const ttlMs = Math.max(1, current.expiresAt - this.clock.now());
      if (await this.store.compareAndSet(key, raw, uiaSessionRecord.encode(next), { ttlMs })) return true;
    }
    throw new Error('UIA session update kept losing compare-and-set');
  }

  /** Uses the session up: of concurrent requests presenting it, exactly one gets it. */
  async take(id: string): Promise<UiaSession | undefined> {
    if (!isOpaqueSecret(id)) return undefined;
    const key = uiaKeys.session(id);
    const session = readRecord(uiaSessionRecord, await this.store.consume(key), key, this.logger);
    return session !== undefined && this.clock.now() < session.expiresAt ? session : undefined;
  }

  /** Synapse's `ui_auth.session_timeout`: the access token of `proxySessionId` skips UIA for `windowMs` from now. */
  async markValidated(proxySessionId: string, windowMs: number): Promise<void> {
    if (windowMs <= 0) return;
    await this.store.set(uiaKeys.validated(proxySessionId), String(this.clock.now()), { ttlMs: windowMs });
  }

  async recentlyValidated(proxySessionId: string): Promise<boolean> {
    return (await this.store.get(uiaKeys.validated(proxySessionId))) !== undefined;
  }
}

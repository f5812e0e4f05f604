import { OAuthError } from '../errors/oauth-error.js';

/** Scopes Synapse requires to accept a token for the client-server API (stable and MSC2967 unstable names). */
export const API_SCOPES = ['urn:matrix:client:api:*', 'urn:matrix:org.matrix.msc2967.client:api:*'];
export const DEVICE_SCOPE_PREFIXES = ['urn:matrix:client:device:', 'urn:matrix:org.matrix.msc2967.client:device:'];
export const INACTIVE = Object.freeze({ active: false });

/** Never `active: false` for an internal fault: Synapse would log the user out. 503 makes Synapse answer 503. */
export class IntrospectionUnavailable extends OAuthError {
  constructor(message: string, cause: unknown) {
    super(503, 'temporarily_unavailable', message, {}, cause);
    this.name = 'IntrospectionUnavailable';
  }
}

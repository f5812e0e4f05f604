import type { Logger } from 'pino';
import { UserNotAllowed } from './homeserver-adapter.js';

/**
 * Who a token-issuing backend may log in. The proxy's appservice namespace (or the homeserver's JWT secret) lets it
 * act as ANY local user, homeserver admins and bridge puppets included; these rules are what stops that. Patterns
 * match whole user ids (`@localpart:server`), as appservice namespaces do.
 */
export interface UserPolicyRules {
  /** Every user namespace of the other appservices (bridges) and their sender users: never the proxy's to log in. */
  readonly appserviceNamespaces: readonly RegExp[];
  readonly appserviceSenders: readonly string[];
  /** The proxy's own appservice sender (its bot user): not a person. */
  readonly ownSender?: string;
  /** `deny_users` of the config: admins, service accounts. */
  readonly deny: readonly RegExp[];
  /** `allow_users` of the config; undefined: everyone not denied. */
  readonly allow?: readonly RegExp[];
}

export class UserPolicy {
  constructor(private readonly rules: UserPolicyRules) {}

  /** Why the user may not be logged in by the proxy; undefined when they may. */
  refusalOf(userId: string): string | undefined {
    const localpart = /^@([^:]*):/.exec(userId)?.[1];
    if (localpart !== undefined && localpart === this.rules.ownSender) return "it is the proxy's own appservice user";
    if (localpart !== undefined && this.rules.appserviceSenders.includes(localpart)) return "it is another appservice's sender user";
    if (this.rules.appserviceNamespaces.some((pattern) => pattern.test(userId))) return "it is in another appservice's user namespace";
    if (this.rules.deny.some((pattern) => pattern.test(userId))) return 'it matches deny_users';
    if (this.rules.allow !== undefined && !this.rules.allow.some((pattern) => pattern.test(userId))) return 'it matches no allow_users entry';
    return undefined;
  }

  /**
   * The user id of a localpart the backend is about to act as; refused (logged, `UserNotAllowed`) when the rules say
   * the proxy must not.
   */
  allowedUserId(localpart: string, serverName: string, log: Pick<Logger, 'warn'>): string {
    const userId = `@${localpart}:${serverName}`;
    const refusal = this.refusalOf(userId);
    if (refusal !== undefined) {
      log.warn({ event: 'homeserver.user_refused', user_id: userId, reason: refusal }, 'the proxy refuses to act as this user');
      throw new UserNotAllowed(userId, refusal);
    }
    return userId;
  }
}

/** A config pattern as a whole-user-id matcher. */
export function wholeUserId(pattern: string): RegExp {
  return new RegExp(`^(?:${pattern})$`);
}

import type { Clock } from '../clock.js';
import type { Store, TokenBucket } from '../store/store.js';
import { ipBucketOf } from './account-name.js';

/** A bucket was empty: the caller may try again after `retryAfterMs` (rendered as 429 M_LIMIT_EXCEEDED). */
export class RateLimited extends Error {
  constructor(readonly retryAfterMs: number) {
    super(`rate limited for ${retryAfterMs} ms`);
    this.name = 'RateLimited';
  }
}

export interface ThrottleLimits {
  readonly perIp: TokenBucket;
  readonly perAccount: TokenBucket;
  readonly ssoPerIp: TokenBucket;
  /** User codes submitted on the device-verification page (RFC 8628 §5.1). */
  readonly deviceUserCodePerIp: TokenBucket;
  /** IPv6 clients share a per-IP bucket per prefix of this length (security/account-name.ts `ipBucketOf`). */
  readonly ipv6PrefixLength: number;
}

/**
 * Login throttling shared by all replicas (token buckets in the store), checked BEFORE the OP is contacted: the
 * proxy must not become a way to spray passwords at the OP or to lock accounts there.
 */
export class LoginThrottle {
  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    private readonly limits: ThrottleLimits,
  ) {}

  /** SSO starts (each writes a pending login to the store), per client IP. Throws RateLimited. */
  async checkSsoStart(ip: string): Promise<void> {
    const result = await this.store.takeToken(`rate:sso:ip:${ipBucketOf(ip, this.limits.ipv6PrefixLength)}`, this.limits.ssoPerIp, this.clock.now());
    if (!result.allowed) throw new RateLimited(result.retryAfterMs);
  }

  /**
   * User-code submissions of the device authorization grant, per client IP. Throws RateLimited. RFC 8628 §5.1: a
   * user code is short enough to type, so guessing one must be slow — with 20^8 codes, a few outstanding ones and
   * 3 tries a minute per address, a guess is practically hopeless within a code's lifetime.
   */
  async checkUserCode(ip: string): Promise<void> {
    const result = await this.store.takeToken(`rate:user-code:ip:${ipBucketOf(ip, this.limits.ipv6PrefixLength)}`, this.limits.deviceUserCodePerIp, this.clock.now());
    if (!result.allowed) throw new RateLimited(result.retryAfterMs);
  }

  /**
   * Throws RateLimited when either bucket is empty. `accountKey` must be canonical (`AccountAliases.throttleKey`):
   * the bucket is keyed on it as given.
   */
  async check(ip: string, accountKey: string | undefined): Promise<void> {
    // The IP's bucket first: an attempt it refuses takes nothing from the account's (one store round trip for both).
    const ipTake = { key: `rate:login:ip:${ipBucketOf(ip, this.limits.ipv6PrefixLength)}`, bucket: this.limits.perIp };
    const takes = accountKey === undefined ? [ipTake] : [ipTake, { key: `rate:login:account:${accountKey}`, bucket: this.limits.perAccount }];
    const result = await this.store.takeTokens(takes, this.clock.now());
    if (!result.allowed) throw new RateLimited(result.retryAfterMs);
  }
}

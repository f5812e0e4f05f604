import type { Clock } from '../clock.js';
import type { Store, TokenBucket } from '../store/store.js';

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
    const result = await this.store.takeToken(`rate:sso:ip:${ip}`, this.limits.ssoPerIp, this.clock.now());
    if (!result.allowed) throw new RateLimited(result.retryAfterMs);
  }

  /** Throws RateLimited when either bucket is empty. */
  async check(ip: string, account: string | undefined): Promise<void> {
    const now = this.clock.now();
    const byIp = await this.store.takeToken(`rate:login:ip:${ip}`, this.limits.perIp, now);
    if (!byIp.allowed) throw new RateLimited(byIp.retryAfterMs);
    if (account === undefined) return;
    const byAccount = await this.store.takeToken(`rate:login:account:${account.toLowerCase()}`, this.limits.perAccount, now);
    if (!byAccount.allowed) throw new RateLimited(byAccount.retryAfterMs);
  }
}

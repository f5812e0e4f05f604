import type { Clock } from '../clock.js';
import { matrixErrors } from '../errors/matrix-error.js';
import type { Store, TokenBucket } from '../store/store.js';

/**
 * Login throttling shared by all replicas (token buckets in the store), checked BEFORE the OP is contacted: the
 * proxy must not become a way to spray passwords at the OP or to lock accounts there.
 */
export class LoginThrottle {
  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    private readonly limits: { readonly perIp: TokenBucket; readonly perAccount: TokenBucket; readonly ssoPerIp: TokenBucket },
  ) {}

  /** SSO starts (each writes a pending login to the store), per client IP. */
  async checkSsoStart(ip: string): Promise<void> {
    const result = await this.store.takeToken(`rate:sso:ip:${ip}`, this.limits.ssoPerIp, this.clock.now());
    if (!result.allowed) throw matrixErrors.limitExceeded(result.retryAfterMs);
  }

  /** Throws 429 M_LIMIT_EXCEEDED (with retry_after_ms) when either bucket is empty. */
  async check(ip: string, account: string | undefined): Promise<void> {
    const now = this.clock.now();
    const byIp = await this.store.takeToken(`rate:login:ip:${ip}`, this.limits.perIp, now);
    if (!byIp.allowed) throw matrixErrors.limitExceeded(byIp.retryAfterMs);
    if (account === undefined) return;
    const byAccount = await this.store.takeToken(`rate:login:account:${account.toLowerCase()}`, this.limits.perAccount, now);
    if (!byAccount.allowed) throw matrixErrors.limitExceeded(byAccount.retryAfterMs);
  }
}

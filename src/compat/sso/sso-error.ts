import { PageError } from '../../errors/page-error.js';
import type { FailureMessageKey } from '../../pages/messages.js';

/** Why an SSO step failed; each maps to one page (pages/messages.ts) and one status here. */
export type SsoFailure = Exclude<FailureMessageKey, 'internal' | 'store_unavailable' | 'homeserver_refused'>;

export function ssoError(failure: SsoFailure, cause?: unknown): PageError {
  switch (failure) {
    case 'missing_redirect_url':
      return new PageError(failure, 400, 'M_MISSING_PARAM', cause);
    case 'invalid_redirect_url':
      return new PageError(failure, 400, 'M_INVALID_PARAM', cause);
    case 'unknown_provider':
    case 'device_unknown':
    case 'account_unavailable':
    case 'app_password_unavailable':
    case 'app_password_unknown':
      return new PageError(failure, 404, 'M_NOT_FOUND', cause);
    case 'unknown_state':
    case 'expired':
    case 'confirmation_unknown':
    case 'uia_session_unknown':
      return new PageError(failure, 400, 'M_UNKNOWN', cause);
    case 'cookie_mismatch':
    case 'wrong_callback':
    case 'csrf':
    case 'op_denied':
    case 'op_rejected':
    case 'requirements_not_met':
    case 'registration_disabled':
    case 'no_localpart':
    case 'mapping_failed':
    case 'localpart_taken':
    case 'reauth_wrong_account':
    case 'reauth_stale':
    case 'account_csrf':
    case 'app_password_too_many':
      return new PageError(failure, 403, 'M_FORBIDDEN', cause);
    case 'app_password_name':
      return new PageError(failure, 400, 'M_INVALID_PARAM', cause);
    case 'app_password_no_grant':
      return new PageError(failure, 502, 'M_UNKNOWN', cause);
    case 'deactivated':
      return new PageError(failure, 403, 'M_USER_DEACTIVATED', cause);
    case 'op_error':
      return new PageError(failure, 502, 'M_UNKNOWN', cause);
    case 'rate_limited':
      return new PageError(failure, 429, 'M_LIMIT_EXCEEDED', cause);
    case 'op_unavailable':
    case 'homeserver_unavailable':
      return new PageError(failure, 503, 'M_UNKNOWN', cause);
  }
}

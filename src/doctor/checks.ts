import type { CheckStatus } from '../oidc/provider-diagnostics.js';

export type { CheckStatus } from '../oidc/provider-diagnostics.js';

/** One line of the doctor's report: what was checked, what was found, and for ✗ (and !) what to change. */
export interface DoctorCheck {
  /** `provider keycloak`, `homeserver`, `store`, `public_baseurl`. */
  readonly scope: string;
  readonly check: string;
  readonly status: CheckStatus;
  readonly message: string;
  readonly fix?: string;
}

export type AddCheck = (check: string, status: CheckStatus, message: string, fix?: string) => void;

/** A collector for one scope, so each check file reads as a list of `add(...)` calls. */
export function checksFor(scope: string, into: DoctorCheck[]): AddCheck {
  return (check, status, message, fix) => into.push({ scope, check, status, message, ...(fix === undefined ? {} : { fix }) });
}

/**
 * An error of the routes that speak OAuth rather than Matrix (token introspection, RFC 7662; Back-Channel Logout,
 * OIDC BCL §2.8): rendered as an RFC 6749 §5.2-style body `{ error, error_description }`.
 */
export type OAuthErrorCode = 'invalid_request' | 'invalid_client' | 'invalid_grant' | 'invalid_token' | 'temporarily_unavailable' | 'server_error';

export class OAuthError extends Error {
  constructor(
    readonly status: number,
    readonly error: OAuthErrorCode,
    readonly description: string,
    readonly headers: Readonly<Record<string, string>> = {},
    cause?: unknown,
  ) {
    super(description, cause === undefined ? undefined : { cause });
    this.name = 'OAuthError';
  }

  toBody(): { error: OAuthErrorCode; error_description: string } {
    return { error: this.error, error_description: this.description };
  }
}

import type { TestOp } from './test-op.js';

/** The `oidc_providers` entry for the in-process OP, as the harness and the dev stack configure it. */
export function testOpProviderBlock(op: TestOp, idpId: string, idpName: string): Record<string, unknown> {
  return {
    idp_id: idpId,
    idp_name: idpName,
    issuer: op.issuer,
    client_id: op.clientId,
    client_secret: op.clientSecret,
    scopes: ['openid', 'profile', 'email', 'offline_access'],
    password_grant: { enabled: true },
    backchannel_logout_enabled: true,
    user_mapping_provider: {
      config: { localpart_template: '{{ user.preferred_username }}', display_name_template: '{{ user.name }}', email_template: '{{ user.email }}' },
    },
  };
}

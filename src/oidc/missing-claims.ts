import type { UpstreamGrant } from './upstream.js';

/**
 * What to tell the admin when the mapping templates need claims the OP's answer lacks (issue 13, failure 3). With
 * `user_profile_method: auto` the claims are the ID token's; an OP following OIDC Core §5.4 puts profile claims
 * (preferred_username, name, email) only in userinfo once it issues an access token — Synapse behaves the same,
 * and nothing in the SSO error page can say which claim was missing or what to set.
 */
export function missingClaimsAdvice(idpId: string, missing: readonly string[], grant: Pick<UpstreamGrant, 'userinfoSkipped'>): string {
  const names = missing.join(', ');
  if (grant.userinfoSkipped) {
    return (
      `the ID token from provider ${idpId} has no ${names} claim and the OP serves userinfo, where OPs that follow ` +
      `OIDC Core §5.4 put profile claims: set user_profile_method: userinfo_endpoint on that provider`
    );
  }
  return `provider ${idpId} sent no ${names} claim: request the scope that carries it (profile, email) or map it at the OP, or change the template`;
}

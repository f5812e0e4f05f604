import type { Config } from '../config/schema.js';
import { claimsReadBy, compileUserMapper, MappingError } from '../identity/user-mapping.js';
import { missingClaimsAdvice } from '../oidc/missing-claims.js';
import type { UpstreamGrant } from '../oidc/upstream.js';
import type { AddCheck } from './checks.js';

type ProviderConfig = Config['oidc_providers'][number];

/**
 * The mapping templates against what the OP really sends (issue 13, failure 3): with a test login, the claims they
 * read must be there; without one, a warning up front when `user_profile_method: auto` may hide them in userinfo.
 */
export function checkTemplates(config: Config, provider: ProviderConfig, servesUserinfo: boolean, testLogin: UpstreamGrant | undefined, add: AddCheck): void {
  let mapper;
  try {
    mapper = compileUserMapper(provider.idp_id, provider.user_mapping_provider.config, config.server_name);
  } catch (err: unknown) {
    if (!(err instanceof MappingError)) throw err;
    add('mapping templates', 'fail', err.message, 'fix the template (Jinja syntax, as in Synapse)');
    return;
  }
  const mapping = provider.user_mapping_provider.config;
  const read = [mapping.localpart_template, mapping.display_name_template, mapping.email_template].flatMap((source) => (source === undefined ? [] : claimsReadBy(source)));
  if (testLogin !== undefined) {
    const missing = mapper.missingClaims(testLogin.claims);
    if (missing.length > 0) {
      const fix = testLogin.userinfoSkipped ? 'set user_profile_method: userinfo_endpoint' : 'request the scope that carries them, map them at the OP, or change the templates';
      add('mapping templates', 'fail', `the test login lacks ${missing.join(', ')}: ${missingClaimsAdvice(provider.idp_id, missing, testLogin)}`, fix);
      return;
    }
    try {
      const identity = mapper.map(testLogin.claims);
      add('mapping templates', 'pass', `the test login maps to localpart ${identity.localpart ?? '(none)'}${identity.displayName === undefined ? '' : `, display name ${identity.displayName}`}`);
    } catch (err: unknown) {
      if (!(err instanceof MappingError)) throw err;
      add('mapping templates', 'fail', `the test login does not map: ${err.message}`, 'change the templates or the claims the OP sends');
    }
    return;
  }
  if (provider.user_profile_method === 'auto' && servesUserinfo && read.length > 0) {
    add(
      'mapping templates',
      'warn',
      `the templates read ${[...new Set(read)].join(', ')}; with user_profile_method: auto these come from the ID token alone, and OPs that follow OIDC Core §5.4 keep profile claims in userinfo`,
      'set user_profile_method: userinfo_endpoint, or run doctor with MCP_DOCTOR_USERNAME/MCP_DOCTOR_PASSWORD to see the real claims',
    );
  }
}

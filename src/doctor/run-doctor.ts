import type { Config } from '../config/schema.js';
import { OWN_PREFIX } from '../http/own-prefix.js';
import { diagnoseProvider } from '../oidc/provider-diagnostics.js';
import { checksFor, type DoctorCheck } from './checks.js';
import { checkHomeserver } from './homeserver-checks.js';
import { checkPublicBaseUrl } from './public-url-check.js';
import { checkStore } from './store-check.js';
import { checkTemplates } from './template-checks.js';

export interface DoctorOptions {
  /** MCP_DOCTOR_USERNAME / MCP_DOCTOR_PASSWORD: a real account for a real password login. */
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Per request. Default 10 s. */
  readonly timeoutMs?: number;
}

/** Every check, in the order an admin fixes things: the OPs, the homeserver, the store, the public URL. */
export async function runDoctor(config: Config, options: DoctorOptions): Promise<DoctorCheck[]> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const checks: DoctorCheck[] = [];
  const username = options.env['MCP_DOCTOR_USERNAME'];
  const password = options.env['MCP_DOCTOR_PASSWORD'];
  const testAccount = username !== undefined && username !== '' && password !== undefined ? { username, password } : undefined;
  let primaryIssuer: string | undefined;
  const primaryIdp = config.password_login.idp_id ?? config.oidc_providers[0]?.idp_id;

  for (const provider of config.oidc_providers) {
    const add = checksFor(`provider ${provider.idp_id}`, checks);
    const diagnosis = await diagnoseProvider({
      settings: provider,
      passwordGrant: provider.password_grant.enabled,
      backchannelLogout: provider.backchannel_logout_enabled,
      redirectUri: `${config.public_baseurl}${OWN_PREFIX.slice(1)}/sso/callback/${encodeURIComponent(provider.idp_id)}`,
      backchannelLogoutUri: `${config.public_baseurl}${OWN_PREFIX.slice(1)}/backchannel-logout/${encodeURIComponent(provider.idp_id)}`,
      testAccount: provider.idp_id === primaryIdp ? testAccount : undefined,
      timeoutMs,
    });
    for (const check of diagnosis.checks) add(check.check, check.status, check.message, check.fix);
    const issuer = diagnosis.metadata?.['issuer'];
    if (provider.idp_id === primaryIdp && typeof issuer === 'string') primaryIssuer = issuer;
    if (diagnosis.metadata !== undefined) checkTemplates(config, provider, typeof diagnosis.metadata['userinfo_endpoint'] === 'string', diagnosis.testLogin, add);
  }
  await checkHomeserver(config, primaryIssuer ?? (config.oidc_providers.length === 0 ? config.public_baseurl : undefined), timeoutMs, checksFor('homeserver', checks));
  await checkStore(config, checksFor('store', checks));
  await checkPublicBaseUrl(config, timeoutMs, checksFor('public_baseurl', checks));
  return checks;
}

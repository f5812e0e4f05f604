import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';

/**
 * GET /login. Order matters to clients: password first when enabled, then SSO, then token.
 * `oauth_aware_preferred` is MSC3824's stable name and `org.matrix.msc3824.delegated_oidc_compatibility` its
 * unstable alias; both are sent because clients in the field read either. Strict clients (Cinny) need a populated
 * `identity_providers` list to show a button.
 */
export function getLoginFlows(ctx: Context, deps: AppDeps): void {
  const identityProviders = deps.config.oidc_providers.map((provider) => ({
    id: provider.idp_id,
    name: provider.idp_name ?? provider.idp_id,
    ...(provider.idp_icon === undefined ? {} : { icon: provider.idp_icon }),
    ...(provider.idp_brand === undefined ? {} : { brand: provider.idp_brand }),
  }));
  const flows: Record<string, unknown>[] = [];
  if (deps.config.password_login.enabled) flows.push({ type: 'm.login.password' });
  if (identityProviders.length > 0) {
    flows.push({
      type: 'm.login.sso',
      identity_providers: identityProviders,
      oauth_aware_preferred: true,
      'org.matrix.msc3824.delegated_oidc_compatibility': true,
    });
  }
  flows.push({ type: 'm.login.token' });
  if (deps.appservices.enabled || deps.homeserver.tokens !== undefined) flows.push({ type: 'm.login.application_service' });
  ctx.body = { flows };
}

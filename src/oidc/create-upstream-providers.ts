import { createUpstreamProvider, type ProviderSettings, type UpstreamProviderDeps } from './openid-provider.js';
import type { UpstreamProvider } from './upstream.js';

/** One provider per `oidc_providers` entry, keyed by `idp_id`. Nothing is fetched here: discovery happens on first use. */
export function createUpstreamProviders(configs: readonly ProviderSettings[], deps: UpstreamProviderDeps): ReadonlyMap<string, UpstreamProvider> {
  const providers = new Map<string, UpstreamProvider>();
  for (const config of configs) {
    if (providers.has(config.idp_id)) throw new Error(`oidc_providers: idp_id ${config.idp_id} appears twice`);
    providers.set(config.idp_id, createUpstreamProvider(config, deps));
  }
  return providers;
}

export { createUpstreamProvider, type ProviderSettings, type UpstreamProviderDeps } from './openid-provider.js';

import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { metadataForHomeserver } from '../homeserver/metadata.js';
import { logOf } from '../http/request-state.js';

/** How long the homeserver's own document is reused; discovery documents change rarely. */
const UPSTREAM_TTL_MS = 60_000;
const UPSTREAM_TIMEOUT_MS = 3_000;

const cache = new WeakMap<AppDeps, { readonly at: number; readonly document: Readonly<Record<string, unknown>> }>();

/**
 * GET /.well-known/matrix/client (Matrix C-S spec, "Server Discovery"). Discovery must lead clients to the proxy:
 * passed through, the homeserver names its own `public_baseurl`, and a client that then logs in there directly
 * gets 404 M_UNRECOGNIZED (delegated auth removes the homeserver's login API). The homeserver's own document is kept
 * (identity server, RTC foci and other keys clients read), `m.homeserver.base_url` becomes `public_baseurl`, and
 * `well_known_client.extra` is added.
 */
export async function getClientWellKnown(ctx: Context, deps: AppDeps): Promise<void> {
  const { [MSC2965_KEY]: upstreamAuthentication, ...upstream } = await homeserverDocument(ctx, deps);
  const upstreamHomeserver = upstream['m.homeserver'];
  const authentication = await authenticationEntry(deps, upstreamAuthentication);
  ctx.body = {
    ...upstream,
    ...(authentication === undefined ? {} : { [MSC2965_KEY]: authentication }),
    ...deps.config.well_known_client.extra,
    'm.homeserver': { ...(isObject(upstreamHomeserver) ? upstreamHomeserver : {}), base_url: deps.config.public_baseurl },
  };
  // The spec requires CORS on this document (set for every owned route); a short cache keeps clients current.
  ctx.set('Cache-Control', 'public, max-age=600');
}

/** MSC2965's first discovery mechanism, which older native-capable clients (Element Web 1.11) still read. */
const MSC2965_KEY = 'org.matrix.msc2965.authentication';

/**
 * The auth service clients are told about follows `native_clients`, as the auth_metadata routes do: `hide` names none
 * (Synapse's own entry would send clients to the OP's native login), `serve` names this proxy's OAuth server, `relay`
 * keeps the homeserver's entry.
 */
async function authenticationEntry(deps: AppDeps, upstream: unknown): Promise<unknown> {
  switch (deps.config.native_clients) {
    case 'hide':
      return undefined;
    case 'relay':
      return upstream;
    case 'serve': {
      const metadata = await metadataForHomeserver(deps);
      return { issuer: metadata['issuer'], ...(typeof metadata['account_management_uri'] === 'string' ? { account: metadata['account_management_uri'] } : {}) };
    }
  }
}

/** The homeserver's own document, or {} when it has none or cannot be reached (discovery must still answer). */
async function homeserverDocument(ctx: Context, deps: AppDeps): Promise<Readonly<Record<string, unknown>>> {
  const cached = cache.get(deps);
  const now = deps.clock.now();
  if (cached !== undefined && now - cached.at < UPSTREAM_TTL_MS) return cached.document;
  let document: Record<string, unknown> = {};
  try {
    const response = await fetch(new URL('/.well-known/matrix/client', deps.config.homeserver.url), { signal: AbortSignal.timeout(UPSTREAM_TIMEOUT_MS) });
    if (response.ok) {
      const body: unknown = await response.json();
      if (isObject(body)) document = body;
    } else {
      await response.body?.cancel();
    }
  } catch (err: unknown) {
    logOf(ctx, deps.logger).debug({ err }, 'well_known.homeserver_unavailable');
  }
  cache.set(deps, { at: now, document });
  return document;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

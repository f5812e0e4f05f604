import { createPrivateKey } from 'node:crypto';
import { isIPv4, isIPv6 } from 'node:net';
import { z } from 'zod';
import { parseByteSize, parseDuration, type Parsed } from './durations.js';
import { templateProblem } from './mapping-templates.js';

/**
 * The validated configuration. This schema sees the document after `${ENV}` substitution and after every `*_path`
 * secret was read (load-config.ts does both), so secrets appear here under their plain names only.
 * YAML keys and output keys are the same snake_case names; durations come out in milliseconds, sizes in bytes.
 */

// ---------------------------------------------------------------------------------------------------- scalars

/** Runs a hand-written parser so that its message, not a generic union error, reaches the admin. */
function parsedWith<T>(parse: (input: unknown) => Parsed | { ok: true; value: T }) {
  return z.unknown().transform((input, ctx): T => {
    if (input === undefined) {
      ctx.addIssue({ code: 'custom', message: 'is required', input });
      return z.NEVER;
    }
    const result = parse(input);
    if (!result.ok) {
      ctx.addIssue({ code: 'custom', message: result.message, input });
      return z.NEVER;
    }
    return result.value as T;
  });
}

/**
 * For cross-field checks: run even when some fields failed, so that every problem shows at once; the check then
 * reads the values defensively. Skipped when the value is not a mapping at all (that is the only problem).
 */
const evenAfterFieldErrors = {
  when: (payload: { value: unknown }) => typeof payload.value === 'object' && payload.value !== null && !Array.isArray(payload.value),
};

const positive = (parse: (input: unknown) => Parsed) => (input: unknown): Parsed => {
  const result = parse(input);
  return result.ok && result.value === 0 ? { ok: false, message: 'must be greater than 0' } : result;
};

/** Milliseconds; accepts "30s", "5m", "1h", "2d", "1w", "500ms" or an integer of milliseconds. */
function duration(defaultText: string) {
  const fallback = parseDuration(defaultText);
  if (!fallback.ok) throw new Error(`bad default duration ${defaultText}`);
  return parsedWith<number>(positive(parseDuration)).default(fallback.value);
}

/** Like `duration`, where 0 is meaningful ("never"). */
function durationOrZero(defaultText: string) {
  const fallback = parseDuration(defaultText);
  if (!fallback.ok) throw new Error(`bad default duration ${defaultText}`);
  return parsedWith<number>(parseDuration).default(fallback.value);
}

function byteSize(defaultBytes: number) {
  return parsedWith<number>(positive(parseByteSize)).default(defaultBytes);
}

/** Ports may come from `${PORT}` substitution, which always yields a string. */
function parsePort(input: unknown): Parsed {
  const value = typeof input === 'string' && /^\d{1,5}$/.test(input) ? Number(input) : input;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 65535) {
    return { ok: false, message: 'must be a port number (0-65535)' };
  }
  return { ok: true, value };
}

const requiredPort = () => parsedWith<number>(parsePort);
const port = (defaultPort: number) => parsedWith<number>(parsePort).default(defaultPort);

/** An absent section parses as `{}`, so each of its missing required keys is reported by its own path. */
function section<T extends z.ZodType>(schema: T) {
  return schema.prefault({} as z.input<T>);
}

const DNS_NAME = /^(?=.{1,255}$)[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.?$/;

/** An address to bind: an IP literal (IPv6 without brackets, as node's listen() wants it) or a host name. */
const bindHost = z.string().refine((host) => isIPv4(host) || isIPv6(host) || DNS_NAME.test(host), { error: 'must be an IP address or a host name' });

const listener = (defaultHost: string, defaultPort: number) =>
  z.strictObject({ host: bindHost.default(defaultHost), port: port(defaultPort) }).prefault({});

/** Matrix spec appendix "Server Name": IPv4 / "[" IPv6 "]" / dns-name, then an optional ":" port. */
export function isMatrixServerName(value: string): boolean {
  const match = /^(\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9.-]{1,255})(?::(\d{1,5}))?$/.exec(value);
  if (match === null) return false;
  const host = match[1] ?? '';
  if (match[2] !== undefined && (Number(match[2]) < 1 || Number(match[2]) > 65535)) return false;
  if (host.startsWith('[')) return isIPv6(host.slice(1, -1));
  if (/^[\d.]+$/.test(host)) return isIPv4(host);
  return /^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$/.test(host);
}

interface UrlRules {
  /** Schemes accepted, with the colon ("https:"). Undefined: any scheme. */
  readonly protocols?: readonly string[];
  readonly trailingSlash?: 'add' | 'remove';
}

function url(rules: UrlRules = { protocols: ['http:', 'https:'] }) {
  return z.string().transform((text, ctx) => {
    let parsed: URL;
    try {
      parsed = new URL(text);
    } catch {
      ctx.addIssue({ code: 'custom', message: 'must be an absolute URL', input: text });
      return z.NEVER;
    }
    const problem =
      rules.protocols !== undefined && !rules.protocols.includes(parsed.protocol)
        ? `must be an absolute ${rules.protocols.map((p) => p.slice(0, -1)).join(' or ')} URL`
        : parsed.username !== '' || parsed.password !== ''
          ? 'must not contain a user name or password'
          : parsed.hash !== '' || text.includes('#')
            ? 'must not contain a fragment (#...)'
            : undefined;
    if (problem !== undefined) {
      ctx.addIssue({ code: 'custom', message: problem, input: text });
      return z.NEVER;
    }
    if (rules.trailingSlash === 'add' && !text.endsWith('/')) return `${text}/`;
    if (rules.trailingSlash === 'remove') return text.replace(/\/+$/, '');
    return text;
  });
}

const noQuery = (schema: ReturnType<typeof url>) =>
  schema.refine((text) => !text.includes('?'), { error: 'must not contain a query string' });

/** `mxc://<server-name>/<media-id>`, as Synapse checks idp_icon (MSC2858). */
const mxcUri = z.string().refine(
  (value) => {
    const match = /^mxc:\/\/([^/]+)\/([A-Za-z0-9_-]+)$/.exec(value);
    return match !== null && isMatrixServerName(match[1] ?? '');
  },
  { error: 'must be an mxc:// URI (mxc://server.name/mediaid)' },
);

function parseCidr(input: unknown): Parsed | { ok: true; value: string } {
  if (typeof input !== 'string') return { ok: false, message: 'must be a CIDR such as 10.0.0.0/8 or fd00::/8' };
  const [address = '', prefix, extra] = input.trim().split('/');
  const max = isIPv4(address) ? 32 : isIPv6(address) ? 128 : undefined;
  if (max === undefined || extra !== undefined) return { ok: false, message: `"${input}" is not a CIDR such as 10.0.0.0/8 or fd00::/8` };
  if (prefix === undefined) return { ok: true, value: `${address}/${max}` };
  if (!/^\d{1,3}$/.test(prefix) || Number(prefix) > max) return { ok: false, message: `"${input}": the prefix length must be 0-${max}` };
  return { ok: true, value: `${address}/${Number(prefix)}` };
}

const secret = (minLength: number, pathKey: string) =>
  z
    .string({ error: (issue) => (issue.input === undefined ? `is required (or set ${pathKey} to a file holding it)` : undefined) })
    .min(minLength, { error: `must be at least ${minLength} characters long` });

// ---------------------------------------------------------------------------------------------------- providers

/** RFC 7518 §3.1 / RFC 8037 JWS algorithm names; `none` is deliberately absent. */
export const JWS_ALGORITHMS = ['HS256', 'HS384', 'HS512', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES256K', 'ES384', 'ES512', 'EdDSA', 'Ed25519'] as const;
const ASYMMETRIC_JWS_ALGORITHMS = JWS_ALGORITHMS.filter((alg) => !alg.startsWith('HS'));

const jwsAlgorithm = (allowed: readonly string[]) =>
  z.enum(allowed as [string, ...string[]], {
    error: (issue) => (issue.input === 'none' ? '"none" is never accepted: tokens must be signed' : undefined),
  });

export const DEFAULT_MAPPING_PROVIDER = 'synapse.handlers.oidc.JinjaOidcMappingProvider';
/** Synapse renamed the module and still accepts the old name (synapse/config/oidc.py, LEGACY_USER_MAPPING_PROVIDER). */
const LEGACY_MAPPING_PROVIDER = 'synapse.handlers.oidc_handler.JinjaOidcMappingProvider';

/** A Jinja template as Synapse's mapping provider takes it; compiled here so a broken one is a config problem. */
const template = z
  .string()
  .min(1)
  .superRefine((source, ctx) => {
    const problem = templateProblem(source);
    if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem, input: source });
  });

const mappingConfig = z.strictObject({
  subject_claim: z.string().min(1).default('sub'),
  subject_template: template.optional(),
  localpart_template: template.optional(),
  display_name_template: template.optional(),
  email_template: template.optional(),
  picture_claim: z.string().min(1).default('picture'),
  // The username-picker page is not built yet: refuse `true` by name rather than silently ignoring it.
  confirm_localpart: z
    .boolean()
    .default(false)
    .refine((value) => !value, { error: 'confirm_localpart: true is not supported yet (the localpart always comes from localpart_template)' }),
  extra_attributes: z.record(z.string(), z.string()).default({}),
});

const userMappingProvider = z
  .strictObject({
    module: z
      .string()
      .refine((module) => module === DEFAULT_MAPPING_PROVIDER || module === LEGACY_MAPPING_PROVIDER, {
        error: `only Synapse's default mapping provider (${DEFAULT_MAPPING_PROVIDER}) is supported: Python modules cannot run here`,
      })
      .optional(),
    config: mappingConfig.prefault({}),
  })
  .transform(({ config }) => ({ module: DEFAULT_MAPPING_PROVIDER, config }));

const attributeRequirement = z
  .strictObject({
    // A dotted path reaches nested claims such as Keycloak's resource_access.<client>.roles (Synapse #14835).
    attribute: z.string().min(1),
    value: z.string().optional(),
    one_of: z.array(z.string()).min(1).optional(),
  })
  .superRefine((requirement, ctx) => {
    if ((requirement.value === undefined) === (requirement.one_of === undefined)) {
      ctx.addIssue({ code: 'custom', message: 'give exactly one of value or one_of', path: ['value'] });
    }
  });

const clientSecretJwtKey = z.strictObject({
  key: z.string({ error: (issue) => (issue.input === undefined ? 'is required (or set key_file)' : undefined) }).min(1),
  jwt_header: z.strictObject({ alg: jwsAlgorithm(ASYMMETRIC_JWS_ALGORITHMS), kid: z.string().min(1).optional() }),
  jwt_payload: z.record(z.string(), z.string()).default({}),
});

/** Parameters the proxy sets itself; letting a config override them would break state/nonce/PKCE protection. */
const RESERVED_AUTHORIZATION_PARAMETERS = new Set(['response_type', 'client_id', 'redirect_uri', 'scope', 'state', 'nonce', 'code_challenge', 'code_challenge_method']);

const CLIENT_AUTH_METHODS = ['client_secret_basic', 'client_secret_post', 'private_key_jwt', 'none'] as const;

const oidcProvider = z
  .strictObject({
    idp_id: z
      .string()
      .min(1)
      // Synapse's rule (synapse/config/oidc.py): MSC2858 allows 255, Synapse prefixes "oidc-".
      .max(250)
      .regex(/^[A-Za-z0-9._~-]+$/, { error: 'may contain only letters, digits and . _ ~ -' }),
    idp_name: z.string().min(1).optional(),
    idp_icon: mxcUri.optional(),
    idp_brand: z
      .string()
      .max(255)
      .regex(/^[a-z][a-z0-9_.-]*$/, { error: 'must start with a lower-case letter and contain only a-z 0-9 _ . -' })
      .optional(),
    discover: z.boolean().default(true),
    issuer: url(),
    client_id: z.string().min(1),
    client_secret: z.string().min(1).optional(),
    client_secret_jwt_key: clientSecretJwtKey.optional(),
    client_auth_method: z.enum(CLIENT_AUTH_METHODS).optional(),
    // Synapse defaults to auto; S256 always is safe with every OP we know and closes code injection.
    pkce_method: z.enum(['always', 'auto', 'never']).default('always'),
    scopes: z
      .array(z.string().regex(/^[\x21\x23-\x5B\x5D-\x7E]+$/, { error: 'must be a scope token (no spaces or quotes)' }))
      .refine((scopes) => scopes.includes('openid'), { error: 'must include "openid"' })
      .default(['openid']),
    authorization_endpoint: url().optional(),
    token_endpoint: url().optional(),
    userinfo_endpoint: url().optional(),
    jwks_uri: url().optional(),
    introspection_endpoint: url().optional(),
    revocation_endpoint: url().optional(),
    end_session_endpoint: url().optional(),
    skip_verification: z.boolean().default(false),
    user_profile_method: z.enum(['auto', 'userinfo_endpoint']).default('auto'),
    allow_existing_users: z.boolean().default(false),
    // Lower-case a rendered localpart instead of refusing it (issue 12 #2); never binds an existing user that way.
    localpart_case_folding: z.boolean().default(false),
    enable_registration: z.boolean().default(true),
    backchannel_logout_enabled: z.boolean().default(false),
    backchannel_logout_mode: z.enum(['hard', 'soft']).default('hard'),
    backchannel_logout_ignore_sub: z.boolean().default(false),
    id_token_signing_alg_values_supported: z.array(jwsAlgorithm(JWS_ALGORITHMS)).min(1).optional(),
    additional_authorization_parameters: z
      .record(
        z.string().refine((name) => !RESERVED_AUTHORIZATION_PARAMETERS.has(name), { error: 'is set by the proxy and cannot be overridden' }),
        z.string(),
      )
      .default({}),
    attribute_requirements: z.array(attributeRequirement).default([]),
    password_grant: z.strictObject({ enabled: z.boolean().default(false) }).prefault({}),
    user_mapping_provider: userMappingProvider.prefault({}),
  })
  .superRefine(checkProvider, evenAfterFieldErrors)
  .transform((provider) => ({
    ...provider,
    idp_name: provider.idp_name ?? provider.idp_id,
    client_auth_method: provider.client_auth_method ?? (hasClientCredential(provider) ? 'client_secret_basic' : 'none'),
  }));

function hasClientCredential(provider: { client_secret?: unknown; client_secret_jwt_key?: unknown }): boolean {
  return provider.client_secret !== undefined || provider.client_secret_jwt_key !== undefined;
}

/** Cross-field rules of one provider block. */
function checkProvider(provider: Record<string, unknown>, ctx: z.core.$RefinementCtx): void {
  const problem = (key: string, message: string) => ctx.addIssue({ code: 'custom', message, path: [key], input: provider[key] });
  const method = provider['client_auth_method'];
  // Synapse: without a client secret the auth method must be none (synapse/config/oidc.py).
  if ((method === 'client_secret_basic' || method === 'client_secret_post') && !hasClientCredential(provider)) {
    problem('client_auth_method', `${method} needs client_secret, client_secret_path or client_secret_jwt_key`);
  }
  if (method === 'private_key_jwt' && provider['client_secret_jwt_key'] === undefined) {
    problem('client_auth_method', 'private_key_jwt needs client_secret_jwt_key');
  }
  if (provider['client_secret'] !== undefined && provider['client_secret_jwt_key'] !== undefined) {
    problem('client_secret_jwt_key', 'give either client_secret or client_secret_jwt_key, not both');
  }
  checkPlainHttp(provider, problem);
  // Synapse's metadata checks (OidcProvider._validate_metadata) applied to the explicit endpoints. These also cover
  // password_grant: without discovery a token_endpoint is always required.
  if (provider['discover'] === false) {
    for (const key of ['authorization_endpoint', 'token_endpoint']) {
      if (provider[key] === undefined) problem(key, 'is required when discover is false');
    }
    if (provider['user_profile_method'] === 'userinfo_endpoint') {
      if (provider['userinfo_endpoint'] === undefined) problem('userinfo_endpoint', 'is required when discover is false and user_profile_method is userinfo_endpoint');
    } else if (provider['jwks_uri'] === undefined && provider['skip_verification'] !== true) {
      problem('jwks_uri', 'is required when discover is false (ID token signatures are checked with it)');
    }
  }
}

/** The OP endpoints the proxy itself calls (the authorization and end-session endpoints are for the browser). */
const BACK_CHANNEL_ENDPOINTS = ['token_endpoint', 'userinfo_endpoint', 'jwks_uri', 'introspection_endpoint', 'revocation_endpoint'] as const;

/**
 * Plain http to the OP only for a loopback issuer or with skip_verification, the rule the provider's constructor
 * asserts (oidc/openid-provider.ts): refused here first so that --check-config and start-up agree. With an https
 * issuer, openid-client refuses a plain-http endpoint at its first call (oauth4webapi "only requests to HTTPS are
 * allowed"), so an explicit http endpoint would fail the first login rather than the start.
 */
function checkPlainHttp(provider: Record<string, unknown>, problem: (key: string, message: string) => void): void {
  if (provider['skip_verification'] === true) return;
  const issuer = parsedUrl(provider['issuer']);
  if (issuer === undefined) return;
  if (issuer.protocol === 'http:') {
    if (!isLoopbackHost(issuer.hostname)) problem('issuer', `${issuer.origin} is plain http: use https, or set skip_verification: true (testing only)`);
    return;
  }
  for (const key of BACK_CHANNEL_ENDPOINTS) {
    const endpoint = parsedUrl(provider[key]);
    if (endpoint?.protocol === 'http:') problem(key, 'is plain http while the issuer is https: use https, or set skip_verification: true (testing only)');
  }
}

/** The hosts oidc/openid-provider.ts lets speak plain http: the OP runs on this machine. */
function isLoopbackHost(hostname: string): boolean {
  return hostname === 'localhost' || hostname === '[::1]' || /^127(\.\d{1,3}){3}$/.test(hostname);
}

function parsedUrl(value: unknown): URL | undefined {
  if (typeof value !== 'string') return undefined;
  try {
    return new URL(value);
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------------- sections

/** `synapse` is the name `delegated` had before other backends existed; it stays accepted. */
export const HOMESERVER_MODES = ['delegated', 'synapse', 'appservice', 'jwt'] as const;
/** Quirks of appservice login differ per implementation (docs/homeservers.md). */
export const HOMESERVER_FLAVOURS = ['synapse', 'dendrite', 'conduit', 'conduwuit', 'tuwunel', 'continuwuity'] as const;
/** JWT login exists on Synapse (`jwt_config`) and tuwunel (`[global.jwt]`) only. */
const JWT_FLAVOURS: readonly string[] = ['synapse', 'tuwunel'];

/** A regular expression over whole Matrix user ids, compiled now so a broken one is a config problem. */
const userIdPattern = z.string().min(1).superRefine((source, ctx) => {
  try {
    new RegExp(`^(?:${source})$`);
  } catch (err: unknown) {
    ctx.addIssue({ code: 'custom', message: `is not a regular expression (${err instanceof Error ? err.message : String(err)})`, input: source });
  }
});

const appserviceBackend = z.strictObject({
  /** The registration file the homeserver loads too; the proxy reads its as_token (config/file-references.ts checks it). */
  registration_file: z.string({ error: (issue) => (issue.input === undefined ? 'is required (the appservice registration file given to the homeserver)' : undefined) }).min(1),
  /** Users the as_token must never act as, besides every namespace of `appservice_config_files` (whole user ids). */
  deny_users: z.array(userIdPattern).default([]),
  /** When given, only these users may log in through the proxy (whole user ids). */
  allow_users: z.array(userIdPattern).optional(),
});

const jwtBackend = z.strictObject({
  /** HS*: the shared secret of the homeserver's jwt_config; others: the PEM private key whose public key it has. */
  key: z.string({ error: (issue) => (issue.input === undefined ? 'is required (or set key_path to a file holding it)' : undefined) }).min(16),
  algorithm: jwsAlgorithm(JWS_ALGORITHMS).default('HS256'),
  issuer: z.string().min(1).optional(),
  audience: z.string().min(1).optional(),
  /** The claim the homeserver reads the localpart from (Synapse jwt_config.subject_claim). */
  subject_claim: z.string().min(1).default('sub'),
  display_name_claim: z.string().min(1).default('name'),
  lifetime: duration('60s'),
  deny_users: z.array(userIdPattern).default([]),
  allow_users: z.array(userIdPattern).optional(),
});

const homeserver = section(
  z
    .strictObject({
      url: noQuery(url({ protocols: ['http:', 'https:'], trailingSlash: 'remove' })),
      mode: z.enum(HOMESERVER_MODES).default('delegated').transform((mode) => (mode === 'synapse' ? 'delegated' : mode)),
      flavour: z.enum(HOMESERVER_FLAVOURS).default('synapse'),
      /** Delegated mode only: `matrix_authentication_service.secret` of Synapse. */
      secret: secret(16, 'secret_path').optional(),
      /**
       * Delegated mode only, while the secret is being rotated: earlier secrets, accepted from Synapse and tried
       * towards it when it refuses `secret` (docs/production.md, "Rotating secrets"). Each `{ secret }` or
       * `{ secret_path }`.
       */
      previous_secrets: z.array(z.strictObject({ secret: secret(16, 'secret_path') })).default([]),
      appservice: appserviceBackend.optional(),
      jwt: jwtBackend.optional(),
      /** A homeserver admin's access token (Synapse, tuwunel): lets OP-side disabling lock the account too. */
      admin_token: secret(16, 'admin_token_path').optional(),
      /** How long a replica keeps a proxy token → homeserver token swap without reading the store (appservice, jwt). */
      token_cache_ttl: duration('2s'),
      listen: z.strictObject({ host: bindHost.default('127.0.0.1'), port: requiredPort() }).optional(),
      account_management_uri: url().optional(),
      upstream_timeout: duration('60s'),
      sync_timeout: duration('5m'),
      provisioning_timeout: duration('10s'),
      // Bounds how long a token revoked at the OP can still pass Synapse's introspection through the relay.
      introspection_cache_ttl: duration('10s'),
    })
    .superRefine((section, ctx) => {
      const problem = (key: string, message: string) => ctx.addIssue({ code: 'custom', message, path: [key], input: (section as Record<string, unknown>)[key] });
      const mode = section.mode;
      // A mode that failed its own check is the only problem worth reporting here.
      if (mode !== 'delegated' && mode !== 'appservice' && mode !== 'jwt') return;
      if (mode === 'delegated') {
        if (section.secret === undefined) problem('secret', 'is required (or set secret_path to a file holding it)');
        if (section.flavour !== 'synapse') problem('flavour', 'delegated mode needs Synapse (matrix_authentication_service); use mode: appservice for other homeservers');
      } else {
        if (section.secret !== undefined) problem('secret', `is only used in delegated mode (mode is ${mode})`);
        if (section.previous_secrets.length > 0) problem('previous_secrets', `is only used in delegated mode (mode is ${mode})`);
      }
      if (mode === 'appservice' && section.appservice === undefined) problem('appservice', 'is required with mode: appservice (registration_file at least)');
      if (mode !== 'appservice' && section.appservice !== undefined) problem('appservice', `is only used with mode: appservice (mode is ${mode})`);
      if (mode === 'jwt' && section.jwt === undefined) problem('jwt', 'is required with mode: jwt (key at least)');
      if (mode !== 'jwt' && section.jwt !== undefined) problem('jwt', `is only used with mode: jwt (mode is ${mode})`);
      if (mode === 'jwt' && !JWT_FLAVOURS.includes(section.flavour)) problem('flavour', `${section.flavour} has no JWT login (Synapse and tuwunel do); use mode: appservice`);
    }, evenAfterFieldErrors),
);

const hostPort = (defaultPort: number) => z.strictObject({ host: z.string().min(1), port: port(defaultPort) });

const store = z
  .strictObject({
    redis_url: z
      .string()
      .refine(
        (text) => {
          try {
            const parsed = new URL(text);
            return parsed.protocol === 'redis:' || parsed.protocol === 'rediss:';
          } catch {
            return false;
          }
        },
        { error: 'must be a redis:// or rediss:// URL' },
      )
      .optional(),
    sentinels: z.array(hostPort(26379)).min(1).optional(),
    sentinel_name: z.string().min(1).optional(),
    cluster_nodes: z.array(hostPort(6379)).min(1).optional(),
    key_prefix: z.string().default('mcp:'),
    /** How sessions are written (issue 19): see src/sessions/session-format.ts and docs/production.md. */
    session_format: z.enum(['auto', 'compatible', 'compact']).default('auto'),
  })
  .superRefine(
    (section, ctx) => {
      const given = (['redis_url', 'sentinels', 'cluster_nodes'] as const).filter((key) => section[key] !== undefined);
      for (const key of given.slice(1)) {
        ctx.addIssue({ code: 'custom', message: `cannot be combined with ${given[0]}: choose one Redis topology`, path: [key], input: section[key] });
      }
      if (section.sentinels !== undefined && section.sentinel_name === undefined) {
        ctx.addIssue({ code: 'custom', message: 'is required with sentinels (the monitored master name)', path: ['sentinel_name'], input: undefined });
      }
      if (section.sentinels === undefined && section.sentinel_name !== undefined) {
        ctx.addIssue({ code: 'custom', message: 'only makes sense with sentinels', path: ['sentinel_name'], input: section.sentinel_name });
      }
    },
    evenAfterFieldErrors,
  )
  .prefault({});

const passwordLogin = z
  .strictObject({ enabled: z.boolean().default(false), idp_id: z.string().min(1).optional() })
  .superRefine(
    (section, ctx) => {
      if (section.enabled === true && section.idp_id === undefined) {
        ctx.addIssue({ code: 'custom', message: 'is required when password login is enabled', path: ['idp_id'], input: undefined });
      }
    },
    evenAfterFieldErrors,
  )
  .prefault({});

const sessions = section(
  z.strictObject({
    /** expires_in_ms for clients that asked for refresh_token: true; other sessions never expire on their own. */
    refreshable_access_token_lifetime: duration('5m'),
    login_token_lifetime: duration('2m'),
    sso_login_lifetime: duration('30m'),
    revalidate_interval: duration('5m'),
    op_unreachable_grace: duration('1h'),
    /** How long a User-Interactive Auth session (device deletion) may take, fallback page included. */
    uia_session_lifetime: duration('15m'),
    /** Synapse's ui_auth.session_timeout: after a successful UIA, the same access token skips it this long (0: never). */
    uia_reuse_window: durationOrZero('2m'),
    encryption_key: secret(32, 'encryption_key_path'),
    /**
     * Keys that were `encryption_key` before a rotation: values sealed with them still open, new ones are sealed with
     * `encryption_key` (docs/production.md, "Rotating secrets"). Each entry is `{ key }` or `{ key_path }`.
     */
    previous_encryption_keys: z.array(z.strictObject({ key: secret(32, 'key_path') })).default([]),
  }),
);

const tokenBucket = (burst: number, perSecond: number) =>
  z
    .strictObject({
      // Not z.int(): its failure stops every later cross-field check, and all problems should show at once.
      burst: z.number().positive().refine(Number.isInteger, { error: 'must be a whole number' }).default(burst),
      per_second: z.number().positive().default(perSecond),
    })
    .prefault({});

const clientWhitelistEntry = url({}).refine((text) => text.endsWith('/'), {
  error: 'must end with "/" (entries are prefixes; without the slash https://app.example.org would also match https://app.example.org.evil)',
});

/**
 * `relay`: the homeserver's auth_metadata is the upstream OP's own metadata (the OP must do dynamic registration and
 * Matrix scopes itself). `hide`: the proxy answers auth_metadata and auth_issuer with 404 M_UNRECOGNIZED, so
 * clients that can do both use the legacy login the proxy serves. `serve`: the proxy is the homeserver's OAuth 2.0
 * server (MSC2964-2967, src/oauth/), with sign-in at the upstream OP through the SSO bridge.
 */
export const NATIVE_CLIENT_MODES = ['hide', 'relay', 'serve'] as const;
export type NativeClientMode = (typeof NATIVE_CLIENT_MODES)[number];

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

// ---------------------------------------------------------------------------------------------------- the config

export const configSchema = z
  .strictObject({
    server_name: z.string().refine(isMatrixServerName, { error: 'must be a Matrix server name: a host name or IP literal, optionally with :port' }),
    public_baseurl: noQuery(url({ protocols: ['http:', 'https:'], trailingSlash: 'add' })),
    listen: listener('127.0.0.1', 8009),
    // Processes serving the listeners (node:cluster, one shared socket per listener): "auto" = one per CPU the process
    // may use (os.availableParallelism()); 1 = no cluster, the proxy runs in the process that was started.
    workers: z
      .union([z.literal('auto'), z.number().positive().refine(Number.isInteger, { error: 'must be a whole number' })], {
        error: 'must be "auto" or a whole number of at least 1',
      })
      .default(1),
    trusted_proxies: z.array(parsedWith<string>(parseCidr)).default([]),
    homeserver,
    // What native OAuth 2.0 clients (MSC2964/MSC2965) are told at the homeserver's auth_metadata; README "Native
    // OIDC clients" argues the default.
    native_clients: z.enum(NATIVE_CLIENT_MODES).default('hide'),
    oauth_server: z
      .strictObject({
        // PEM RSA private key that signs ID tokens (RS256: matrix-js-sdk registers clients with
        // id_token_signed_response_alg RS256); its public half is the issuer's JWKS. Required with serve.
        signing_key: z
          .string()
          .refine(isRsaPrivateKeyPem, { error: 'must be a PEM RSA private key of at least 2048 bits (openssl genrsa 2048)' })
          .optional(),
        // Clients whose client_uri has one of these origins skip the consent page (MSC2966 ties a client's redirect
        // URIs to its client_uri host, so only that host's apps can claim it); every other client is asked.
        first_party_client_uris: z.array(url({ protocols: ['https:'] })).default([]),
        // MSC4198: what a native client's `login_hint=mxid:@alice:server` becomes in the OP's authorization request.
        // localpart: the localpart (what the client already knows); op_username: the OP user name alice's binding
        // remembers (e.g. her e-mail address), which ANYONE who starts an authorization can then read in the
        // redirect — only where those names are public (MSC4198 security considerations); off: no hint.
        upstream_login_hint: z.enum(['localpart', 'op_username', 'off']).default('localpart'),
        // RFC 8628 device authorization grant (TV and CLI clients): how long a user code can be entered, and the
        // polling interval the client is told (RFC 8628 §3.2 `interval`; polling faster gets slow_down, §3.5).
        device_code_lifetime: duration('10m'),
        device_code_poll_interval: duration('5s'),
      })
      .prefault({}),
    store,
    oidc_providers: z.array(oidcProvider).default([]),
    password_login: passwordLogin,
    sessions,
    rate_limits: z
      .strictObject({
        // MAS defaults: per IP burst 3 then 3/min; per account burst 1800 then 1800/h.
        login_per_ip: tokenBucket(3, 0.05),
        login_per_account: tokenBucket(1800, 0.5),
        // SSO starts per client IP: each one stores a pending login, so unauthenticated writes are bounded.
        sso_per_ip: tokenBucket(30, 0.5),
        // User codes typed on the device-verification page per client IP (RFC 8628 §5.1: guessing a code must be
        // slow); a person types one or two.
        device_user_code_per_ip: tokenBucket(10, 0.05),
        // OP introspections of tokens neither issued here nor cached (native-token relay), across all callers:
        // Synapse's introspection request does not carry the client's address, so no per-client bucket is possible.
        op_introspection: tokenBucket(20, 5),
        // IPv6 clients are counted per prefix: one customer gets a /64 (RFC 6177), so per /128 is no limit at all.
        ipv6_prefix_length: z.number().int().min(32).max(128).default(64),
      })
      .prefault({}),
    appservice_config_files: z.array(z.string().min(1)).default([]),
    // Sessions imported from Synapse by `migrate synapse` (issue 14) have no OP grant to re-validate: they end after
    // this long at the latest (README, "Migrating from Synapse", argues the default).
    migration: z.strictObject({ imported_session_lifetime: duration('90d') }).prefault({}),
    sso: z.strictObject({ client_whitelist: z.array(clientWhitelistEntry).default([]) }).prefault({}),
    account: z
      .strictObject({
        /** The account page under <public_baseurl>_matrix-compat-proxy/account (issue 15). */
        enabled: z.boolean().default(true),
        /** How long a sign-in to the account page lasts (its cookie's lifetime). */
        session_lifetime: duration('30m'),
        /** Signing out a device or approving a cross-signing reset needs an OP sign-in at most this old. */
        recent_auth_window: duration('5m'),
        /** The identity provider's own profile and password page, linked from the account page. */
        identity_provider_url: url().optional(),
      })
      .prefault({}),
    app_passwords: z
      .strictObject({
        /** App passwords made on the account page log in by m.login.password without the OP's password grant. */
        enabled: z.boolean().default(false),
        /** How many app passwords one user may keep. */
        max_per_user: z.number().int().min(1).max(100).default(10),
      })
      .prefault({}),
    // Discovery must lead clients to the proxy, not to the homeserver's own port (issue 18).
    well_known_client: z
      .strictObject({ serve: z.boolean().default(true), extra: z.record(z.string(), z.unknown()).default({}) })
      .prefault({}),
    metrics: z.strictObject({ enabled: z.boolean().default(true), listen: listener('127.0.0.1', 9009) }).prefault({}),
    admin: z.strictObject({ token: secret(32, 'token_path').optional() }).prefault({}),
    log: z.strictObject({ level: z.enum(LOG_LEVELS).default('info') }).prefault({}),
    max_request_body: byteSize(64 * 1024),
    // The listener has no request timeout (/sync long-polls pass through it): owned routes bound their body reads.
    request_body_timeout: duration('30s'),
    // Pass-through request bodies: longest silence while the body is still arriving (issue 12 #8).
    passthrough_body_idle_timeout: duration('60s'),
    max_client_connections: z.number().int().min(1).default(10_000),
  })
  .superRefine(checkConfig, evenAfterFieldErrors);

function isRsaPrivateKeyPem(text: string): boolean {
  try {
    const key = createPrivateKey(text);
    return key.asymmetricKeyType === 'rsa' && (key.asymmetricKeyDetails?.modulusLength ?? 0) >= 2048;
  } catch {
    return false;
  }
}

/** native_clients: serve needs its signing key and an OP to sign users in at. */
function checkNativeClients(config: Record<string, unknown>, ctx: z.core.$RefinementCtx): void {
  if (config['native_clients'] !== 'serve') return;
  if (field(config['oauth_server'], 'signing_key') === undefined) {
    ctx.addIssue({ code: 'custom', message: 'is required with native_clients: serve (or set signing_key_path)', path: ['oauth_server', 'signing_key'], input: undefined });
  }
  if (!Array.isArray(config['oidc_providers']) || config['oidc_providers'].length === 0) {
    ctx.addIssue({ code: 'custom', message: 'native_clients: serve signs users in at an upstream OP: configure oidc_providers', path: ['native_clients'], input: 'serve' });
  }
}

/** Rules across sections. */
function checkConfig(config: Record<string, unknown>, ctx: z.core.$RefinementCtx): void {
  checkNativeClients(config, ctx);

  const providers = Array.isArray(config['oidc_providers']) ? (config['oidc_providers'] as unknown[]) : [];
  const firstIndexOf = new Map<string, number>();
  providers.forEach((provider, index) => {
    const id = field(provider, 'idp_id');
    if (typeof id !== 'string') return;
    const first = firstIndexOf.get(id);
    if (first === undefined) firstIndexOf.set(id, index);
    else ctx.addIssue({ code: 'custom', message: `duplicate idp_id "${id}" (already used by oidc_providers[${first}])`, path: ['oidc_providers', index, 'idp_id'], input: id });
  });

  const passwordLoginSection = config['password_login'];
  const passwordIdp = field(passwordLoginSection, 'idp_id');
  if (field(passwordLoginSection, 'enabled') === true && typeof passwordIdp === 'string') {
    const index = firstIndexOf.get(passwordIdp);
    const path = ['password_login', 'idp_id'];
    if (index === undefined) {
      const known = [...firstIndexOf.keys()];
      ctx.addIssue({ code: 'custom', message: `no provider in oidc_providers has idp_id "${passwordIdp}"${known.length === 0 ? '' : ` (known: ${known.join(', ')})`}`, path, input: passwordIdp });
    } else if (field(field(providers[index], 'password_grant'), 'enabled') !== true) {
      ctx.addIssue({ code: 'custom', message: `provider "${passwordIdp}" does not allow it: set oidc_providers[${index}].password_grant.enabled: true`, path, input: passwordIdp });
    }
  }

  // The memory store lives inside one process: with several workers each would hold its own sessions, and a token
  // issued by one worker would be unknown to the next. "auto" is refused too, so a config that passes on a 1-CPU
  // machine does not fail on a bigger one.
  const workers = config['workers'];
  const storeSection = config['store'];
  const hasRedis = ['redis_url', 'sentinels', 'cluster_nodes'].some((key) => field(storeSection, key) !== undefined);
  if (workers !== undefined && workers !== 1 && !hasRedis) {
    ctx.addIssue({
      code: 'custom',
      message: `the in-memory store cannot be shared by several workers: configure store.redis_url (or sentinels, cluster_nodes), or set workers: 1`,
      path: ['workers'],
      input: workers,
    });
  }

  const listeners: { path: PropertyKey[]; host: unknown; port: unknown }[] = [
    { path: ['listen'], host: field(config['listen'], 'host'), port: field(config['listen'], 'port') },
  ];
  const homeserverListen = field(config['homeserver'], 'listen');
  if (homeserverListen !== undefined) listeners.push({ path: ['homeserver', 'listen'], host: field(homeserverListen, 'host'), port: field(homeserverListen, 'port') });
  if (field(config['metrics'], 'enabled') !== false) {
    const metricsListen = field(config['metrics'], 'listen');
    listeners.push({ path: ['metrics', 'listen'], host: field(metricsListen, 'host'), port: field(metricsListen, 'port') });
  }
  listeners.forEach((current, index) => {
    if (typeof current.port !== 'number' || current.port === 0) return;
    const clash = listeners.slice(0, index).find((earlier) => earlier.port === current.port && (earlier.host === current.host || isWildcard(earlier.host) || isWildcard(current.host)));
    if (clash !== undefined) {
      ctx.addIssue({ code: 'custom', message: `port ${current.port} is already used by ${clash.path.join('.')}`, path: [...current.path, 'port'], input: current.port });
    }
  });
}

function field(value: unknown, key: string): unknown {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>)[key] : undefined;
}

function isWildcard(host: unknown): boolean {
  return host === '0.0.0.0' || host === '::';
}

type DeepReadonly<T> = T extends readonly (infer Item)[]
  ? readonly DeepReadonly<Item>[]
  : T extends object
    ? { readonly [K in keyof T]: DeepReadonly<T[K]> }
    : T;

/** The validated, frozen configuration. */
export type Config = DeepReadonly<z.output<typeof configSchema>>;
export type OidcProviderConfig = Config['oidc_providers'][number];

import nunjucks from 'nunjucks';
import { createTemplateEnvironment } from '../config/mapping-templates.js';

/**
 * Synapse's default OIDC mapping provider (JinjaOidcMappingProvider), compatible with the templates admins already
 * have in homeserver.yaml: `{{ user.preferred_username }}`, `{{ user.name|capitalize }}`,
 * `{{ user.email.split('@')[0] }}`. The config loader refuses a template that does not compile or names an unknown
 * filter (config/mapping-templates.ts, the same environment); this module compiles once more at start-up and renders.
 */
export interface MappingConfig {
  readonly subject_claim?: string | undefined;
  readonly subject_template?: string | undefined;
  readonly localpart_template?: string | undefined;
  readonly display_name_template?: string | undefined;
  readonly email_template?: string | undefined;
  readonly picture_claim?: string | undefined;
  readonly extra_attributes?: Readonly<Record<string, string>> | undefined;
}

export interface MappedIdentity {
  readonly subject: string;
  /**
   * Valid per the Matrix user-id grammar and Synapse's registration rules; exactly as rendered unless case folding
   * is allowed (then `localpartFolded` says whether lower-casing changed it). Undefined when no template gave one.
   */
  readonly localpart?: string;
  readonly localpartFolded?: boolean;
  readonly displayName?: string;
  readonly email?: string;
  readonly picture?: string;
}

export type MappingFailure =
  | { readonly kind: 'missing_subject' }
  | { readonly kind: 'invalid_localpart'; readonly rendered: string }
  /** Lower-casing, NFKC or trimming would change the localpart: another spelling of someone else's name (issue 12 #2). */
  | { readonly kind: 'folded_localpart'; readonly rendered: string; readonly folded: string }
  | { readonly kind: 'template_error'; readonly template: string; readonly message: string };

export class MappingError extends Error {
  constructor(readonly idpId: string, readonly failure: MappingFailure) {
    super(`oidc provider ${idpId}: ${describe(failure)}`);
    this.name = 'MappingError';
  }
}

/** Matrix spec, "User Identifiers": the historical-compatible localpart grammar new accounts must satisfy. */
const LOCALPART_PATTERN = /^[a-z0-9._=\-/+]+$/;

export function isValidLocalpart(localpart: string, serverName: string): boolean {
  // The full user id (@localpart:server) must not exceed 255 bytes. Synapse's registration also refuses a leading
  // `_` (reserved for appservices: synapse/handlers/register.py check_username), so such a name is refused here,
  // before it is claimed, rather than by the homeserver after.
  return LOCALPART_PATTERN.test(localpart) && !localpart.startsWith('_') && Buffer.byteLength(`@${localpart}:${serverName}`) <= 255;
}

export interface MapperOptions {
  /** Accept a rendered localpart that only lower-casing changes (`ALICE` → `alice`). Default off. */
  readonly caseFolding?: boolean;
}

export interface UserMapper {
  map(claims: Readonly<Record<string, unknown>>): MappedIdentity;
  /** The claims the subject, localpart, display name and email mapping read that `claims` lacks (for diagnostics). */
  missingClaims(claims: Readonly<Record<string, unknown>>): string[];
}

/** `user.name`, `user['name']`, `user["name"]` in a template: the top-level claims it reads. */
const CLAIM_REFERENCE = /\buser\s*(?:\.\s*([A-Za-z_$][\w$]*)|\[\s*(?:'([^']+)'|"([^"]+)")\s*\])/g;

export function claimsReadBy(template: string): string[] {
  const names = new Set<string>();
  for (const match of template.matchAll(CLAIM_REFERENCE)) {
    const name = match[1] ?? match[2] ?? match[3];
    if (name !== undefined) names.add(name);
  }
  return [...names];
}

export function compileUserMapper(idpId: string, config: MappingConfig, serverName: string, options: MapperOptions = {}): UserMapper {
  const env = sandboxedEnvironment();
  const compile = (name: string, source: string | undefined) => {
    if (source === undefined) return undefined;
    try {
      // eagerCompile: syntax errors surface now, at start-up, not at the first login.
      // The template's own surrounding whitespace (a YAML block scalar's newline) is no part of any value.
      const template = new nunjucks.Template(source.trim(), env, undefined, true);
      return { name, template };
    } catch (err: unknown) {
      throw new MappingError(idpId, { kind: 'template_error', template: name, message: errorText(err) });
    }
  };
  const subjectTemplate = compile('subject_template', config.subject_template);
  const localpartTemplate = compile('localpart_template', config.localpart_template);
  const displayNameTemplate = compile('display_name_template', config.display_name_template);
  const emailTemplate = compile('email_template', config.email_template);
  const subjectClaim = config.subject_claim ?? 'sub';
  const pictureClaim = config.picture_claim ?? 'picture';

  const render = (compiled: ReturnType<typeof compile>, claims: Readonly<Record<string, unknown>>, trim = true): string | undefined => {
    if (compiled === undefined) return undefined;
    try {
      const output = compiled.template.render({ user: toSafeValue(claims) });
      const text = trim ? output.trim() : output;
      return text.trim() === '' ? undefined : text;
    } catch (err: unknown) {
      throw new MappingError(idpId, { kind: 'template_error', template: compiled.name, message: errorText(err) });
    }
  };

  const claimsRead = [
    ...(config.subject_template === undefined ? [subjectClaim] : claimsReadBy(config.subject_template)),
    ...[config.localpart_template, config.display_name_template, config.email_template].flatMap((source) => (source === undefined ? [] : claimsReadBy(source))),
  ];

  return {
    missingClaims(claims) {
      return [...new Set(claimsRead)].filter((name) => {
        const value = claimAt(claims, name);
        return value === undefined || value === null || value === '';
      });
    },
    map(claims) {
      const subject = subjectTemplate !== undefined ? render(subjectTemplate, claims) : stringClaim(claims, subjectClaim);
      if (subject === undefined) throw new MappingError(idpId, { kind: 'missing_subject' });
      // Untrimmed: ` bob ` is not `bob`.
      const rendered = render(localpartTemplate, claims, false);
      let localpart: string | undefined;
      let localpartFolded = false;
      if (rendered !== undefined) {
        ({ localpart, folded: localpartFolded } = checkedLocalpart(idpId, rendered, serverName, options));
      }
      const displayName = render(displayNameTemplate, claims);
      const email = render(emailTemplate, claims);
      const picture = stringClaim(claims, pictureClaim);
      return {
        subject,
        ...(localpart === undefined ? {} : { localpart, localpartFolded }),
        ...(displayName === undefined ? {} : { displayName }),
        ...(email === undefined ? {} : { email }),
        ...(picture === undefined ? {} : { picture }),
      };
    },
  };
}

/**
 * A rendered localpart as the account it names. Folding is how distinct OP users become one Matrix account: `ALICE`,
 * ` bob ` and `Kelvin` (KELVIN SIGN) would otherwise map to the existing `alice`, `bob` and `kelvin` (issue 12
 * #2). Synapse's JinjaOidcMappingProvider lower-cases the rendered localpart (map_username_to_mxid_localpart); here
 * any change by trimming or NFKC is refused, and lower-casing happens only when `localpart_case_folding` allows it.
 */
function checkedLocalpart(idpId: string, rendered: string, serverName: string, options: MapperOptions): { localpart: string; folded: boolean } {
  const normalised = rendered.trim().normalize('NFKC');
  const folded = normalised.toLowerCase();
  if (normalised !== rendered || (folded !== rendered && options.caseFolding !== true)) {
    throw new MappingError(idpId, { kind: 'folded_localpart', rendered, folded });
  }
  if (!isValidLocalpart(folded, serverName)) throw new MappingError(idpId, { kind: 'invalid_localpart', rendered });
  return { localpart: folded, folded: folded !== rendered };
}

/** Reads a claim by dotted path (`resource_access.synapse.roles`), which Synapse cannot (synapse#14835). */
export function claimAt(claims: Readonly<Record<string, unknown>>, path: string): unknown {
  if (Object.hasOwn(claims, path)) return claims[path];
  let value: unknown = claims;
  for (const part of path.split('.')) {
    if (typeof value !== 'object' || value === null || !Object.hasOwn(value, part)) return undefined;
    value = (value as Record<string, unknown>)[part];
  }
  return value;
}

export interface AttributeRequirement {
  readonly attribute: string;
  readonly value?: string | undefined;
  readonly one_of?: readonly string[] | undefined;
}

/** Synapse semantics: every requirement must hold; a list claim satisfies it when any element matches. */
export function meetsRequirements(claims: Readonly<Record<string, unknown>>, requirements: readonly AttributeRequirement[]): boolean {
  return requirements.every((requirement) => {
    const accepted = requirement.one_of ?? (requirement.value === undefined ? [] : [requirement.value]);
    const actual = claimAt(claims, requirement.attribute);
    const values = Array.isArray(actual) ? actual : [actual];
    return values.some((value) => typeof value === 'string' && accepted.includes(value));
  });
}

function stringClaim(claims: Readonly<Record<string, unknown>>, name: string): string | undefined {
  const value = claimAt(claims, name);
  if (typeof value === 'string' && value !== '') return value;
  if (typeof value === 'number') return String(value);
  return undefined;
}

const FORBIDDEN_MEMBERS = new Set(['constructor', '__proto__', 'prototype', '__defineGetter__', '__defineSetter__', '__lookupGetter__', '__lookupSetter__']);
let memberLookupGuarded = false;

/**
 * Nunjucks has no sandbox; templates are admin-written, but claims come from the OP. Blocking the members that lead
 * from a value to Function (`''.constructor.constructor`) keeps a template from reaching the process.
 */
function sandboxedEnvironment(): nunjucks.Environment {
  if (!memberLookupGuarded) {
    const runtime = nunjucks.runtime as unknown as { memberLookup: (obj: unknown, val: unknown) => unknown };
    const original = runtime.memberLookup;
    runtime.memberLookup = (obj, val) => (typeof val === 'string' && FORBIDDEN_MEMBERS.has(val) ? undefined : original(obj, val));
    memberLookupGuarded = true;
  }
  return createTemplateEnvironment();
}

/** A deep copy with null prototypes: templates see only the claims, nothing inherited. */
function toSafeValue(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(toSafeValue);
  if (typeof value === 'object' && value !== null) {
    const copy = Object.create(null) as Record<string, unknown>;
    for (const [key, inner] of Object.entries(value)) copy[key] = toSafeValue(inner);
    return copy;
  }
  return value;
}

function describe(failure: MappingFailure): string {
  switch (failure.kind) {
    case 'missing_subject':
      return 'the subject claim is missing from the user info';
    case 'invalid_localpart':
      return `localpart_template rendered ${JSON.stringify(failure.rendered)}, which is not a valid Matrix localpart (a-z, 0-9, ._=-/+, not starting with _)`;
    case 'folded_localpart':
      return `localpart_template rendered ${JSON.stringify(failure.rendered)}, which names the account ${JSON.stringify(failure.folded)} only after trimming, NFKC or lower-casing; refused so that distinct OP users cannot share an account (localpart_case_folding allows lower-casing)`;
    case 'template_error':
      return `${failure.template}: ${failure.message}`;
  }
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message.replace(/\s+/g, ' ').trim() : String(err);
}

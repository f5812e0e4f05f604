import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { MatrixError } from '../errors/matrix-error.js';
import { clientAddress, logOf } from '../http/request-state.js';
import { resolveAccount, type PrefetchedAccount } from '../identity/account-resolver.js';
import type { Binding } from '../identity/bindings.js';
import { provisionAccount } from '../identity/account-provisioning.js';
import { UpstreamError, type UpstreamGrant, type UpstreamProvider } from '../oidc/upstream.js';
import type { OpOrigin } from '../sessions/session.js';
import { isPlausiblePassword, type AccountName } from '../security/account-name.js';
import { accountRefusal, resolveOrRefuse } from './sign-in.js';

/**
 * The OP password check (password_login: the OAuth password grant at the OP), shared by POST /login
 * (m.login.password) and the OAuth server's own sign-in form (oauth/interaction.ts), so both take the same throttle
 * buckets, the same binding and mapping rules, and fail with the same errors.
 */

/** A name worth asking the OP about. */
export type KnownAccountName = Extract<AccountName, { kind: 'localpart' | 'email' }>;

/** One body for every credential failure: no user enumeration. */
export function invalidCredentials(cause?: unknown): MatrixError {
  return new MatrixError(403, 'M_FORBIDDEN', 'Invalid username/password', {}, cause);
}

/**
 * The throttle in front of every password check; returns `admit`, which takes one more attempt from the same
 * buckets (each OP call costs one). Throws the 429 of the throttle, or the one 403 for a name or password no OP
 * would take.
 */
export async function admitPasswordAttempt(ctx: Context, deps: AppDeps, who: AccountName, password: string): Promise<{ account: KnownAccountName; admit: () => Promise<void> }> {
  // Names that are no account and passwords no OP would take still cost a per-IP attempt, then get the one 403 every
  // credential failure gets: never a request to the OP, never a 5xx (issue 12 #4).
  if (who.kind === 'foreign_server' || who.kind === 'malformed' || !isPlausiblePassword(password)) {
    await deps.throttle.check(clientAddress(ctx), undefined);
    deps.metrics.logins.inc({ type: 'password', outcome: 'rejected' });
    throw invalidCredentials();
  }
  // One bucket per account, whatever the spelling (security/account-name.ts); every OP call takes one attempt.
  const accountKey = await deps.accountAliases.throttleKey(who);
  const admit = () => deps.throttle.check(clientAddress(ctx), accountKey);
  await admit();
  return { account: who, admit };
}

/**
 * The password checked at the OP (the attempt already admitted), the account resolved (bindings, mapping
 * templates, attribute requirements) and provisioned; then `signIn` is given who signed in and the session origin
 * to record, and its result returned. The e-mail alias of the account is written while `signIn` runs (issue 19,
 * login cost: one store round trip off the path); a successful sign-in waits for it, and its failure is only logged.
 */
export async function opPasswordSignIn<T>(
  ctx: Context,
  deps: AppDeps,
  who: KnownAccountName,
  password: string,
  admit: () => Promise<void>,
  signIn: (signedIn: { localpart: string; origin: OpOrigin; binding: Binding }) => Promise<T>,
  options: { readonly bindingCheckedAtWrite?: boolean } = {},
): Promise<T> {
  const idpId = deps.config.password_login.idp_id;
  const provider = idpId === undefined ? undefined : deps.providers.get(idpId);
  const policy = idpId === undefined ? undefined : deps.policies.get(idpId);
  // The config loader refuses a password_login.idp_id that names no provider; this is a bug if it happens.
  if (provider === undefined || policy === undefined) throw new Error('password_login.idp_id names no provider');

  const typed = who.kind === 'localpart' ? who.name : who.address;
  // The typed localpart's homeserver user is asked for while the OP checks the password: in the usual case the
  // account resolves to that localpart and the query is off the login's path (issue 19, login cost). A read only,
  // after the throttle admitted the attempt (so bounded by it); its failure counts only if resolution uses it. The
  // answer to the client does not wait for it when the OP refuses, so existing and unknown names look alike.
  // Its binding is read too when the caller reads it again in the step that writes the session
  // (`bindingCheckedAtWrite`: a removal meanwhile refuses the session, compat/login.ts), and used only if it binds
  // the subject the OP authenticated: that check at the write is what keeps a binding read ahead from being stale.
  let prefetched: PrefetchedAccount | undefined;
  if (who.kind === 'localpart') {
    const user = deps.homeserver.queryUser(who.name);
    user.catch(() => undefined);
    const binding = options.bindingCheckedAtWrite === true ? deps.bindings.findByLocalpart(who.name) : undefined;
    binding?.catch(() => undefined);
    prefetched = { localpart: who.name, user, ...(binding === undefined ? {} : { binding }) };
  }
  // The sign-in's time is taken before the OP is asked: a back-channel logout of this subject that arrives while the
  // grant is answered, resolved or provisioned finds no session yet, and its marker must count against this login.
  const askedAt = deps.clock.now();
  let grant: UpstreamGrant;
  let opUsername: string;
  try {
    ({ grant, opUsername } = await passwordGrant(deps, provider, policy.issuer, who, typed, password, admit));
  } catch (err: unknown) {
    const refused = err instanceof UpstreamError && credentialsRefused(err);
    deps.metrics.logins.inc({ type: 'password', outcome: refused ? 'rejected' : 'error' });
    if (refused) throw invalidCredentials(err);
    throw err;
  }

  const account = await resolveOrRefuse(ctx, deps, policy.idpId, () => resolveAccount(policy, grant, deps, opUsername, prefetched), accountRefusal, grant);
  // Independent (the OP has vouched for both): the alias write overlaps provisioning and the caller's sign-in.
  // Not fatal: without the alias, the throttle counts that e-mail spelling in a bucket of its own until the next
  // sign-in writes it (security/account-name.ts); the session the user asked for is not given up for it.
  const remembered = deps.accountAliases.remember(verifiedAddresses(who, grant), account.localpart).catch((err: unknown) => {
    logOf(ctx, deps.logger).warn({ event: 'account_alias.write_failed', err }, 'account_alias.write_failed');
  });
  await provisionAccount(deps.homeserver, account, deps.bindings);

  const origin: OpOrigin = {
    kind: 'password',
    idpId: policy.idpId,
    issuer: policy.issuer,
    sub: grant.sub,
    ...(grant.sid === undefined ? {} : { sid: grant.sid }),
    ...(grant.refreshToken === undefined ? {} : { sealedOpRefreshToken: deps.keys.seal(grant.refreshToken) }),
    lastValidatedAt: askedAt,
  };
  const [result] = await Promise.all([signIn({ localpart: account.localpart, origin, binding: account.binding }), remembered]);
  return result;
}

/**
 * The OP is asked about the name the user typed, never first about another subject's OP user name: a localpart
 * squatted by someone else must not send the rightful user's password to the squatter's account (issue 12 #2). Only
 * when the OP refuses the typed name, and the typed localpart's binding remembers a different OP user name (a
 * localpart made from another claim, e.g. the e-mail), is that name — the one of the account the user named — tried.
 */
async function passwordGrant(
  deps: AppDeps,
  provider: UpstreamProvider,
  issuer: string,
  who: AccountName,
  typed: string,
  password: string,
  admit: () => Promise<void>,
): Promise<{ grant: UpstreamGrant; opUsername: string }> {
  try {
    return { grant: await provider.passwordGrant(typed, password), opUsername: typed };
  } catch (err: unknown) {
    if (!(err instanceof UpstreamError && credentialsRefused(err)) || who.kind !== 'localpart') throw err;
    const bound = await deps.bindings.findByLocalpart(who.name);
    if (bound?.opUsername === undefined || bound.issuer !== issuer || bound.opUsername === typed) throw err;
    // A second password attempt at the OP: it takes its own token from the throttle, like any other.
    await admit();
    return { grant: await provider.passwordGrant(bound.opUsername, password), opUsername: bound.opUsername };
  }
}

/**
 * Which OP answers to the password grant mean "these credentials are refused" (403, not 503): RFC 6749 §5.2
 * invalid_grant, and invalid_request with a 4xx — the proxy always sends a complete grant request, so what an OP
 * objects to is what the user typed (an empty or over-long user name or password). Decided here, at the route, from
 * the OAuth code oidc/ records (which maps such an answer to `unavailable` for the other grants). Client-registration
 * errors (invalid_client, unauthorized_client) and outages stay 503.
 */
function credentialsRefused(err: UpstreamError): boolean {
  if (err.kind === 'invalid_grant') return true;
  return err.oauthError === 'invalid_request' && err.status !== undefined && err.status >= 400 && err.status < 500;
}

/** The addresses that now provably lead to this account: the one typed (the OP took it), and a verified `email` claim. */
function verifiedAddresses(who: AccountName, grant: UpstreamGrant): string[] {
  const addresses: string[] = [];
  if (who.kind === 'email') addresses.push(who.address);
  const claimed = grant.claims['email'];
  if (typeof claimed === 'string' && grant.claims['email_verified'] === true) addresses.push(claimed);
  return addresses;
}

import { canonicalUser, MAX_ACCOUNT_NAME_LENGTH } from '../security/account-name.js';
import type { BindingStore } from './bindings.js';

/**
 * MSC4198 `login_hint` (the OAuth 2.0 API's authorization request; OIDC Core §3.1.2.1 leaves its content to the
 * server): `prefix ":" value`, and the one prefix Matrix defines is `mxid`, whose value is a Matrix user id
 * (`mxid:@alice:example.org`). A hint is only a hint: the client must cope with the user signing in as someone else,
 * so anything the proxy cannot use is ignored, except a user of ANOTHER server, which means the client talks to the
 * wrong homeserver (the caller refuses that clearly).
 */
export type LoginHint =
  | { readonly kind: 'none' }
  | { readonly kind: 'user'; readonly localpart: string }
  | { readonly kind: 'foreign_server'; readonly userId: string }
  /** Not `mxid:@…`, not a user id, a prefix this server does not know, control characters, over-long: ignored. */
  | { readonly kind: 'ignored' };

// MSC4198's ABNF: prefix = 1*(VCHAR except ":"), value = 1*VCHAR (VCHAR: %x21-7E, so no spaces or controls).
const HINT = /^([\x21-\x39\x3b-\x7e]+):([\x21-\x7e]+)$/;

export function parseLoginHint(raw: unknown, serverName: string): LoginHint {
  if (raw === undefined || raw === null || raw === '') return { kind: 'none' };
  if (typeof raw !== 'string' || raw.length > MAX_ACCOUNT_NAME_LENGTH + 'mxid:'.length) return { kind: 'ignored' };
  const match = HINT.exec(raw);
  if (match === null || match[1] !== 'mxid') return { kind: 'ignored' };
  const userId = match[2] ?? '';
  // The spec's user id: "@" localpart ":" server_name; both parts non-empty.
  const separator = userId.indexOf(':');
  if (!userId.startsWith('@') || separator < 2 || separator === userId.length - 1) return { kind: 'ignored' };
  const account = canonicalUser(userId, serverName);
  switch (account.kind) {
    case 'localpart':
      return { kind: 'user', localpart: account.name };
    case 'foreign_server':
      return { kind: 'foreign_server', userId };
    case 'email':
    case 'malformed':
      return { kind: 'ignored' };
  }
}

/**
 * What to send the upstream OP as its own `login_hint` for a Matrix user (MSC4198 "passing a login_hint to upstream
 * providers"; the OP treats it as a suggestion, a prefilled user name, never as a decision):
 * - `localpart`: the localpart, the OP user name under the usual `preferred_username` mapping. Nothing is looked up,
 *   so the redirect tells an unauthenticated requester nothing it did not send;
 * - `op_username`: the OP user name the binding remembers (the name the OP accepted at a password login, e.g. an
 *   e-mail address) when the localpart is bound at this OP, nothing when it is bound at another OP, else the
 *   localpart. Whoever starts an authorization for @alice reads that name in the redirect to the OP, so this is for
 *   deployments where those names are public anyway (MSC4198 security consideration 2);
 * - `off`: no hint.
 */
export async function upstreamLoginHint(
  mode: 'localpart' | 'op_username' | 'off',
  bindings: Pick<BindingStore, 'findByLocalpart'>,
  issuer: string,
  localpart: string,
): Promise<string | undefined> {
  switch (mode) {
    case 'off':
      return undefined;
    case 'localpart':
      return localpart;
    case 'op_username': {
      const binding = await bindings.findByLocalpart(localpart);
      if (binding === undefined) return localpart;
      if (binding.issuer !== issuer) return undefined;
      return binding.opUsername ?? localpart;
    }
  }
}

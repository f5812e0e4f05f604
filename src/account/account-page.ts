import type { Context } from 'koa';
import type { AppDeps } from '../app-deps.js';
import { singleQueryValue } from '../http/request-state.js';
import { sendPage } from '../pages/html-page.js';
import { crossSigningResetPage, deactivatePage, devicePage, overviewPage } from '../pages/account-pages.js';
import { messages } from '../pages/messages.js';
import { ssoError } from '../compat/sso/sso-error.js';
import { accountCsrfToken, currentAccountSession } from './account-cookie.js';
import { devicesOf } from './account-devices.js';
import { accountPaths } from './account-paths.js';
import { accountProvider, startAccountSignIn } from './account-sign-in.js';

/**
 * MSC4191 deep links (`?action=…&device_id=…`), with the older names clients still send (`org.matrix.session_*`,
 * and the unprefixed prototype names). An unknown or missing action shows the page itself, as the MSC asks.
 */
type PageAction = 'profile' | 'devices_list' | 'device_view' | 'device_delete' | 'cross_signing_reset' | 'account_deactivate';

const ACTIONS: Readonly<Record<string, PageAction>> = {
  'org.matrix.profile': 'profile',
  profile: 'profile',
  'org.matrix.devices_list': 'devices_list',
  'org.matrix.sessions_list': 'devices_list',
  sessions_list: 'devices_list',
  'org.matrix.device_view': 'device_view',
  'org.matrix.session_view': 'device_view',
  session_view: 'device_view',
  'org.matrix.device_delete': 'device_delete',
  'org.matrix.session_end': 'device_delete',
  session_end: 'device_delete',
  'org.matrix.cross_signing_reset': 'cross_signing_reset',
  'org.matrix.account_deactivate': 'account_deactivate',
};

/** GET /_matrix-compat-proxy/account — the account page; signs the browser in at the OP first when needed. */
export async function getAccountPage(ctx: Context, deps: AppDeps): Promise<void> {
  if (!deps.config.account.enabled) throw ssoError('account_unavailable');
  const current = await currentAccountSession(ctx, deps);
  if (current === undefined) {
    await startAccountSignIn(ctx, deps, ctx.originalUrl.startsWith(accountPaths.page) ? ctx.originalUrl : accountPaths.page, false);
    return;
  }
  const { id, session } = current;
  const csrfToken = accountCsrfToken(id);
  const action = ACTIONS[singleQueryValue(ctx, 'action') ?? ''] ?? 'profile';
  const deviceId = singleQueryValue(ctx, 'device_id');
  const identityProviderUrl = deps.config.account.identity_provider_url;
  const formActions = await opFormActions(deps);
  const identityProvider = { identityProviderHost: new URL(session.issuer).host, ...(identityProviderUrl === undefined ? {} : { identityProviderUrl }) };

  switch (action) {
    case 'cross_signing_reset':
      sendPage(ctx, crossSigningResetPage({ csrfToken, paths: accountPaths, formActions }));
      return;
    case 'account_deactivate':
      sendPage(ctx, deactivatePage({ ...identityProvider, paths: accountPaths }));
      return;
    case 'device_view':
    case 'device_delete': {
      const { devices } = await devicesOf(deps, session);
      const device = devices.find((candidate) => candidate.deviceId === deviceId);
      // Only the user's own devices exist here: another user's device id is as unknown as a made-up one.
      if (device === undefined) throw ssoError('device_unknown');
      sendPage(ctx, devicePage({ device, deleteIntent: action === 'device_delete', csrfToken, paths: accountPaths, formActions }));
      return;
    }
    case 'profile':
    case 'devices_list': {
      const { devices, homeserverIncomplete } = await devicesOf(deps, session);
      const signedOut = singleQueryValue(ctx, 'signed_out');
      sendPage(
        ctx,
        overviewPage({
          userId: `@${session.localpart}:${deps.config.server_name}`,
          devices,
          homeserverIncomplete,
          csrfToken,
          ...identityProvider,
          ...(signedOut === undefined ? {} : { notice: messages.account.deviceSignedOut(signedOut) }),
          paths: accountPaths,
          formActions,
        }),
      );
      return;
    }
  }
}

/** The CSP form-action source of the OP's authorization endpoint (see FormTargets); none when it cannot be named. */
async function opFormActions(deps: AppDeps): Promise<string[]> {
  const provider = accountProvider(deps);
  if (provider === undefined) return [];
  let endpoint: unknown;
  try {
    endpoint = (await provider.metadata())['authorization_endpoint'];
  } catch {
    endpoint = provider.issuer;
  }
  try {
    const url = new URL(typeof endpoint === 'string' ? endpoint : provider.issuer);
    // CSP host-source has no IPv6 literal syntax: then the scheme alone.
    return [/^[a-z0-9.-]+$/i.test(url.hostname) ? url.origin : url.protocol];
  } catch {
    return [];
  }
}

import { html, type HtmlPage, type SafeHtml } from './html-page.js';
import { messages } from './messages.js';

/** One row of the device list: what the proxy and the homeserver know of a device, merged. */
export interface DeviceView {
  readonly deviceId: string;
  readonly name?: string;
  readonly kind: keyof typeof messages.account.deviceKinds;
  /** ms since epoch */
  readonly lastSeen?: number;
  readonly lastIp?: string;
  readonly userAgent?: string;
}

/**
 * Where the page's forms may lead: the page itself, and the OP's authorization endpoint, because a sensitive action
 * with a stale sign-in answers with a redirect to the OP (Chromium checks form-action against a form's redirects,
 * CSP3 §6.3.1.1).
 */
export interface FormTargets {
  readonly formActions: readonly string[];
}

export interface AccountPaths {
  readonly page: string;
  readonly signOut: string;
  readonly deviceSignOut: string;
  readonly crossSigningReset: string;
}

export interface OverviewView extends FormTargets {
  readonly userId: string;
  readonly devices: readonly DeviceView[];
  readonly homeserverIncomplete: boolean;
  readonly csrfToken: string;
  readonly identityProviderUrl?: string;
  readonly identityProviderHost: string;
  readonly notice?: string;
  readonly paths: AccountPaths;
}

const dateFormat = new Intl.DateTimeFormat('en-GB', { dateStyle: 'medium', timeStyle: 'short', timeZone: 'UTC' });

function when(ms: number): string {
  return `${dateFormat.format(new Date(ms))} UTC`;
}

function deviceName(device: DeviceView): string {
  return device.name ?? device.deviceId;
}

function deviceLink(paths: AccountPaths, action: string, deviceId: string): string {
  return `${paths.page}?${new URLSearchParams({ action, device_id: deviceId }).toString()}`;
}

function signOutOfPageForm(view: { csrfToken: string; paths: AccountPaths }): SafeHtml {
  return html`<form method="post" action="${view.paths.signOut}">
<input type="hidden" name="csrf_token" value="${view.csrfToken}">
<button class="button secondary" type="submit">${messages.account.signOutPage}</button>
</form>`;
}

/** The account page (MSC4191 `org.matrix.profile` and `org.matrix.devices_list` land here). */
export function overviewPage(view: OverviewView): HtmlPage {
  const text = messages.account;
  const rows = view.devices.map(
    (device) => html`<li class="device" data-device-id="${device.deviceId}">
<p><strong>${deviceName(device)}</strong></p>
<p class="muted">${text.deviceKinds[device.kind]}<br>${device.lastSeen === undefined ? text.neverSeen : text.lastSeen(when(device.lastSeen))}${device.lastIp === undefined ? '' : ` ${text.fromAddress(device.lastIp)}`}</p>
<a href="${deviceLink(view.paths, 'org.matrix.device_view', device.deviceId)}">${text.viewDevice}</a>
</li>`,
  );
  const profile =
    view.identityProviderUrl === undefined
      ? html`<p>${text.profileText} ${text.profileNoLink(view.identityProviderHost)}</p>`
      : html`<p>${text.profileText}</p><a class="button secondary" href="${view.identityProviderUrl}">${text.profileLink}</a>`;
  return {
    status: 200,
    title: text.title,
    formActions: view.formActions,
    body: html`<h1>${text.heading}</h1>
<p class="muted">${text.signedInAs}</p>
<p class="mxid">${view.userId}</p>
${view.notice === undefined ? '' : html`<p class="notice" id="notice">${view.notice}</p>`}
<h2 id="profile">${text.profileHeading}</h2>
${profile}
<h2 id="devices">${text.devicesHeading}</h2>
<p>${text.devicesIntro}</p>
${view.homeserverIncomplete ? html`<p class="warning">${text.devicesIncomplete}</p>` : ''}
${rows.length === 0 ? html`<p>${text.noDevices}</p>` : html`<ul class="devices">${rows}</ul>`}
<h2 id="encryption">${text.encryptionHeading}</h2>
<p>${text.encryptionText}</p>
<a class="button secondary" href="${view.paths.page}?action=org.matrix.cross_signing_reset">${text.encryptionLink}</a>
<p><a href="${view.paths.page}?action=org.matrix.account_deactivate">${text.deactivateLink}</a></p>
${signOutOfPageForm(view)}`.value,
  };
}

export interface DeviceViewPage extends FormTargets {
  readonly device: DeviceView;
  /** MSC4191 `org.matrix.device_delete`: the page leads with the question (destructive actions are shown first). */
  readonly deleteIntent: boolean;
  readonly csrfToken: string;
  readonly paths: AccountPaths;
}

export function devicePage(view: DeviceViewPage): HtmlPage {
  const text = messages.account;
  const name = deviceName(view.device);
  return {
    status: 200,
    title: text.title,
    formActions: view.formActions,
    body: html`<h1>${view.deleteIntent ? text.deviceDeleteHeading(name) : text.deviceHeading(name)}</h1>
<p class="muted">${text.deviceId}</p>
<p class="mxid">${view.device.deviceId}</p>
<p>${text.deviceKinds[view.device.kind]}</p>
<p class="muted">${view.device.lastSeen === undefined ? text.neverSeen : text.lastSeen(when(view.device.lastSeen))}${view.device.lastIp === undefined ? '' : ` ${text.fromAddress(view.device.lastIp)}`}</p>
<p class="warning">${text.deviceDeleteText}</p>
<form method="post" action="${view.paths.deviceSignOut}">
<input type="hidden" name="csrf_token" value="${view.csrfToken}">
<input type="hidden" name="device_id" value="${view.device.deviceId}">
<button class="button" id="sign-out-device" type="submit">${text.signOutDevice}</button>
</form>
<a class="button secondary" href="${view.paths.page}#devices">${text.backToAccount}</a>`.value,
  };
}

export function crossSigningResetPage(view: { csrfToken: string; paths: AccountPaths } & FormTargets): HtmlPage {
  const text = messages.account;
  return {
    status: 200,
    title: text.title,
    formActions: view.formActions,
    body: html`<h1>${text.crossSigningHeading}</h1>
<p class="warning">${text.crossSigningText}</p>
<form method="post" action="${view.paths.crossSigningReset}">
<input type="hidden" name="csrf_token" value="${view.csrfToken}">
<button class="button" id="allow-reset" type="submit">${text.crossSigningButton}</button>
</form>
<a class="button secondary" href="${view.paths.page}">${text.backToAccount}</a>`.value,
  };
}

export function crossSigningResetDonePage(view: { paths: AccountPaths }): HtmlPage {
  const text = messages.account;
  return {
    status: 200,
    title: text.title,
    body: html`<h1 id="reset-allowed">${text.crossSigningDoneHeading}</h1>
<p>${text.crossSigningDoneText}</p>
<a class="button secondary" href="${view.paths.page}">${text.backToAccount}</a>`.value,
  };
}

export function deactivatePage(view: { identityProviderUrl?: string; identityProviderHost: string; paths: AccountPaths }): HtmlPage {
  const text = messages.account;
  return {
    status: 200,
    title: text.title,
    body: html`<h1>${text.deactivateHeading}</h1>
<p>${text.deactivateText}</p>
${view.identityProviderUrl === undefined ? html`<p>${text.profileNoLink(view.identityProviderHost)}</p>` : html`<a class="button secondary" href="${view.identityProviderUrl}">${text.profileLink}</a>`}
<a class="button secondary" href="${view.paths.page}">${text.backToAccount}</a>`.value,
  };
}

export function signedOutPage(view: { paths: AccountPaths }): HtmlPage {
  const text = messages.account;
  return {
    status: 200,
    title: text.title,
    body: html`<h1>${text.signedOutHeading}</h1>
<p>${text.signedOutText}</p>
<a class="button secondary" href="${view.paths.page}">${text.signInAgain}</a>`.value,
  };
}

import type { HtmlPage } from './html-page.js';
import { html } from './html-page.js';

export interface ConsentView {
  readonly userId: string;
  readonly clientName: string;
  /** The host of the client's client_uri: the one thing MSC2966 makes the client prove (its redirect URIs live there). */
  readonly clientHost: string;
  readonly clientUri: string;
  readonly deviceId: string | undefined;
  readonly policyUri?: string;
  readonly tosUri?: string;
  /** CSP form-action source of the client's redirect URI: Chromium checks form-action on the form's redirects too. */
  readonly formAction: string;
}

/**
 * The consent page for a third-party native client (MSC2964 "user consent"; MSC2966 security considerations: show
 * as much about the client as possible). Full access to the account is what the API scope means, and it says so.
 */
export function consentPage(view: ConsentView): HtmlPage {
  const links = [
    ...(view.policyUri === undefined ? [] : [html`<a href="${view.policyUri}">Privacy policy</a> `]),
    ...(view.tosUri === undefined ? [] : [html`<a href="${view.tosUri}">Terms of service</a>`]),
  ];
  return {
    status: 200,
    title: `Allow ${view.clientName}?`,
    formActions: [view.formAction],
    body: html`<h1>Allow ${view.clientName} to use your account?</h1>
<p>Signed in as</p>
<p class="mxid">${view.userId}</p>
<p>The app at <strong>${view.clientHost}</strong> (<span class="address">${view.clientUri}</span>) asks for full access to your
Matrix account: read and send messages, manage rooms and devices.${view.deviceId === undefined ? '' : ' It will be signed in as a new device: '}${view.deviceId ?? ''}</p>
<p>${links}</p>
<p class="warning">Only continue if you started signing in to this app yourself.</p>
<form method="post" action="">
<button class="button" type="submit" name="decision" value="allow" id="allow">Allow</button>
<button class="button" type="submit" name="decision" value="deny" id="deny">Cancel</button>
</form>`.value,
  };
}

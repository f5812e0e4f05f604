import type { HtmlPage } from './html-page.js';
import { html } from './html-page.js';
import { messages } from './messages.js';

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

export interface SignInView {
  readonly serverName: string;
  /** One "Sign in with <OP>" link per provider (the SSO bridge, carrying the client's login_hint). */
  readonly providers: readonly { readonly name: string; readonly href: string }[];
  /** The proxy's password form (password_login): checked at the OP like POST /login. */
  readonly passwordForm: { readonly action: string; readonly csrfToken: string; readonly username: string };
  /** The refusal of the last attempt (the same words as /login's error), shown above the form. */
  readonly error?: string;
  readonly status?: number;
  /** CSP form-action source of the client's redirect URI: the form's redirects end there (none without one). */
  readonly formAction?: string;
}

/**
 * The OAuth server's sign-in page when the OP password check is enabled: single sign-on at the OP, or the user name
 * and password the proxy checks at the OP (MSC4198: the user name prefilled from the client's login_hint).
 */
export function signInPage(view: SignInView): HtmlPage {
  const t = messages.oauthSignIn;
  const links = view.providers.map((provider) => html`<li><a class="button secondary sso" href="${provider.href}">${t.continueWith(provider.name)}</a></li>`);
  const form = view.passwordForm;
  return {
    status: view.status ?? 200,
    title: t.title,
    formActions: view.formAction === undefined ? [] : [view.formAction],
    body: html`<h1>${t.heading(view.serverName)}</h1>
<ul class="providers">${links}</ul>
<p class="muted">${t.or}</p>
${view.error === undefined ? '' : html`<p class="error" id="error">${view.error}</p>`}
<form method="post" action="${form.action}" id="password-form">
<input type="hidden" name="csrf_token" value="${form.csrfToken}">
<label for="username">${t.username}</label>
<input id="username" name="username" autocomplete="username" autocapitalize="none" spellcheck="false" required value="${form.username}">
<label for="password">${t.password}</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button class="button" type="submit" id="sign-in">${t.submit}</button>
</form>`.value,
  };
}

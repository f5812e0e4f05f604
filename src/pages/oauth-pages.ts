import type { HtmlPage } from './html-page.js';
import { html } from './html-page.js';
import { messages } from './messages.js';

export interface ConsentView {
  readonly userId: string;
  readonly clientName: string;
  /** The host of the client's client_uri: the one thing MSC2966 makes the client prove (its redirect URIs live there). */
  readonly clientHost: string;
  /** False for a client without redirect URIs (device grant only): then its client_uri is only its claim. */
  readonly clientHostVerified: boolean;
  readonly clientUri: string;
  readonly deviceId: string | undefined;
  readonly policyUri?: string;
  readonly tosUri?: string;
  /**
   * CSP form-action source of the client's redirect URI: Chromium checks form-action on the form's redirects too.
   * None for the device authorization grant: its consent goes back to this server's own pages.
   */
  readonly formAction: string | undefined;
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
    formActions: view.formAction === undefined ? [] : [view.formAction],
    body: html`<h1>Allow ${view.clientName} to use your account?</h1>
<p>Signed in as</p>
<p class="mxid">${view.userId}</p>
<p>${view.clientHostVerified ? html`The app at` : html`An app that says it is at`} <strong>${view.clientHost}</strong> (<span class="address">${view.clientUri}</span>${view.clientHostVerified ? '' : ', not verified'}) asks for full access to your
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

/** Why the device-verification page is shown again (oidc-provider's re-render reasons, and a bad CSRF token). */
export type UserCodeProblem = 'wrong' | 'expired' | 'used' | 'cancelled' | 'form' | 'lost' | 'error';

export interface UserCodeEntryView {
  /** Where the form posts: `<issuer>/device` (same origin, so the CSP's form-action 'self' covers it). */
  readonly action: string;
  /** oidc-provider's per-browser CSRF secret (kept in its session cookie, checked on the post). */
  readonly xsrf: string;
  /** Prefilled from verification_uri_complete (RFC 8628 §3.3.1), never submitted without the user. */
  readonly userCode: string | undefined;
  readonly problem: UserCodeProblem | undefined;
}

const USER_CODE_PROBLEMS: Record<UserCodeProblem, string> = {
  wrong: 'This code is not valid. Check the code your device shows and type it again.',
  expired: 'This code has expired. Start signing in again on your device to get a new one.',
  used: 'This code was already used. Start signing in again on your device to get a new one.',
  cancelled: 'Signing in was cancelled; the device was told so. Start again on your device if you want to sign in.',
  form: 'This form was not sent from the page this server showed, or it is too old. Type the code again.',
  lost: 'This sign-in was started in another browser or took too long. Type the code again, or start again on your device.',
  error: 'Something went wrong. Start signing in again on your device.',
};

/**
 * RFC 8628 §3.3 user interaction: the page a user opens on their phone or computer (the verification_uri) to type
 * the code a TV or command-line app shows. Codes are case-insensitive and dashes are optional (oidc-provider
 * normalises them).
 */
export function userCodeEntryPage(view: UserCodeEntryView): HtmlPage {
  const problem = view.problem === undefined ? html`` : html`<p class="warning" id="problem">${USER_CODE_PROBLEMS[view.problem]}</p>`;
  return {
    status: 200,
    title: 'Sign in a device',
    formActions: [],
    body: html`<h1>Sign in a device</h1>
<p>Type the code your TV, console or command-line app shows.</p>
${problem}
<form method="post" action="${view.action}">
<input type="hidden" name="xsrf" value="${view.xsrf}">
<p><label for="user_code">Code</label></p>
<p><input id="user_code" name="user_code" type="text" autocomplete="off" autocapitalize="characters" spellcheck="false" placeholder="XXXX-XXXX" value="${view.userCode ?? ''}" required></p>
<button class="button" type="submit" id="continue">Continue</button>
</form>`.value,
  };
}

export interface UserCodeConfirmView {
  readonly action: string;
  readonly xsrf: string;
  /** The code as the device shows it (with its dash). */
  readonly userCode: string;
  readonly clientName: string;
  readonly clientHost: string | undefined;
  /** False for a client without redirect URIs: its client_uri is only its claim. */
  readonly clientHostVerified: boolean;
  /** The device's User-Agent when it asked for the code (RFC 8628 §5.4: help the user spot a remote phishing try). */
  readonly deviceAgent: string | undefined;
}

/**
 * Before the sign-in: which app asks, and the code to compare with the device's screen. RFC 8628 §5.4: someone may
 * have sent the user a code from their own device; the warning says not to continue in that case.
 */
export function userCodeConfirmPage(view: UserCodeConfirmView): HtmlPage {
  return {
    status: 200,
    title: `Sign in ${view.clientName}?`,
    formActions: [],
    body: html`<h1>Sign in ${view.clientName}?</h1>
<p>Check that your device shows this code:</p>
<p class="mxid" id="user-code">${view.userCode}</p>
${view.clientHost === undefined ? html`` : view.clientHostVerified ? html`<p>The app comes from <strong>${view.clientHost}</strong>.</p>` : html`<p>The app says it comes from <strong>${view.clientHost}</strong> (not verified: an app signing in on another device cannot prove where it comes from).</p>`}
${view.deviceAgent === undefined || view.deviceAgent === '' ? html`` : html`<p class="address">${view.deviceAgent}</p>`}
<p class="warning">Only continue if you started signing in on that device yourself. If someone sent you this code or link, cancel.</p>
<form method="post" action="${view.action}">
<input type="hidden" name="xsrf" value="${view.xsrf}">
<input type="hidden" name="user_code" value="${view.userCode}">
<button class="button" type="submit" name="confirm" value="yes" id="confirm">Continue</button>
<button class="button secondary" type="submit" name="abort" value="yes" id="abort">Cancel</button>
</form>`.value,
  };
}

/** The device is signed in (it learns so at its next poll of the token endpoint). */
export function userCodeDonePage(view: { readonly clientName: string }): HtmlPage {
  return {
    status: 200,
    title: 'Device signed in',
    body: html`<h1 id="done">${view.clientName} is signed in</h1>
<p>Go back to your device: it continues by itself in a few seconds. You can close this page.</p>`.value,
  };
}

/**
 * Between the code confirmation and the sign-in at the OP. The confirmation is a form, and Chromium applies the
 * page's CSP form-action to every redirect that follows a form submission: the chain would end at the OP's origin,
 * which 'self' does not cover. So the post ends here, and this page moves on as a plain navigation (the Refresh
 * header the caller sets, with this link for browsers that ignore it).
 */
export function continueToSignInPage(view: { readonly next: string }): HtmlPage {
  return {
    status: 200,
    title: 'Continue to sign in',
    body: html`<h1>Continue to sign in</h1>
<p>You are being sent to sign in.</p>
<a class="button" id="next" href="${view.next}">Continue</a>`.value,
  };
}

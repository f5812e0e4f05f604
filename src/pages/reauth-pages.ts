import { html, type HtmlPage } from './html-page.js';
import { messages } from './messages.js';

export interface ReauthView {
  readonly userId: string;
  /** What the app asked for, in the user's words (messages.reauth.operations). */
  readonly operation: string;
  readonly providerName: string;
  /** The OP's authorization URL (a link, not a form: CSP form-action would have to name the OP). */
  readonly continueHref: string;
}

/**
 * The spec's m.login.sso fallback page (C-S spec, "Fallback"): says what the app is about to do and sends the user to
 * sign in again at the OP. Synapse shows the same warning (sso_auth_confirm.html): a stolen token must not get a
 * victim to confirm a deletion they did not ask for.
 */
export function reauthPage(view: ReauthView): HtmlPage {
  return {
    status: 200,
    title: messages.reauth.title,
    body: html`<h1>${messages.reauth.heading}</h1>
<p>${messages.reauth.explanation(view.operation)}</p>
<p class="muted">${messages.reauth.signedInAs}</p>
<p class="mxid">${view.userId}</p>
<p class="warning">${messages.reauth.warning}</p>
<a class="button" id="continue" href="${view.continueHref}">${messages.reauth.continueWith(view.providerName)}</a>`.value,
  };
}

/**
 * The C-S spec's end of a fallback: call `window.onAuthDone` when the client defined it (an embedded web view), else
 * post "authDone" to the window that opened this one; the client then repeats its request with the session.
 */
const AUTH_DONE_SCRIPT =
  'if(window.onAuthDone){window.onAuthDone();}else if(window.opener&&window.opener.postMessage){window.opener.postMessage("authDone","*");}';

export function reauthDonePage(): HtmlPage {
  return {
    status: 200,
    title: messages.reauth.doneTitle,
    script: AUTH_DONE_SCRIPT,
    body: html`<h1 id="done">${messages.reauth.doneHeading}</h1>
<p>${messages.reauth.doneText}</p>`.value,
  };
}

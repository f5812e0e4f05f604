import { html, type HtmlPage } from './html-page.js';
import { messages, type FailureMessageKey } from './messages.js';

export interface PickerEntry {
  readonly name: string;
  /** Same-origin link that starts the login at this provider (redirectUrl and action kept). */
  readonly href: string;
}

/** Several providers and the client named none: let the user choose (Synapse's "pick an IdP" page). */
export function pickerPage(serverName: string, entries: readonly PickerEntry[]): HtmlPage {
  const items = entries.map(
    (entry) => html`<li><a class="button secondary" href="${entry.href}">${messages.picker.continueWith(entry.name)}</a></li>`,
  );
  return {
    status: 200,
    title: messages.picker.title,
    body: html`<h1>${messages.picker.heading(serverName)}</h1>
<p>${messages.picker.intro}</p>
<ul class="providers">${items}</ul>`.value,
  };
}

export interface ConfirmationView {
  readonly userId: string;
  /** Host of the redirect target (or the app's scheme), the part a user can judge. */
  readonly destination: string;
  readonly redirectUrl: string;
  readonly csrfToken: string;
  /** CSP form-action source that lets the form's redirect reach the client. */
  readonly formAction: string;
}

/** "Continue to <host>?": the only thing standing between a crafted redirectUrl and the user's login token. */
export function confirmationPage(view: ConfirmationView): HtmlPage {
  const shownAddress = view.redirectUrl.length > 200 ? `${view.redirectUrl.slice(0, 200)}…` : view.redirectUrl;
  return {
    status: 200,
    title: messages.confirm.title,
    formActions: [view.formAction],
    body: html`<h1>${messages.confirm.heading(view.destination)}</h1>
<p>${messages.confirm.signedInAs}</p>
<p class="mxid">${view.userId}</p>
<p>${messages.confirm.explanation(view.destination)}</p>
<p class="warning">${messages.confirm.warning}</p>
<p class="muted">${messages.confirm.destinationLabel}</p>
<p class="address">${shownAddress}</p>
<form method="post" action="">
<input type="hidden" name="csrf_token" value="${view.csrfToken}">
<button class="button" type="submit">${messages.confirm.continueButton}</button>
</form>`.value,
  };
}

export interface FailureView {
  readonly status: number;
  readonly errcode: string;
  readonly requestId?: string;
  /** A client-safe message of an error the routes did not name (shown instead of the generic text). */
  readonly detail?: string;
}

/** What happened and what to do, for every way an SSO login can fail. */
export function failurePage(failure: FailureMessageKey, view: FailureView): HtmlPage {
  const text = messages.failures[failure];
  return {
    status: view.status,
    title: `${text.heading} · ${messages.error.titleSuffix}`,
    body: html`<h1>${text.heading}</h1>
<p>${view.detail ?? text.what}</p>
<h2>${messages.error.whatToDo}</h2>
<p>${text.todo}</p>
<p class="muted">${messages.error.errorCode(view.errcode)}${view.requestId === undefined ? '' : html`<br>${messages.error.reference(view.requestId)}`}</p>`.value,
  };
}

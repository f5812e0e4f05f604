/**
 * Every string the proxy's HTML pages show, in one place so a translation is one file. Plain text only: the page
 * templates escape everything, so no string here may carry markup.
 */
export const messages = {
  lang: 'en',
  dir: 'ltr',

  picker: {
    title: 'Choose how to sign in',
    heading: (serverName: string) => `Sign in to ${serverName}`,
    intro: 'Choose the account you want to sign in with.',
    continueWith: (providerName: string) => `Continue with ${providerName}`,
  },

  confirm: {
    title: 'Continue to your app?',
    heading: (destination: string) => `Continue to ${destination}?`,
    signedInAs: 'You are signing in as',
    explanation: (destination: string) =>
      `${destination} will get access to your Matrix account: it can read and send your messages.`,
    warning: 'Only continue if you started this sign-in yourself, in an app you trust. If you did not, close this page.',
    destinationLabel: 'Full address',
    continueButton: 'Continue',
  },

  error: {
    titleSuffix: 'Sign-in failed',
    whatToDo: 'What to do',
    reference: (requestId: string) => `Reference for your administrator: ${requestId}`,
    errorCode: (errcode: string) => `Error code: ${errcode}`,
  },

  /**
   * One entry per failure: a heading, what happened, what to do. The routes pick the entry; the status code and
   * Matrix errcode live with the route's failure mapping.
   */
  failures: {
    missing_redirect_url: {
      heading: 'Your app did not say where to return',
      what: 'The app that sent you here did not tell the server where to send you back after signing in.',
      todo: 'Go back to your app and start signing in again. If it keeps happening, your app may not support single sign-on with this server.',
    },
    invalid_redirect_url: {
      heading: 'This return address is not allowed',
      what: 'The app that sent you here asked to be sent back to an address that is malformed or not safe.',
      todo: 'Go back to your app and start signing in again. If it keeps happening, the link you followed may not come from a real Matrix app.',
    },
    unknown_provider: {
      heading: 'Unknown sign-in provider',
      what: 'The sign-in provider your app asked for does not exist on this server.',
      todo: 'Go back to your app and choose another way to sign in, or ask your server administrator which providers are available.',
    },
    unknown_state: {
      heading: 'This sign-in link is not valid',
      what: 'This sign-in link was already used, or it does not belong to a sign-in started on this server.',
      todo: 'Go back to your app and start signing in again. Do not reload or reuse this page.',
    },
    expired: {
      heading: 'This sign-in took too long',
      what: 'Sign-ins must be completed within a limited time, and this one was started too long ago.',
      todo: 'Go back to your app and start signing in again.',
    },
    cookie_mismatch: {
      heading: 'Your browser could not be recognised',
      what: 'Your browser did not send back the cookie set when this sign-in started. This happens when the sign-in was started in another browser or app, or when cookies are blocked.',
      todo: 'Start signing in again from your app, and finish in the same browser with cookies allowed for this site.',
    },
    wrong_callback: {
      heading: 'The sign-in came back from the wrong provider',
      what: 'The answer received does not belong to the provider this sign-in was started with, so it was refused.',
      todo: 'Go back to your app and start signing in again. If it keeps happening, tell your server administrator.',
    },
    op_denied: {
      heading: 'You were not signed in',
      what: 'The sign-in provider did not sign you in: the sign-in was cancelled or refused.',
      todo: 'Go back to your app and start signing in again if you want to continue.',
    },
    op_error: {
      heading: 'The sign-in provider reported an error',
      what: 'The sign-in provider could not complete the sign-in.',
      todo: 'Try again in a few minutes. If it keeps happening, tell your server administrator.',
    },
    op_rejected: {
      heading: 'The sign-in could not be verified',
      what: "The sign-in provider's answer could not be verified, so it was refused.",
      todo: 'Go back to your app and start signing in again. If it keeps happening, tell your server administrator.',
    },
    rate_limited: {
      heading: 'Too many sign-in attempts',
      what: 'Sign-ins from your network were started too often in a short time.',
      todo: 'Wait a minute, then start signing in again from your app.',
    },
    op_unavailable: {
      heading: 'The sign-in provider is not reachable',
      what: 'The sign-in provider did not answer in time.',
      todo: 'Try again in a few minutes.',
    },
    homeserver_unavailable: {
      heading: 'The Matrix server is not reachable',
      what: 'Your identity was confirmed, but the Matrix server behind this sign-in did not answer.',
      todo: 'Try again in a few minutes.',
    },
    homeserver_refused: {
      heading: 'The Matrix server refused this account',
      what: 'Your identity was confirmed, but the Matrix server would not create or update your account.',
      todo: 'Contact the server administrator and quote the reason below.',
    },
    store_unavailable: {
      heading: 'The server is busy',
      what: 'The server could not reach its session storage just now.',
      todo: 'Wait a few seconds, then go back to your app and start signing in again.',
    },
    requirements_not_met: {
      heading: 'Your account may not use this server',
      what: 'You signed in, but your account does not have the access this Matrix server requires.',
      todo: 'If you think you should have access, ask your administrator to grant it, then sign in again.',
    },
    registration_disabled: {
      heading: 'No Matrix account for you yet',
      what: 'You signed in, but you have no Matrix account on this server and this server does not create new ones.',
      todo: 'Ask your server administrator to create your Matrix account.',
    },
    no_localpart: {
      heading: 'No Matrix user name could be chosen',
      what: 'You signed in, but no valid Matrix user name could be made from your account details.',
      todo: 'Tell your server administrator; the user name template of this sign-in provider needs a look.',
    },
    mapping_failed: {
      heading: 'No Matrix user name could be chosen',
      what: 'You signed in, but your account details could not be turned into a valid Matrix user name.',
      todo: 'Tell your server administrator; the user name template of this sign-in provider needs a look.',
    },
    localpart_taken: {
      heading: 'This Matrix user name is already taken',
      what: 'You signed in, but the Matrix user name chosen for your account already belongs to someone else.',
      todo: 'Tell your server administrator, who can link your account to the right Matrix user.',
    },
    deactivated: {
      heading: 'This Matrix account is deactivated',
      what: 'You signed in, but the Matrix account linked to you has been deactivated.',
      todo: 'Ask your server administrator if you think this is a mistake.',
    },
    confirmation_unknown: {
      heading: 'This confirmation is no longer valid',
      what: 'This confirmation page was already used or has expired.',
      todo: 'If your app did not sign you in, go back to it and start signing in again.',
    },
    csrf: {
      heading: 'The confirmation could not be checked',
      what: 'The confirmation was not sent from the page this server showed, or came from another browser.',
      todo: 'Go back to your app and start signing in again.',
    },
    internal: {
      heading: 'Something went wrong',
      what: 'The server failed to complete the sign-in.',
      todo: 'Try again. If it keeps failing, tell your server administrator and give them the reference below.',
    },
  },
} as const;

export type FailureMessageKey = keyof typeof messages.failures;

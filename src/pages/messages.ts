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

  oauthSignIn: {
    title: 'Sign in',
    heading: (serverName: string) => `Sign in to ${serverName}`,
    continueWith: (providerName: string) => `Sign in with ${providerName}`,
    or: 'or with your user name and password',
    username: 'User name',
    password: 'Password',
    submit: 'Sign in',
    rateLimited: 'Too many attempts. Wait a moment and try again.',
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

  reauth: {
    title: 'Confirm it is you',
    heading: 'Confirm it is you',
    explanation: (operation: string) => `An app signed in as this account asks to ${operation}. To allow it, sign in again with your identity provider.`,
    signedInAs: 'Account',
    warning: 'If you did not ask for this in one of your apps, close this page: someone else may be using your account. Sign out of your other sessions and change your password.',
    continueWith: (providerName: string) => `Continue with ${providerName}`,
    doneTitle: 'Confirmed',
    doneHeading: 'Thank you, you are confirmed',
    doneText: 'You can close this window and return to your app.',
    operations: {
      delete_devices: (count: number) => (count === 1 ? 'sign out one of its sessions (remove a device)' : `sign out ${count} of its sessions (remove devices)`),
    },
  },

  account: {
    title: 'Your account',
    heading: 'Your account',
    signedInAs: 'Signed in as',
    profileHeading: 'Profile and password',
    profileText: 'Your name, email address and password are kept by your identity provider.',
    profileLink: 'Manage them at your identity provider',
    profileNoLink: (host: string) => `Manage them at your identity provider (${host}).`,
    devicesHeading: 'Your devices',
    devicesIntro: 'Every app signed in to your Matrix account. Sign out any you do not recognise.',
    devicesIncomplete: 'The Matrix server did not answer: apps that sign in without this server may be missing from this list.',
    noDevices: 'No app is signed in.',
    deviceKinds: {
      password: 'Signed in with a password',
      sso: 'Signed in with single sign-on',
      token: 'Signed in with single sign-on',
      appservice: 'Signed in by a bridge or bot service',
      homeserver: 'Signed in directly with your identity provider',
      imported: 'Signed in before the move to your identity provider',
    },
    lastSeen: (when: string) => `Last active ${when}`,
    neverSeen: 'Not active yet',
    fromAddress: (ip: string) => `from ${ip}`,
    viewDevice: 'Details',
    encryptionHeading: 'Encryption',
    encryptionText: 'Lost your recovery key and all your devices? You can reset your encryption identity.',
    encryptionLink: 'Reset your encryption identity',
    deactivateLink: 'Close your account',
    signOutPage: 'Sign out of this page',
    deviceHeading: (name: string) => `Device ${name}`,
    deviceDeleteHeading: (name: string) => `Sign out ${name}?`,
    deviceDeleteText: 'This app will be signed out at once and lose access to your messages on this device. Encrypted messages may become unreadable there.',
    deviceId: 'Device ID',
    signOutDevice: 'Sign out this device',
    backToAccount: 'Back to your account',
    deviceSignedOut: (name: string) => `${name} was signed out.`,
    deviceUnknown: 'This device is not signed in to your account (any more).',
    crossSigningHeading: 'Reset your encryption identity?',
    crossSigningText:
      'Do this only if you have lost access to all your signed-in devices and your recovery key. Your other devices will need to be verified again, and messages you cannot decrypt now stay unreadable.',
    crossSigningButton: 'Allow the reset',
    crossSigningDoneHeading: 'Reset allowed',
    crossSigningDoneText: 'Go back to your app within 10 minutes and reset your encryption identity there. After 10 minutes you will have to allow it here again.',
    deactivateHeading: 'Close your account',
    deactivateText: 'Your Matrix account belongs to your account at your identity provider. To close it, close that account or ask your server administrator.',
    signedOutHeading: 'Signed out',
    signedOutText: 'You are signed out of this page. Your apps stay signed in.',
    signInAgain: 'Sign in again',
    appPasswordsHeading: 'App passwords',
    appPasswordsIntro: 'For apps that can only sign in with a password: give each app its own app password, and use it instead of your password with your Matrix ID.',
    noAppPasswords: 'You have no app passwords.',
    appPasswordCreated: (when: string) => `Created ${when}`,
    appPasswordUsed: (when: string) => `last used ${when}`,
    appPasswordRefused: 'Stopped working: your identity provider no longer allows this access.',
    appPasswordNameLabel: 'Name (for example the app you will use it in)',
    createAppPassword: 'Create an app password',
    revokeAppPassword: 'Revoke',
    appPasswordRevoked: (name: string) => `App password ${name} was revoked; the apps using it are signed out.`,
    appPasswordShownHeading: (name: string) => `App password ${name}`,
    appPasswordShownText: 'Copy it now and type it in your app as the password, with your Matrix ID as the user name. It will not be shown again.',
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
    uia_session_unknown: {
      heading: 'This confirmation link is not valid',
      what: 'This link was already used, has expired, or was not made by this server.',
      todo: 'Go back to your app and try again: it will give you a new link.',
    },
    reauth_wrong_account: {
      heading: 'You signed in with another account',
      what: 'The account you just signed in with is not the one the app is signed in as, so nothing was confirmed.',
      todo: 'Go back to your app, try again, and sign in with the same account the app uses.',
    },
    reauth_stale: {
      heading: 'You were not asked to sign in again',
      what: 'The identity provider confirmed an earlier sign-in instead of a new one, so nothing was confirmed.',
      todo: 'Go back to your app and try again. If it keeps happening, tell your server administrator.',
    },
    device_unknown: {
      heading: 'Unknown device',
      what: 'This device is not signed in to your account (any more).',
      todo: 'Go back to your account page and choose a device from the list.',
    },
    account_csrf: {
      heading: 'This form could not be checked',
      what: 'The form was not sent from your account page in this browser, or your sign-in to the page has ended.',
      todo: 'Open your account page again and repeat what you wanted to do.',
    },
    app_password_unavailable: {
      heading: 'App passwords are not available',
      what: 'This server does not offer app passwords.',
      todo: 'Sign in to your apps with single sign-on, or ask your server administrator.',
    },
    app_password_no_grant: {
      heading: 'Your identity provider gave no lasting access',
      what: 'An app password needs lasting access at your identity provider (a refresh token), and your sign-in did not grant it.',
      todo: 'Ask your server administrator to add the offline_access scope to this identity provider in the proxy configuration.',
    },
    app_password_too_many: {
      heading: 'Too many app passwords',
      what: 'You already have as many app passwords as this server allows.',
      todo: 'Go back to your account page, revoke one you no longer use, then create the new one.',
    },
    app_password_name: {
      heading: 'The name is not usable',
      what: 'An app password needs a name of 1 to 64 characters, so you can tell it apart later.',
      todo: 'Go back to your account page and give it a name, such as the app you will use it in.',
    },
    app_password_unknown: {
      heading: 'Unknown app password',
      what: 'This app password does not exist (any more).',
      todo: 'Go back to your account page and choose one from the list.',
    },
    account_unavailable: {
      heading: 'The account page is not available',
      what: 'This server has no account page.',
      todo: 'Ask your server administrator where to manage your account.',
    },
    internal: {
      heading: 'Something went wrong',
      what: 'The server failed to complete the sign-in.',
      todo: 'Try again. If it keeps failing, tell your server administrator and give them the reference below.',
    },
  },
} as const;

export type FailureMessageKey = keyof typeof messages.failures;

import { startSynapse } from '../support/synapse.js';
import { describeAppserviceBackend } from '../support/appservice-suite.js';
import { SERVER_NAME } from '../support/proxy-harness.js';

// The appservice backend (issue 16) on real Synapse WITHOUT delegated auth: no matrix_authentication_service, the
// proxy's registration and a bridge's in app_service_config_files.
describeAppserviceBackend({
  name: 'Synapse (no delegated auth)',
  flavour: 'synapse',
  registrationUrl: null,
  start: (registrations, sharedSecret) =>
    startSynapse({
      serverName: SERVER_NAME,
      extraConfig: { app_service_config_files: [registrations.proxy.path, registrations.bridge.path], registration_shared_secret: sharedSecret, enable_registration: false },
    }),
});

import { randomBytes } from 'node:crypto';
import { startSynapse } from '../support/synapse.js';
import { describeAppserviceBackend } from '../support/appservice-suite.js';
import { SERVER_NAME } from '../support/proxy-harness.js';

// The JWT backend (issue 16) on real Synapse without delegated auth: org.matrix.login.jwt with jwt_config (needs the
// matrix-synapse[jwt] extra, installed by scripts/install-synapse.sh). The same flows as the appservice backend; the
// registrations stay loaded at Synapse only for the bridge and for "a token the proxy never saw".
const secret = randomBytes(32).toString('hex');
const issuer = 'matrix-compat-proxy';

describeAppserviceBackend({
  name: 'Synapse with JWT login',
  flavour: 'synapse',
  registrationUrl: null,
  backend: { mode: 'jwt', secret, issuer, audience: SERVER_NAME },
  start: (registrations, sharedSecret) =>
    startSynapse({
      serverName: SERVER_NAME,
      extraConfig: {
        app_service_config_files: [registrations.proxy.path, registrations.bridge.path],
        registration_shared_secret: sharedSecret,
        enable_registration: false,
        jwt_config: { enabled: true, secret, algorithm: 'HS256', subject_claim: 'sub', display_name_claim: 'name', issuer, audiences: [SERVER_NAME] },
      },
    }),
});

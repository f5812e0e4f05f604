import { startDendrite } from '../support/dendrite.js';
import { describeAppserviceBackend } from '../support/appservice-suite.js';
import { SERVER_NAME } from '../support/proxy-harness.js';

// The appservice backend (issue 16) on real Dendrite 0.13.8 (scripts/install-dendrite.sh): registrations with
// `url: ""`, SQLite, no federation. The same flows as on Synapse; device deletion happens through the device's own
// token here (Dendrite asks an appservice for UIA).
describeAppserviceBackend({
  name: 'Dendrite',
  flavour: 'dendrite',
  registrationUrl: '',
  start: (registrations, sharedSecret) =>
    startDendrite({ serverName: SERVER_NAME, appserviceConfigFiles: [registrations.proxy.path, registrations.bridge.path], registrationSharedSecret: sharedSecret }),
});

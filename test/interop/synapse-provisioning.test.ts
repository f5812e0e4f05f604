import { describeSynapseBehaviour, BEHAVIOUR_SECRET, BEHAVIOUR_SERVER_NAME } from '../support/synapse-behaviour.js';
import { startSynapse, type RunningSynapse } from '../support/synapse.js';

// Real Synapse (scripts/install-synapse.sh) with delegated auth pointing at a stand-in auth service. A missing
// Synapse fails the suite with instructions; only MCP_SKIP_INTEROP=1 skips it.
const skip = process.env['MCP_SKIP_INTEROP'] === '1' ? 'MCP_SKIP_INTEROP=1' : false;

describeSynapseBehaviour(
  'SynapseProvisioning against real Synapse',
  (auth) => startSynapse({ masEndpoint: `${auth.url}/`, masSecret: BEHAVIOUR_SECRET, serverName: BEHAVIOUR_SERVER_NAME }),
  {
    skip,
    onStarted: (homeserver) => {
      const synapse = homeserver as RunningSynapse;
      console.log(`Synapse ${synapse.version} healthy after ${synapse.startupMs} ms`);
    },
  },
);

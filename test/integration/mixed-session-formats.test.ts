import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ADMIN_PREFIX } from '../../src/admin/admin-routes.js';
import { createApp } from '../../src/app.js';
import { applyOpLogout } from '../../src/sessions/op-logouts.js';
import { SessionLifecycle } from '../../src/sessions/session-lifecycle.js';
import { SessionStore } from '../../src/sessions/session-store.js';
import type { Session } from '../../src/sessions/session.js';
import { parseToken } from '../../src/sessions/tokens.js';
import { ADMIN_TOKEN, IDP_ID, startProxyHarness, type Harness } from '../support/proxy-harness.js';

/*
 * A store holding sessions of both formats, as during the switch to store.session_format: compact (issue 19): the
 * proxy writes the compact format (record version 4, index layout 2) while sessions written in the compatible format
 * (record versions 2 and 3, layout 1, what release aaa9c33 writes) are still live. Through the proxy's HTTP faces
 * and the homeserver double (which introspects like Synapse): the admin list shows both, /logout/all and
 * back-channel logout end both.
 */

for (const store of ['memory', 'redis'] as const) {
  describe(`mixed session formats (${store})`, () => {
    let h: Harness;
    // The admin API is on the homeserver-facing listener, which the harness does not open (as in admin-api.test.ts).
    let adminUrl: string;
    let closeAdmin: () => void;
    before(async () => {
      h = await startProxyHarness({ store, configure: (config) => (config['store'] = { ...config['store'], session_format: 'compact' }) });
      const handlers = createApp(h.deps, { forward: (_req, res) => res.writeHead(502).end(), close: () => undefined }, { check: async () => ({ ok: true, checks: {} }) });
      const server = createServer(handlers.homeserverFacing);
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      adminUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      closeAdmin = () => {
        server.closeAllConnections();
        server.close();
      };
    });
    after(async () => {
      closeAdmin();
      await h.stop();
    });

    /** A compact-format login through the proxy, and a compatible-format one on another device of the same OP login. */
    async function bothFormats(): Promise<{ compact: Session; compatible: Session; tokens: string[] }> {
      const alice = h.op.users.alice;
      const login = await h.passwordLogin(alice.username, alice.password);
      assert.equal(login.status, 200, JSON.stringify(login.body));
      const compact = await h.deps.sessions.get(parseToken(login.body.access_token)?.sessionId ?? '');
      assert.ok(compact !== undefined);
      assert.ok((await h.store.get(`session:${compact.id}`))?.startsWith('{"v":4,'), 'written in the compact format');
      const older = new SessionStore(h.store, h.deps.clock, h.deps.keys.tokenDerivationKey, h.deps.logger, { writeFormat: 'compatible' });
      const lifecycle = new SessionLifecycle({ ...h.deps, sessions: older });
      const issued = await lifecycle.start({ localpart: compact.localpart, deviceId: 'OLDERDEVICE', origin: compact.origin });
      assert.ok((await h.store.get(`session:${issued.session.id}`))?.startsWith('{"v":2,'), 'written in the compatible format');
      return { compact, compatible: issued.session, tokens: [login.body.access_token, issued.accessToken] };
    }

    async function whoami(token: string): Promise<number> {
      return (await fetch(`${h.homeserver.url}/_matrix/client/v3/account/whoami`, { headers: { authorization: `Bearer ${token}` } })).status;
    }

    test('the admin list shows both; /logout/all with the older token ends both, at the homeserver too', async () => {
      const { compact, compatible, tokens } = await bothFormats();
      for (const token of tokens) assert.equal(await whoami(token), 200);
      const listed = await fetch(`${adminUrl}${ADMIN_PREFIX}/users/${compact.localpart}/sessions`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
      assert.equal(listed.status, 200);
      const body = (await listed.json()) as { sessions: { device_id: string }[] };
      const devices = body.sessions.map((s) => s.device_id).sort();
      assert.deepEqual(devices, [compact.deviceId, compatible.deviceId].sort());

      const out = await h.request('POST', '/_matrix/client/v3/logout/all', { token: tokens[1] ?? '', body: {} });
      assert.equal(out.status, 200, JSON.stringify(out.body));
      for (const token of tokens) assert.equal(await whoami(token), 401);
      for (const session of [compact, compatible]) assert.equal(h.homeserver.devices(session.localpart).has(session.deviceId), false, session.deviceId);
      assert.deepEqual(await h.deps.sessions.idsOfUser(compact.localpart), []);
    });

    test('back-channel logout of the OP session ends both', async () => {
      const { compact, compatible, tokens } = await bothFormats();
      const origin = compact.origin;
      assert.ok(origin.kind === 'password' && origin.sid !== undefined);
      // What the receiver does once the logout token verified (backchannel-logout.test.ts drives the HTTP part).
      const effect = await applyOpLogout(h.deps, IDP_ID, { sub: origin.sub, sid: origin.sid }, { mode: 'hard', ignoreSub: false });
      assert.equal(effect.sessions, 2);
      for (const token of tokens) assert.equal(await whoami(token), 401);
      for (const session of [compact, compatible]) assert.equal(await h.deps.sessions.get(session.id), undefined);
    });
  });
}

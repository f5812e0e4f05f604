import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { stringify } from 'yaml';
import { buildDeps } from '../../src/build-deps.js';
import { parseConfig } from '../../src/config/load-config.js';
import { createLogger } from '../../src/observability/logger.js';
import { createMetrics } from '../../src/observability/metrics.js';
import { startProxy } from '../../src/server.js';
import { MemoryStore } from '../../src/store/memory-store.js';
import { freePort } from '../support/free-port.js';
import { startProxyHarness, type Harness } from '../support/proxy-harness.js';

/**
 * A listener that cannot bind ends the start, and the listeners already bound close again: the process must not
 * stay half up holding ports (an embedding test runner hung on exactly that).
 */
let h: Harness;
before(async () => {
  h = await startProxyHarness();
});
after(async () => {
  await h.stop();
});

test('a start whose ops listener finds its port taken fails with EADDRINUSE and frees the client port it had bound', async () => {
  const clientPort = await freePort();
  const taken = Number(new URL(h.url).port);
  const raw = h.rawConfig();
  raw['listen'] = { host: '127.0.0.1', port: clientPort };
  raw['metrics'] = { enabled: true, listen: { host: '127.0.0.1', port: taken } };
  const config = parseConfig(stringify(raw), { env: {} });
  const store = new MemoryStore();
  const deps = await buildDeps(config, store, createLogger('silent'), createMetrics({ collectDefaults: false }));
  await assert.rejects(startProxy(deps), (err: NodeJS.ErrnoException) => err.code === 'EADDRINUSE');
  // The client listener had bound clientPort before the ops listener failed: it is free again.
  const probe = createServer();
  await new Promise<void>((resolve, reject) => {
    probe.once('error', reject);
    probe.listen(clientPort, '127.0.0.1', () => resolve());
  });
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  await store.close();
});

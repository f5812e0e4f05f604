import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { test } from 'node:test';
import { parse, stringify } from 'yaml';
import { parseConfig } from '../../src/config/load-config.js';

/** Every proxy block in docs/providers/ validates as it is printed (a page must not rot away from the schema). */
const DOCS = new URL('../../docs/providers/', import.meta.url);
const BASE = {
  server_name: 'example.org',
  public_baseurl: 'https://matrix.example.org/',
  homeserver: { url: 'http://127.0.0.1:8008', secret: 'docs-homeserver-secret-0123456789' },
  sessions: { encryption_key: 'docs-session-encryption-key-0123456789abcdef' },
};

for (const page of readdirSync(DOCS).filter((name) => name.endsWith('.md') && name !== 'README.md')) {
  test(`docs/providers/${page}: the proxy block validates`, () => {
    const text = readFileSync(new URL(page, DOCS), 'utf8');
    const blocks = [...text.matchAll(/```yaml\n([\s\S]*?)```/g)].map((match) => match[1] ?? '').filter((block) => block.includes('oidc_providers:'));
    assert.equal(blocks.length, 1, 'one proxy block per page');
    const block = parse(blocks[0] ?? '') as Record<string, unknown>;
    const env = new Proxy({}, { get: (_target, name) => `value-of-${String(name)}`, has: () => true });
    const config = parseConfig(stringify({ ...BASE, ...block }), { env: env as NodeJS.ProcessEnv });
    assert.equal(config.oidc_providers.length, 1);
  });
}

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { ConfigError, parseConfig } from '../../src/config/load-config.js';
import { UserPolicy, wholeUserId } from '../../src/provisioning/user-policy.js';

const dir = mkdtempSync(join(tmpdir(), 'mcp-backends-config-'));

function registration(name: string, edit: (r: Record<string, any>) => void = () => {}): string {
  const doc: Record<string, any> = {
    id: `compat-proxy-${name}`,
    url: null,
    as_token: `as-token-of-${name}-0123456789abcdef`,
    hs_token: `hs-token-of-${name}-0123456789abcdef`,
    sender_localpart: 'compat-proxy',
    rate_limited: false,
    namespaces: { users: [{ exclusive: false, regex: '@.*:example\\.org' }], aliases: [], rooms: [] },
  };
  edit(doc);
  const path = join(dir, `${name}.yaml`);
  writeFileSync(path, stringify(doc));
  return path;
}

function config(homeserver: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  return parseConfig(
    stringify({
      server_name: 'example.org',
      public_baseurl: 'https://matrix.example.org/',
      homeserver: { url: 'http://127.0.0.1:8008', ...homeserver },
      sessions: { encryption_key: 'an-encryption-key-for-tests-only-0123456789abcdef' },
      ...extra,
    }),
    { env: {}, baseDir: dir },
  );
}

function problemsOf(run: () => unknown): string[] {
  try {
    run();
  } catch (err: unknown) {
    if (err instanceof ConfigError) return [...err.problems];
    throw err;
  }
  return [];
}

describe('homeserver backends in the config', () => {
  test('mode synapse is read as delegated; appservice mode reads its registration file', () => {
    assert.equal(config({ mode: 'synapse', secret: 'a-shared-secret-0123456789' }).homeserver.mode, 'delegated');
    const file = registration('good');
    const parsed = config({ mode: 'appservice', flavour: 'dendrite', appservice: { registration_file: 'good.yaml', deny_users: ['@admin:example\\.org'] } });
    assert.equal(parsed.homeserver.mode, 'appservice');
    assert.equal(parsed.homeserver.appservice?.registration_file, file);
    assert.equal(parsed.homeserver.token_cache_ttl, 2000);
  });

  test('a registration the proxy must not use is refused, each reason by name', () => {
    const cases: [string, (r: Record<string, any>) => void, RegExp][] = [
      ['exclusive', (r) => (r['namespaces'].users[0].exclusive = true), /exclusive: false/],
      ['pushed', (r) => (r['url'] = 'http://127.0.0.1:9000'), /url must be null/],
      ['limited', (r) => delete r['rate_limited'], /rate_limited must be false/],
      ['msc4190', (r) => (r['io.element.msc4190'] = true), /msc4190/],
      ['no-users', (r) => (r['namespaces'].users = []), /can log in no one/],
      ['no-token', (r) => delete r['as_token'], /as_token is required/],
    ];
    for (const [name, edit, says] of cases) {
      const problems = problemsOf(() => config({ mode: 'appservice', appservice: { registration_file: registration(name, edit) } }));
      assert.equal(problems.length, 1, `${name}: ${problems.join('\n')}`);
      assert.match(problems[0] ?? '', /^homeserver\.appservice\.registration_file: /);
      assert.match(problems[0] ?? '', says, name);
    }
  });

  test('the own registration listed again among appservice_config_files is refused', () => {
    const own = registration('own');
    const problems = problemsOf(() => config({ mode: 'appservice', appservice: { registration_file: own } }, { appservice_config_files: [own] }));
    assert.ok(problems.some((line) => /^appservice_config_files\[0\]: is the same appservice/.test(line)), problems.join('\n'));
  });

  test('admin_token and jwt.key may come from files', () => {
    writeFileSync(join(dir, 'admin-token'), 'syt_admin_token_0123456789\n');
    writeFileSync(join(dir, 'jwt-key'), 'a-jwt-shared-secret-0123456789\n');
    const parsed = config({ mode: 'jwt', admin_token_path: 'admin-token', jwt: { key_path: 'jwt-key' } });
    assert.equal(parsed.homeserver.admin_token, 'syt_admin_token_0123456789');
    assert.equal(parsed.homeserver.jwt?.key, 'a-jwt-shared-secret-0123456789');
    assert.equal(parsed.homeserver.jwt?.algorithm, 'HS256');
  });
});

describe('the user policy of token-issuing backends', () => {
  const policy = new UserPolicy({
    appserviceNamespaces: [wholeUserId('@telegram_.*:example\\.org')],
    appserviceSenders: ['telegrambot'],
    ownSender: 'compat-proxy',
    deny: [wholeUserId('@admin:example\\.org')],
  });
  test('bridges, their senders, the own sender and denied users are refused; others pass', () => {
    assert.match(policy.refusalOf('@telegram_123:example.org') ?? '', /another appservice's user namespace/);
    assert.match(policy.refusalOf('@telegrambot:example.org') ?? '', /sender user/);
    assert.match(policy.refusalOf('@compat-proxy:example.org') ?? '', /own appservice user/);
    assert.match(policy.refusalOf('@admin:example.org') ?? '', /deny_users/);
    assert.equal(policy.refusalOf('@administrator:example.org'), undefined);
    assert.equal(policy.refusalOf('@alice:example.org'), undefined);
    const allowList = new UserPolicy({ appserviceNamespaces: [], appserviceSenders: [], deny: [], allow: [wholeUserId('@staff-.*:example\\.org')] });
    assert.equal(allowList.refusalOf('@staff-ann:example.org'), undefined);
    assert.match(allowList.refusalOf('@bob:example.org') ?? '', /allow_users/);
  });
});

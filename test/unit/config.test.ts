import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { parseByteSize, parseDuration } from '../../src/config/durations.js';
import { ConfigError, loadConfig, parseConfig } from '../../src/config/load-config.js';

const repo = fileURLToPath(new URL('../../', import.meta.url));

/** A Synapse appservice registration with every field Synapse requires. */
const REGISTRATION = 'id: bridge\nurl: null\nas_token: as-token-0123\nhs_token: hs-token-0123\nsender_localpart: bridgebot\nnamespaces:\n  users:\n    - { exclusive: true, regex: "@bridge_.*:example\\\\.org" }\n';

const HOMESERVER_SECRET = 'homeserver-secret-0123456789';
const ENCRYPTION_KEY = 'encryption-key-0123456789abcdef0123456789';

/** A valid config as YAML-shaped data; every table row breaks one thing in a fresh copy. */
function validConfig(): Record<string, any> {
  return {
    server_name: 'example.org',
    public_baseurl: 'https://matrix.example.org/',
    homeserver: { url: 'http://127.0.0.1:8008', secret: HOMESERVER_SECRET },
    sessions: { encryption_key: ENCRYPTION_KEY },
    oidc_providers: [
      { idp_id: 'op', issuer: 'https://op.example.org/', client_id: 'proxy', client_secret: 'client-secret', password_grant: { enabled: true } },
    ],
    password_login: { enabled: true, idp_id: 'op' },
  };
}

function problemsOf(yamlText: string, options: Parameters<typeof parseConfig>[1] = { env: {} }): readonly string[] {
  try {
    parseConfig(yamlText, options);
  } catch (err: unknown) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  assert.fail('expected a ConfigError');
}

/** The key path of a problem line: everything before the first ": ". */
const pathOf = (problem: string) => problem.slice(0, problem.indexOf(': '));

interface BrokenRow {
  readonly name: string;
  readonly edit: (config: Record<string, any>) => void;
  /** Exactly the key paths that must be reported, no more. */
  readonly paths: readonly string[];
  /** A fragment the first problem's message must contain. */
  readonly says?: string;
}

const provider = (config: Record<string, any>) => config['oidc_providers'][0];

const BROKEN: readonly BrokenRow[] = [
  { name: 'server_name missing', edit: (c) => delete c['server_name'], paths: ['server_name'], says: 'is required' },
  { name: 'server_name with a space', edit: (c) => (c['server_name'] = 'example org'), paths: ['server_name'] },
  { name: 'server_name with a bad port', edit: (c) => (c['server_name'] = 'example.org:99999'), paths: ['server_name'] },
  { name: 'server_name bad IPv6 literal', edit: (c) => (c['server_name'] = '[::g]'), paths: ['server_name'] },
  { name: 'public_baseurl relative', edit: (c) => (c['public_baseurl'] = 'matrix.example.org'), paths: ['public_baseurl'], says: 'must be an absolute URL' },
  { name: 'public_baseurl not http', edit: (c) => (c['public_baseurl'] = 'ftp://matrix.example.org/'), paths: ['public_baseurl'] },
  { name: 'public_baseurl with a query', edit: (c) => (c['public_baseurl'] = 'https://matrix.example.org/?x=1'), paths: ['public_baseurl'] },
  { name: 'listen port out of range', edit: (c) => (c['listen'] = { port: 70000 }), paths: ['listen.port'] },
  { name: 'unknown key in listen', edit: (c) => (c['listen'] = { hostname: 'x' }), paths: ['listen.hostname'], says: 'unknown key' },
  { name: 'CIDR prefix too long', edit: (c) => (c['trusted_proxies'] = ['10.0.0.0/33']), paths: ['trusted_proxies[0]'] },
  { name: 'CIDR garbage', edit: (c) => (c['trusted_proxies'] = ['10.0.0.1', 'fd00::/8', 'proxy.local']), paths: ['trusted_proxies[2]'] },
  { name: 'homeserver.url missing', edit: (c) => delete c['homeserver'].url, paths: ['homeserver.url'] },
  { name: 'homeserver.url not a URL', edit: (c) => (c['homeserver'].url = 'localhost:8008'), paths: ['homeserver.url'] },
  { name: 'homeserver.secret too short', edit: (c) => (c['homeserver'].secret = 'short'), paths: ['homeserver.secret'], says: 'at least 16' },
  { name: 'homeserver.secret missing', edit: (c) => delete c['homeserver'].secret, paths: ['homeserver.secret'], says: 'secret_path' },
  { name: 'homeserver.mode unknown', edit: (c) => (c['homeserver'].mode = 'dendrite'), paths: ['homeserver.mode'], says: 'synapse' },
  { name: 'appservice mode without its section', edit: (c) => { delete c['homeserver'].secret; c['homeserver'].mode = 'appservice'; }, paths: ['homeserver.appservice'], says: 'registration_file' },
  { name: 'appservice mode keeps the delegated secret', edit: (c) => { c['homeserver'].mode = 'appservice'; c['homeserver'].appservice = { registration_file: '/nonexistent/reg.yaml' }; }, paths: ['homeserver.secret', 'homeserver.appservice.registration_file'], says: 'cannot read' },
  { name: 'delegated mode on Dendrite', edit: (c) => (c['homeserver'].flavour = 'dendrite'), paths: ['homeserver.flavour'], says: 'mode: appservice' },
  { name: 'jwt mode on Dendrite', edit: (c) => { delete c['homeserver'].secret; c['homeserver'].mode = 'jwt'; c['homeserver'].flavour = 'dendrite'; c['homeserver'].jwt = { key: 'a-jwt-shared-secret-0123456789' }; }, paths: ['homeserver.flavour'], says: 'no JWT login' },
  { name: 'deny_users not a regex', edit: (c) => { delete c['homeserver'].secret; c['homeserver'].mode = 'jwt'; c['homeserver'].jwt = { key: 'a-jwt-shared-secret-0123456789', deny_users: ['@(admin:x'] }; }, paths: ['homeserver.jwt.deny_users[0]'], says: 'regular expression' },
  { name: 'duration with words', edit: (c) => (c['homeserver'].upstream_timeout = '10 minutes'), paths: ['homeserver.upstream_timeout'] },
  { name: 'duration of zero', edit: (c) => (c['sessions'].login_token_lifetime = 0), paths: ['sessions.login_token_lifetime'] },
  { name: 'homeserver.listen without port', edit: (c) => (c['homeserver'].listen = { host: '127.0.0.1' }), paths: ['homeserver.listen.port'] },
  { name: 'redis_url of another scheme', edit: (c) => (c['store'] = { redis_url: 'http://127.0.0.1:6379' }), paths: ['store.redis_url'] },
  {
    name: 'two Redis topologies',
    edit: (c) => (c['store'] = { redis_url: 'redis://127.0.0.1:6379', cluster_nodes: [{ host: '127.0.0.1' }] }),
    paths: ['store.cluster_nodes'],
  },
  { name: 'sentinels without sentinel_name', edit: (c) => (c['store'] = { sentinels: [{ host: '127.0.0.1' }] }), paths: ['store.sentinel_name'] },
  { name: 'issuer not a URL', edit: (c) => (provider(c).issuer = 'op.example.org'), paths: ['oidc_providers[0].issuer'], says: 'must be an absolute URL' },
  { name: 'client_id missing', edit: (c) => delete provider(c).client_id, paths: ['oidc_providers[0].client_id'] },
  { name: 'idp_id missing', edit: (c) => delete provider(c).idp_id, paths: ['oidc_providers[0].idp_id', 'password_login.idp_id'], says: 'is required' },
  { name: 'idp_id with a space', edit: (c) => (provider(c).idp_id = 'my op'), paths: ['oidc_providers[0].idp_id', 'password_login.idp_id'] },
  { name: 'idp_id too long', edit: (c) => (provider(c).idp_id = 'a'.repeat(251)), paths: ['oidc_providers[0].idp_id', 'password_login.idp_id'] },
  {
    name: 'duplicate idp_id',
    edit: (c) => c['oidc_providers'].push({ idp_id: 'op', issuer: 'https://other.example.org/', client_id: 'x' }),
    paths: ['oidc_providers[1].idp_id'],
    says: 'duplicate',
  },
  { name: 'scopes without openid', edit: (c) => (provider(c).scopes = ['profile']), paths: ['oidc_providers[0].scopes'], says: 'openid' },
  {
    name: 'discover false without endpoints',
    edit: (c) => (provider(c).discover = false),
    paths: ['oidc_providers[0].authorization_endpoint', 'oidc_providers[0].token_endpoint', 'oidc_providers[0].jwks_uri'],
  },
  {
    name: 'userinfo profile without userinfo endpoint',
    edit: (c) =>
      Object.assign(provider(c), {
        discover: false,
        user_profile_method: 'userinfo_endpoint',
        authorization_endpoint: 'https://op.example.org/auth',
        token_endpoint: 'https://op.example.org/token',
      }),
    paths: ['oidc_providers[0].userinfo_endpoint'],
  },
  { name: 'unknown provider key', edit: (c) => (provider(c).client_secret_file = 'x'), paths: ['oidc_providers[0].client_secret_file'], says: 'unknown key' },
  {
    name: 'custom Python mapping module',
    edit: (c) => (provider(c).user_mapping_provider = { module: 'my_module.MyMapper', config: {} }),
    paths: ['oidc_providers[0].user_mapping_provider.module'],
  },
  {
    name: 'unknown mapping config key',
    edit: (c) => (provider(c).user_mapping_provider = { config: { localpart: '{{ user.sub }}' } }),
    paths: ['oidc_providers[0].user_mapping_provider.config.localpart'],
  },
  {
    name: 'attribute requirement with value and one_of',
    edit: (c) => (provider(c).attribute_requirements = [{ attribute: 'groups', value: 'a', one_of: ['b'] }]),
    paths: ['oidc_providers[0].attribute_requirements[0].value'],
  },
  {
    name: 'attribute requirement with neither',
    edit: (c) => (provider(c).attribute_requirements = [{ attribute: 'resource_access.matrix.roles' }]),
    paths: ['oidc_providers[0].attribute_requirements[0].value'],
  },
  {
    name: 'alg none',
    edit: (c) => (provider(c).id_token_signing_alg_values_supported = ['RS256', 'none']),
    paths: ['oidc_providers[0].id_token_signing_alg_values_supported[1]'],
    says: 'never',
  },
  { name: 'plain-http issuer', edit: (c) => (provider(c).issuer = 'http://op.example.org/'), paths: ['oidc_providers[0].issuer'], says: 'skip_verification' },
  {
    name: 'plain-http endpoints of an https issuer',
    edit: (c) => Object.assign(provider(c), { jwks_uri: 'http://op.example.org/jwks', authorization_endpoint: 'http://op.example.org/auth' }),
    paths: ['oidc_providers[0].jwks_uri'],
    says: 'issuer is https',
  },
  {
    name: 'template that does not compile',
    edit: (c) => (provider(c).user_mapping_provider = { config: { subject_template: '{% for x in user.groups %}' } }),
    paths: ['oidc_providers[0].user_mapping_provider.config.subject_template'],
    says: 'does not compile',
  },
  {
    name: 'template naming an unknown filter',
    edit: (c) => (provider(c).user_mapping_provider = { config: { email_template: '{{ user.email | lower | nosuch }}' } }),
    paths: ['oidc_providers[0].user_mapping_provider.config.email_template'],
    says: 'no filter named "nosuch"',
  },
  { name: 'unsupported client_auth_method', edit: (c) => (provider(c).client_auth_method = 'client_secret_jwt'), paths: ['oidc_providers[0].client_auth_method'] },
  {
    name: 'private_key_jwt without a key',
    edit: (c) => (provider(c).client_auth_method = 'private_key_jwt'),
    paths: ['oidc_providers[0].client_auth_method'],
  },
  {
    name: 'client_secret_post without a secret',
    edit: (c) => Object.assign(provider(c), { client_auth_method: 'client_secret_post', client_secret: undefined }),
    paths: ['oidc_providers[0].client_auth_method'],
  },
  { name: 'idp_icon not mxc', edit: (c) => (provider(c).idp_icon = 'https://example.org/icon.png'), paths: ['oidc_providers[0].idp_icon'] },
  { name: 'idp_brand upper case', edit: (c) => (provider(c).idp_brand = 'Keycloak'), paths: ['oidc_providers[0].idp_brand'] },
  {
    name: 'authorization parameter that would override state',
    edit: (c) => (provider(c).additional_authorization_parameters = { state: 'fixed', acr_values: 'x' }),
    paths: ['oidc_providers[0].additional_authorization_parameters.state'],
  },
  { name: 'password_grant as a boolean', edit: (c) => (provider(c).password_grant = true), paths: ['oidc_providers[0].password_grant', 'password_login.idp_id'] },
  { name: 'password login without idp_id', edit: (c) => (c['password_login'] = { enabled: true }), paths: ['password_login.idp_id'] },
  { name: 'password login naming an unknown provider', edit: (c) => (c['password_login'].idp_id = 'keycloak'), paths: ['password_login.idp_id'], says: 'keycloak' },
  {
    name: 'password login at a provider without password_grant',
    edit: (c) => (provider(c).password_grant = { enabled: false }),
    paths: ['password_login.idp_id'],
    says: 'password_grant.enabled',
  },
  { name: 'encryption key too short', edit: (c) => (c['sessions'].encryption_key = 'x'.repeat(31)), paths: ['sessions.encryption_key'], says: 'at least 32' },
  { name: 'sessions section missing', edit: (c) => delete c['sessions'], paths: ['sessions.encryption_key'] },
  { name: 'rate limit burst zero', edit: (c) => (c['rate_limits'] = { login_per_ip: { burst: 0 } }), paths: ['rate_limits.login_per_ip.burst'] },
  { name: 'rate limit as a string', edit: (c) => (c['rate_limits'] = { login_per_account: { per_second: 'fast' } }), paths: ['rate_limits.login_per_account.per_second'] },
  { name: 'whitelist entry without slash', edit: (c) => (c['sso'] = { client_whitelist: ['https://app.example.org'] }), paths: ['sso.client_whitelist[0]'] },
  { name: 'metrics on the client port', edit: (c) => (c['metrics'] = { listen: { port: 8009 } }), paths: ['metrics.listen.port'], says: 'listen' },
  { name: 'admin token too short', edit: (c) => (c['admin'] = { token: 'short' }), paths: ['admin.token'] },
  { name: 'log level unknown', edit: (c) => (c['log'] = { level: 'verbose' }), paths: ['log.level'] },
  { name: 'size with decimal unit', edit: (c) => (c['max_request_body'] = '10KB'), paths: ['max_request_body'] },
  { name: 'unknown top-level key (Synapse legacy oidc_config)', edit: (c) => (c['oidc_config'] = { enabled: true }), paths: ['oidc_config'], says: 'unknown key' },
  { name: 'appservice file missing', edit: (c) => (c['appservice_config_files'] = ['no-such-registration.yaml']), paths: ['appservice_config_files[0]'] },
  { name: 'provider given as a bare name', edit: (c) => (c['oidc_providers'] = ['op']), paths: ['oidc_providers[0]', 'password_login.idp_id'], says: 'mapping' },
  { name: 'empty provider entry', edit: (c) => c['oidc_providers'].push(null), paths: ['oidc_providers[1]'], says: 'got an empty value' },
  { name: 'list where a mapping belongs', edit: (c) => (c['homeserver'] = ['http://127.0.0.1:8008']), paths: ['homeserver'], says: 'mapping' },
];

describe('config validation', () => {
  test('the base config of the table is valid', () => {
    const config = parseConfig(stringify(validConfig()), { env: {} });
    assert.equal(config.server_name, 'example.org');
  });

  test(`a table of ${BROKEN.length} broken configs reports each problem at its key path`, () => {
    assert.ok(BROKEN.length >= 25);
    for (const row of BROKEN) {
      const config = validConfig();
      row.edit(config);
      const problems = problemsOf(stringify(config));
      assert.deepEqual([...new Set(problems.map(pathOf))].sort(), [...row.paths].sort(), `${row.name}: got\n${problems.join('\n')}`);
      if (row.says !== undefined) assert.ok(problems[0]?.includes(row.says), `${row.name}: "${problems[0]}" should say "${row.says}"`);
    }
  });

  test('every problem is reported at once, cross-field checks included, in section order', () => {
    const config = validConfig();
    config['server_name'] = 'not a name';
    config['homeserver'].secret = 'short';
    config['oidc_providers'][0].issuer = 'nope';
    config['oidc_providers'].push({ idp_id: 'op', issuer: 'https://x.example/', client_id: 'y' });
    config['rate_limits'] = { login_per_ip: { burst: 1.5 } };
    config['password_login'].idp_id = 'missing';
    config['bogus'] = 1;
    const problems = problemsOf(stringify(config));
    assert.deepEqual(problems.map(pathOf), [
      'server_name',
      'homeserver.secret',
      'oidc_providers[0].issuer',
      'oidc_providers[1].idp_id',
      'password_login.idp_id',
      'rate_limits.login_per_ip.burst',
      'bogus',
    ]);
    const error = new ConfigError(problems);
    assert.match(error.message, /server_name: must be a Matrix server name/);
  });

  test('YAML syntax errors and duplicate keys are reported with their line', () => {
    assert.match(problemsOf('server_name: [unclosed\n')[0] ?? '', /^YAML: .* at line \d+, column \d+$/);
    assert.match(problemsOf('server_name: a\nserver_name: b\n')[0] ?? '', /^YAML: .*[Dd]uplicate|^YAML: .*unique/);
    assert.deepEqual(problemsOf('- just a list\n'), ['(top level): the configuration must be a YAML mapping of keys to values']);
    assert.deepEqual(problemsOf(''), ['(top level): the configuration must be a YAML mapping of keys to values']);
  });
});

describe('defaults and normalisation', () => {
  test('plain http is accepted where the OP provider accepts it: a loopback issuer, or skip_verification', () => {
    const config = validConfig();
    Object.assign(provider(config), { issuer: 'http://127.0.0.1:8080/realms/m', token_endpoint: 'http://127.0.0.1:8080/token' });
    config['oidc_providers'].push({ idp_id: 'lab', issuer: 'http://op.lab.example/', client_id: 'x', skip_verification: true, jwks_uri: 'http://op.lab.example/jwks' });
    config['oidc_providers'].push({ idp_id: 'v6', issuer: 'http://[::1]:8080/', client_id: 'x' });
    assert.equal(parseConfig(stringify(config), { env: {} }).oidc_providers.length, 3);
  });

  test("Synapse's templates compile, its localpart_from_email filter and nunjucks' own included", () => {
    const config = validConfig();
    provider(config).user_mapping_provider = {
      config: { localpart_template: '{{ user.email | localpart_from_email }}', display_name_template: '{{ user.name|capitalize }}', email_template: "{{ user.email.split('@')[0] }}" },
    };
    assert.equal(parseConfig(stringify(config), { env: {} }).oidc_providers[0]?.user_mapping_provider.config.display_name_template, '{{ user.name|capitalize }}');
  });

  test('defaults fill every optional key', () => {
    const config = parseConfig(stringify(validConfig()), { env: {} });
    assert.deepEqual(config.listen, { host: '127.0.0.1', port: 8009 });
    assert.deepEqual(config.trusted_proxies, []);
    assert.equal(config.homeserver.mode, 'delegated');
    assert.equal(config.homeserver.listen, undefined);
    assert.equal(config.homeserver.upstream_timeout, 60_000);
    assert.equal(config.homeserver.sync_timeout, 300_000);
    assert.equal(config.homeserver.provisioning_timeout, 10_000);
    assert.deepEqual(config.store, { key_prefix: 'mcp:', session_format: 'auto' });
    assert.deepEqual(config.sessions, {
      refreshable_access_token_lifetime: 300_000,
      login_token_lifetime: 120_000,
      sso_login_lifetime: 1_800_000,
      revalidate_interval: 300_000,
      op_unreachable_grace: 3_600_000,
      uia_session_lifetime: 900_000,
      uia_reuse_window: 120_000,
      encryption_key: ENCRYPTION_KEY,
      previous_encryption_keys: [],
    });
    assert.deepEqual(config.account, { enabled: true, session_lifetime: 1_800_000, recent_auth_window: 300_000 });
    assert.deepEqual(config.rate_limits, {
      login_per_ip: { burst: 3, per_second: 0.05 },
      login_per_account: { burst: 1800, per_second: 0.5 },
      sso_per_ip: { burst: 30, per_second: 0.5 },
      device_user_code_per_ip: { burst: 10, per_second: 0.05 },
      op_introspection: { burst: 20, per_second: 5 },
      ipv6_prefix_length: 64,
    });
    assert.deepEqual(config.oauth_server, { first_party_client_uris: [], upstream_login_hint: 'localpart', device_code_lifetime: 600_000, device_code_poll_interval: 5_000 });
    assert.deepEqual(config.metrics, { enabled: true, listen: { host: '127.0.0.1', port: 9009 } });
    assert.deepEqual(config.admin, {});
    assert.deepEqual(config.log, { level: 'info' });
    assert.equal(config.max_request_body, 65_536);
    const op = config.oidc_providers[0];
    assert.ok(op !== undefined);
    assert.equal(op.idp_name, 'op');
    assert.equal(op.discover, true);
    assert.equal(op.client_auth_method, 'client_secret_basic');
    assert.equal(op.pkce_method, 'always');
    assert.deepEqual(op.scopes, ['openid']);
    assert.equal(op.backchannel_logout_mode, 'hard');
    assert.deepEqual(op.user_mapping_provider.config, { subject_claim: 'sub', picture_claim: 'picture', confirm_localpart: false, extra_attributes: {} });
  });

  test('a provider without any client credential defaults to client_auth_method none', () => {
    const config = validConfig();
    delete config['oidc_providers'][0].client_secret;
    assert.equal(parseConfig(stringify(config), { env: {} }).oidc_providers[0]?.client_auth_method, 'none');
  });

  test('URLs, CIDRs and empty values are normalised', () => {
    const config = validConfig();
    config['public_baseurl'] = 'https://matrix.example.org/base';
    config['homeserver'].url = 'http://127.0.0.1:8008/';
    config['trusted_proxies'] = ['10.1.2.3', '::1', '192.168.0.0/16'];
    const text = `${stringify(config)}store:\nlog:\n`;
    const parsed = parseConfig(text, { env: {} });
    assert.equal(parsed.public_baseurl, 'https://matrix.example.org/base/');
    assert.equal(parsed.homeserver.url, 'http://127.0.0.1:8008');
    assert.deepEqual(parsed.trusted_proxies, ['10.1.2.3/32', '::1/128', '192.168.0.0/16']);
    assert.equal(parsed.log.level, 'info', 'an empty section takes its defaults');
  });

  test('server names follow the Matrix grammar', () => {
    for (const name of ['example.org', 'example.org:8448', 'localhost', '1.2.3.4:80', '[::1]', '[1234:5678::abcd]:8448']) {
      const config = validConfig();
      config['server_name'] = name;
      assert.equal(parseConfig(stringify(config), { env: {} }).server_name, name);
    }
  });

  test('the result is deep-frozen', () => {
    const config = parseConfig(stringify(validConfig()), { env: {} });
    assert.ok(Object.isFrozen(config));
    assert.ok(Object.isFrozen(config.homeserver));
    assert.ok(Object.isFrozen(config.oidc_providers));
    assert.ok(Object.isFrozen(config.oidc_providers[0]?.user_mapping_provider.config.extra_attributes));
    assert.throws(() => {
      (config.homeserver as { url: string }).url = 'http://evil';
    }, TypeError);
    assert.throws(() => (config.oidc_providers as unknown as unknown[]).push({}), TypeError);
  });
});

describe('durations and sizes', () => {
  test('Synapse-style durations become milliseconds', () => {
    const cases: [unknown, number][] = [
      ['500ms', 500],
      ['30s', 30_000],
      ['5m', 300_000],
      ['1h', 3_600_000],
      ['2d', 172_800_000],
      ['1w', 604_800_000],
      ['1y', 31_536_000_000],
      [1500, 1500],
      ['1500', 1500],
    ];
    for (const [input, ms] of cases) assert.deepEqual(parseDuration(input), { ok: true, value: ms }, String(input));
    for (const input of ['1.5s', '-1s', '5 minutes', '5M', 's', '', true, 1.5, -1]) assert.equal(parseDuration(input).ok, false, String(input));
  });

  test('sizes become bytes', () => {
    const cases: [unknown, number][] = [
      ['64KiB', 65_536],
      ['64K', 65_536],
      ['1MiB', 1_048_576],
      ['1M', 1_048_576],
      ['2GiB', 2_147_483_648],
      ['100B', 100],
      [4096, 4096],
    ];
    for (const [input, bytes] of cases) assert.deepEqual(parseByteSize(input), { ok: true, value: bytes }, String(input));
    for (const input of ['1KB', '1MB', 'lots', 1.5]) assert.equal(parseByteSize(input).ok, false, String(input));
  });

  test('durations and sizes in the config keep their key names', () => {
    const config = validConfig();
    config['homeserver'].sync_timeout = '90s';
    config['sessions'].login_token_lifetime = 45_000;
    config['max_request_body'] = '1MiB';
    const parsed = parseConfig(stringify(config), { env: {} });
    assert.equal(parsed.homeserver.sync_timeout, 90_000);
    assert.equal(parsed.sessions.login_token_lifetime, 45_000);
    assert.equal(parsed.max_request_body, 1_048_576);
  });
});

describe('environment substitution', () => {
  const yamlWith = (secret: string, extra = '') => stringify({ ...validConfig(), homeserver: { url: 'http://127.0.0.1:8008', secret } }) + extra;

  test('${NAME} is replaced inside string values, $${ escapes', () => {
    const config = parseConfig(yamlWith('${HS_SECRET}', 'listen:\n  port: ${PORT}\n'), { env: { HS_SECRET: HOMESERVER_SECRET, PORT: '9100' } });
    assert.equal(config.homeserver.secret, HOMESERVER_SECRET);
    assert.equal(config.listen.port, 9100, 'a substituted port is a number');
    const literal = parseConfig(yamlWith('prefix-$${NOT_A_VAR}-0123456789'), { env: { NOT_A_VAR: 'x' } });
    assert.equal(literal.homeserver.secret, 'prefix-${NOT_A_VAR}-0123456789');
    const mixed = parseConfig(yamlWith('a-${A}-b-${B}-0123456789'), { env: { A: 'one', B: 'two' } });
    assert.equal(mixed.homeserver.secret, 'a-one-b-two-0123456789');
  });

  test('a missing variable names the key and the variable, once', () => {
    const problems = problemsOf(yamlWith('${HOMESERVER_SECRET}'), { env: {} });
    assert.deepEqual(problems, ['homeserver.secret: environment variable HOMESERVER_SECRET is not set']);
  });

  test('a malformed reference is an error, not a literal secret', () => {
    const problems = problemsOf(yamlWith('${HOMESERVER-SECRET}'), { env: {} });
    assert.equal(problems.length, 1);
    assert.match(problems[0] ?? '', /^homeserver\.secret: "\$\{HOMESERVER-SECRET\}" is not a valid environment reference/);
  });

  test('substituted values are not parsed as YAML and not substituted again', () => {
    const config = parseConfig(yamlWith('${HS_SECRET}'), { env: { HS_SECRET: '${OTHER}\nkey: value # 0123456789' } });
    assert.equal(config.homeserver.secret, '${OTHER}\nkey: value # 0123456789');
  });

  test('process.env is the default environment', () => {
    const name = `MCP_CONFIG_TEST_${process.pid}`;
    process.env[name] = HOMESERVER_SECRET;
    try {
      assert.equal(parseConfig(yamlWith(`\${${name}}`)).homeserver.secret, HOMESERVER_SECRET);
    } finally {
      delete process.env[name];
    }
  });
});

describe('*_path secrets', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mcp-config-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, 'secrets'));
  writeFileSync(join(dir, 'secrets', 'homeserver'), `${HOMESERVER_SECRET}\n`);
  writeFileSync(join(dir, 'secrets', 'encryption'), `${ENCRYPTION_KEY}\r\n`);
  writeFileSync(join(dir, 'secrets', 'admin'), 'admin-token-0123456789abcdef0123456789');
  writeFileSync(join(dir, 'secrets', 'client'), 'client-secret-from-file\n\n');
  writeFileSync(join(dir, 'secrets', 'key.pem'), '-----BEGIN PRIVATE KEY-----\nMC4CAQ\n-----END PRIVATE KEY-----\n');

  function withPaths(): Record<string, any> {
    const config = validConfig();
    config['homeserver'] = { url: 'http://127.0.0.1:8008', secret_path: 'secrets/homeserver' };
    config['sessions'] = { encryption_key_path: join(dir, 'secrets', 'encryption') };
    config['admin'] = { token_path: 'secrets/admin' };
    delete config['oidc_providers'][0].client_secret;
    config['oidc_providers'][0].client_secret_path = 'secrets/client';
    config['oidc_providers'].push({
      idp_id: 'apple',
      issuer: 'https://appleid.apple.com',
      client_id: 'org.example.matrix',
      client_secret_jwt_key: { key_file: 'secrets/key.pem', jwt_header: { alg: 'ES256', kid: 'KEY1' }, jwt_payload: { iss: 'TEAM' } },
    });
    return config;
  }

  test('every secret can be read from a file relative to baseDir, trailing newlines dropped', () => {
    const config = parseConfig(stringify(withPaths()), { env: {}, baseDir: dir });
    assert.equal(config.homeserver.secret, HOMESERVER_SECRET);
    assert.equal(config.sessions.encryption_key, ENCRYPTION_KEY, 'absolute paths work too');
    assert.equal(config.admin.token, 'admin-token-0123456789abcdef0123456789');
    assert.equal(config.oidc_providers[0]?.client_secret, 'client-secret-from-file');
    assert.equal(config.oidc_providers[1]?.client_secret_jwt_key?.key, '-----BEGIN PRIVATE KEY-----\nMC4CAQ\n-----END PRIVATE KEY-----');
    assert.equal(config.oidc_providers[1]?.client_auth_method, 'client_secret_basic', "Synapse's Apple setup: the signed JWT is the client secret");
    assert.ok(!('secret_path' in config.homeserver));
  });

  test('sessions.previous_encryption_keys: each entry a key or a key_path; short or unreadable ones named', () => {
    const config = withPaths();
    writeFileSync(join(dir, 'secrets', 'old-encryption'), 'an-older-encryption-key-0123456789abcdef\n');
    config['sessions'].previous_encryption_keys = [{ key_path: 'secrets/old-encryption' }, { key: 'yet-another-older-key-0123456789abcdef' }];
    const parsed = parseConfig(stringify(config), { env: {}, baseDir: dir });
    assert.deepEqual(parsed.sessions.previous_encryption_keys, [{ key: 'an-older-encryption-key-0123456789abcdef' }, { key: 'yet-another-older-key-0123456789abcdef' }]);
    assert.deepEqual(parseConfig(stringify(withPaths()), { env: {}, baseDir: dir }).sessions.previous_encryption_keys, [], 'none by default');

    config['sessions'].previous_encryption_keys = [{ key: 'short' }, { key_path: 'secrets/absent' }, { key: 'x'.repeat(40), key_path: 'secrets/old-encryption' }];
    const problems = problemsOf(stringify(config), { env: {}, baseDir: dir });
    assert.deepEqual(problems.map(pathOf), ['sessions.previous_encryption_keys[1].key_path', 'sessions.previous_encryption_keys[2].key', 'sessions.previous_encryption_keys[0].key']);
    assert.match(problems.join('\n'), /at least 32 characters/);
  });

  test('homeserver.previous_secrets: each entry a secret or a secret_path; a short one named', () => {
    const config = withPaths();
    config['homeserver'].previous_secrets = [{ secret_path: 'secrets/homeserver' }, { secret: 'short' }];
    assert.deepEqual(problemsOf(stringify(config), { env: {}, baseDir: dir }).map(pathOf), ['homeserver.previous_secrets[1].secret']);
    config['homeserver'].previous_secrets = [{ secret_path: 'secrets/homeserver' }];
    assert.deepEqual(parseConfig(stringify(config), { env: {}, baseDir: dir }).homeserver.previous_secrets, [{ secret: HOMESERVER_SECRET }]);
  });

  test('loadConfig reads paths relative to the config file, not the working directory', () => {
    const file = join(dir, 'proxy.yaml');
    writeFileSync(file, stringify(withPaths()));
    assert.equal(loadConfig(file, {}).homeserver.secret, HOMESERVER_SECRET);
  });

  test('a path may come from the environment', () => {
    const config = withPaths();
    config['homeserver'].secret_path = '${SECRETS_DIR}/homeserver';
    assert.equal(parseConfig(stringify(config), { env: { SECRETS_DIR: join(dir, 'secrets') }, baseDir: dir }).homeserver.secret, HOMESERVER_SECRET);
  });

  test('a missing file names its key, and only that problem is reported for the secret', () => {
    const config = withPaths();
    config['homeserver'].secret_path = 'secrets/absent';
    config['oidc_providers'][0].client_secret_path = 'secrets';
    config['oidc_providers'][1].client_secret_jwt_key.key_file = 'nope.pem';
    const problems = problemsOf(stringify(config), { env: {}, baseDir: dir });
    assert.deepEqual(problems.map(pathOf), ['homeserver.secret_path', 'oidc_providers[0].client_secret_path', 'oidc_providers[1].client_secret_jwt_key.key_file']);
    assert.match(problems[0] ?? '', /cannot read .*secrets\/absent: no such file/);
    assert.match(problems[1] ?? '', /is a directory/);
  });

  test('a secret and its *_path together are refused', () => {
    const config = withPaths();
    config['homeserver'].secret = HOMESERVER_SECRET;
    config['sessions'].encryption_key = ENCRYPTION_KEY;
    config['admin'].token = 'admin-token-0123456789abcdef0123456789';
    config['oidc_providers'][0].client_secret = 'inline';
    const problems = problemsOf(stringify(config), { env: {}, baseDir: dir });
    assert.deepEqual(problems.map(pathOf), ['homeserver.secret', 'oidc_providers[0].client_secret', 'sessions.encryption_key', 'admin.token']);
    assert.match(problems[0] ?? '', /either secret or secret_path/);
  });

  test('a secret read from a file is still validated', () => {
    writeFileSync(join(dir, 'secrets', 'weak'), 'short\n');
    const config = withPaths();
    config['homeserver'].secret_path = 'secrets/weak';
    assert.deepEqual(problemsOf(stringify(config), { env: {}, baseDir: dir }), ['homeserver.secret: must be at least 16 characters long']);
  });

  test("appservice registrations are read with Synapse's rules, each problem naming the file and the field", () => {
    const write = (name: string, text: string) => writeFileSync(join(dir, name), text);
    write('good.yaml', REGISTRATION);
    write('twin.yaml', REGISTRATION.replace('id: bridge', 'id: twin'));
    write('list.yaml', '- id: bridge\n');
    write('bare.yaml', 'id: bare\nas_token: t\nnamespaces:\n  users: "@.*"\n');
    write('regex.yaml', REGISTRATION.replace('as-token-0123', 'other-token').replace('id: bridge', 'id: regex').replace('exclusive: true, regex: "@bridge_.*', 'regex: "@(bridge_.*'));
    const config = validConfig();
    config['appservice_config_files'] = ['good.yaml', 'twin.yaml', 'list.yaml', 'bare.yaml', 'regex.yaml', 'good.yaml'];
    const problems = problemsOf(stringify(config), { env: {}, baseDir: dir });
    const at = (file: string) => join(dir, file);
    assert.deepEqual(problems, [
      `appservice_config_files[1]: ${at('twin.yaml')}: as_token is already the as_token of ${at('good.yaml')}`,
      `appservice_config_files[2]: ${at('list.yaml')}: must be a YAML mapping (a Synapse appservice registration)`,
      `appservice_config_files[3]: ${at('bare.yaml')}: hs_token is required (a non-empty string)`,
      `appservice_config_files[3]: ${at('bare.yaml')}: sender_localpart is required (a non-empty string)`,
      `appservice_config_files[3]: ${at('bare.yaml')}: url is required (a URL, or null for an appservice that receives no events)`,
      `appservice_config_files[3]: ${at('bare.yaml')}: namespaces.users must be a list of { exclusive, regex }`,
      `appservice_config_files[4]: ${at('regex.yaml')}: namespaces.users[0].exclusive is required (true or false)`,
      problems[7] ?? '',
      `appservice_config_files[5]: ${at('good.yaml')}: id "bridge" is already the id of ${at('good.yaml')}`,
      `appservice_config_files[5]: ${at('good.yaml')}: as_token is already the as_token of ${at('good.yaml')}`,
    ]);
    assert.match(problems[7] ?? '', /^appservice_config_files\[4\]: .*regex\.yaml: namespaces\.users\[0\]\.regex is not a regular expression/);
  });

  test('appservice registration paths become absolute', () => {
    writeFileSync(join(dir, 'bridge.yaml'), REGISTRATION);
    const config = validConfig();
    config['appservice_config_files'] = ['bridge.yaml'];
    assert.deepEqual(parseConfig(stringify(config), { env: {}, baseDir: dir }).appservice_config_files, [join(dir, 'bridge.yaml')]);
  });

  test('an unreadable config file is a ConfigError', () => {
    assert.throws(() => loadConfig(join(dir, 'absent.yaml')), (err: unknown) => err instanceof ConfigError && /absent\.yaml: cannot read/.test(err.problems[0] ?? ''));
  });
});

describe('shipped configurations', () => {
  test('config/example.yaml documents a valid config', () => {
    const config = loadConfig(join(repo, 'config/example.yaml'), {
      HOMESERVER_SECRET,
      KEYCLOAK_CLIENT_SECRET: 'keycloak-client-secret',
      SESSION_ENCRYPTION_KEY: ENCRYPTION_KEY,
    });
    assert.equal(config.password_login.idp_id, 'keycloak');
    assert.equal(config.oidc_providers[0]?.password_grant.enabled, true);
    assert.deepEqual(config.homeserver.listen, { host: '127.0.0.1', port: 8010 });
  });

  test('config/example.yaml names every env variable it needs', () => {
    const problems = problemsOf(readFileSync(join(repo, 'config/example.yaml'), 'utf8'), { env: {} });
    assert.deepEqual(problems, [
      'homeserver.secret: environment variable HOMESERVER_SECRET is not set',
      'oidc_providers[0].client_secret: environment variable KEYCLOAK_CLIENT_SECRET is not set',
      'sessions.encryption_key: environment variable SESSION_ENCRYPTION_KEY is not set',
    ]);
  });

  test("the authentik guide's Synapse block validates as pasted", () => {
    const config = loadConfig(join(repo, 'test/fixtures/authentik.yaml'), {});
    const op = config.oidc_providers[0];
    assert.ok(op !== undefined);
    assert.equal(op.idp_id, 'authentik');
    assert.equal(op.issuer, 'https://authentik.company/application/o/app-slug/');
    assert.equal(op.client_secret, '*client secret*');
    assert.deepEqual(op.scopes, ['openid', 'profile', 'email']);
    assert.equal(op.user_mapping_provider.config.localpart_template, '{{ user.preferred_username }}');
    assert.equal(op.user_mapping_provider.config.display_name_template, '{{ user.name|capitalize }}');
  });

  test("the Defguard guide's Synapse block validates as pasted", () => {
    const config = loadConfig(join(repo, 'test/fixtures/defguard.yaml'), {});
    const op = config.oidc_providers[0];
    assert.ok(op !== undefined);
    assert.equal(op.idp_id, 'Defguard');
    assert.equal(op.discover, false);
    assert.equal(op.client_id, 'CLIENT_ID_FROM_DEFGUARD');
    assert.equal(op.token_endpoint, 'https://yourdefguard.com/api/v1/oauth/token');
    assert.equal(op.jwks_uri, 'https://yourdefguard.com/api/v1/oauth/discovery/keys');
    assert.equal(op.user_mapping_provider.config.localpart_template, "{{ user.email.split('@')[0] }}");
  });
});

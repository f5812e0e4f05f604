import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { parseConfig } from '../../src/config/load-config.js';
import { compileUserMapper, MappingError, meetsRequirements, type MappingConfig } from '../../src/identity/user-mapping.js';

const SERVER = 'matrix.company';

/**
 * The provider blocks exactly as the authentik and Defguard guides print them, pasted into test/fixtures and read
 * through the real config loader: what an admin pastes is what gets compiled.
 */
function mapperOf(fixture: 'authentik' | 'defguard', options: { caseFolding?: boolean } = {}) {
  const config = parseConfig(readFileSync(new URL(`../fixtures/${fixture}.yaml`, import.meta.url), 'utf8'), { env: {} });
  const provider = config.oidc_providers[0]!;
  return compileUserMapper(provider.idp_id, provider.user_mapping_provider.config, config.server_name, options);
}

function mapperFor(config: MappingConfig, idpId = 'test', options: { caseFolding?: boolean } = {}) {
  return compileUserMapper(idpId, config, SERVER, options);
}

function mappingFailure(fn: () => unknown): MappingError {
  try {
    fn();
  } catch (err: unknown) {
    if (err instanceof MappingError) return err;
    throw err;
  }
  assert.fail('expected a MappingError');
}

describe('guide blocks', () => {
  test('authentik: localpart from preferred_username, display name capitalised (Jinja capitalize lowers the rest)', () => {
    const identity = mapperOf('authentik').map({ sub: 'f2c1e0a9', preferred_username: 'alice.smith', name: 'alice SMITH', email: 'alice@company' });
    assert.deepEqual(identity, { subject: 'f2c1e0a9', localpart: 'alice.smith', localpartFolded: false, displayName: 'Alice smith' });
    // A capitalised user name is refused unless the provider allows case folding (issue 12 #2).
    assert.equal(mappingFailure(() => mapperOf('authentik').map({ sub: 'f2c1e0a9', preferred_username: 'Alice.Smith' })).failure.kind, 'folded_localpart');
    const folded = mapperOf('authentik', { caseFolding: true }).map({ sub: 'f2c1e0a9', preferred_username: 'Alice.Smith' });
    assert.equal(folded.localpart, 'alice.smith');
    assert.equal(folded.localpartFolded, true);
  });

  test('Defguard: localpart from the email before @, display name from first and last name, email kept', () => {
    const identity = mapperOf('defguard', { caseFolding: true }).map({ sub: '42', email: 'Bob.Jones@yourdefguard.com', first_name: 'Bob', last_name: 'Jones' });
    assert.deepEqual(identity, { subject: '42', localpart: 'bob.jones', localpartFolded: true, displayName: 'Bob Jones', email: 'Bob.Jones@yourdefguard.com' });
  });

  test('Defguard: a missing last name leaves no dangling space', () => {
    const identity = mapperOf('defguard').map({ sub: '42', email: 'carol@x', first_name: 'Carol' });
    assert.equal(identity.displayName, 'Carol');
  });
});

describe('filters and string methods', () => {
  const render = (template: string, claims: Record<string, unknown>) => mapperFor({ display_name_template: template }).map({ sub: 's', ...claims }).displayName;

  test('capitalize, lower, upper', () => {
    assert.equal(render('{{ user.name|capitalize }}', { name: 'hELLO world' }), 'Hello world');
    assert.equal(render('{{ user.name|lower }}', { name: 'MiXeD' }), 'mixed');
    assert.equal(render('{{ user.name|upper }}', { name: 'MiXeD' }), 'MIXED');
  });
  test('replace', () => {
    assert.equal(render("{{ user.name|replace(' ', '_') }}", { name: 'a b c' }), 'a_b_c');
  });
  test('default for a missing claim', () => {
    assert.equal(render("{{ user.nickname|default('anonymous') }}", {}), 'anonymous');
    assert.equal(render("{{ user.nickname|default('anonymous') }}", { nickname: 'nick' }), 'nick');
  });
  test("Synapse's localpart_from_email", () => {
    assert.equal(render('{{ user.email|localpart_from_email }}', { email: 'dave@example.org' }), 'dave');
    assert.equal(render('{{ user.missing|localpart_from_email }}', {}), undefined);
  });
  test('split and indexing', () => {
    assert.equal(render("{{ user.email.split('@')[1] }}", { email: 'eve@example.org' }), 'example.org');
  });
  test('nested claims', () => {
    assert.equal(render('{{ user.address.locality }}', { address: { locality: 'Lyon' } }), 'Lyon');
  });
});

describe('localparts', () => {
  test('folding is refused: ALICE, " bob ", the KELVIN SIGN; lower-casing only when allowed (issue 12 #2)', () => {
    const strict = mapperFor({ localpart_template: '{{ user.preferred_username }}' });
    const folding = mapperFor({ localpart_template: '{{ user.preferred_username }}' }, 'test', { caseFolding: true });
    for (const spelled of ['ALICE', ' bob ', 'bob\n', '\u212Aelvin', 'ｂｏｂ']) {
      assert.equal(mappingFailure(() => strict.map({ sub: 's', preferred_username: spelled })).failure.kind, 'folded_localpart', JSON.stringify(spelled));
    }
    assert.equal(folding.map({ sub: 's', preferred_username: 'ALICE' }).localpart, 'alice');
    for (const spelled of [' bob ', '\u212Aelvin', 'ｂｏｂ']) {
      assert.equal(mappingFailure(() => folding.map({ sub: 's', preferred_username: spelled })).failure.kind, 'folded_localpart', JSON.stringify(spelled));
    }
    assert.deepEqual(strict.map({ sub: 's', preferred_username: 'alice' }), { subject: 's', localpart: 'alice', localpartFolded: false });
  });
  test("Synapse's registration rules apply before claiming: no leading _ (issue 12 #4)", () => {
    const mapper = mapperFor({ localpart_template: '{{ user.u }}' });
    for (const reserved of ['_bridge', '__proto__', '_']) assert.equal(mappingFailure(() => mapper.map({ sub: 's', u: reserved })).failure.kind, 'invalid_localpart', reserved);
    assert.equal(mapper.map({ sub: 's', u: 'a_b' }).localpart, 'a_b');
  });
  test('an invalid rendered localpart is rejected with the provider id', () => {
    const mapper = mapperFor({ localpart_template: '{{ user.name }}' }, 'my-idp');
    const error = mappingFailure(() => mapper.map({ sub: 's', name: 'alice smith' }));
    assert.equal(error.idpId, 'my-idp');
    assert.deepEqual(error.failure, { kind: 'invalid_localpart', rendered: 'alice smith' });
    assert.match(error.message, /my-idp/);
  });
  test('characters outside the grammar are rejected', () => {
    const mapper = mapperFor({ localpart_template: '{{ user.u }}' });
    for (const bad of ['a:b', 'a@b', 'ä', 'a b', '"x"']) {
      assert.throws(() => mapper.map({ sub: 's', u: bad }), MappingError, `${bad} should be refused`);
    }
  });
  test('a localpart making the user id longer than 255 bytes is rejected', () => {
    const mapper = mapperFor({ localpart_template: '{{ user.u }}' });
    assert.throws(() => mapper.map({ sub: 's', u: 'a'.repeat(250) }), MappingError);
  });
  test('an empty rendering gives no localpart (the resolver then refuses a new account)', () => {
    assert.equal(mapperFor({ localpart_template: '{{ user.missing }}' }).map({ sub: 's' }).localpart, undefined);
  });
  test('a missing subject is an error', () => {
    assert.deepEqual(mappingFailure(() => mapperFor({}).map({ name: 'x' })).failure, { kind: 'missing_subject' });
  });
  test('a syntax error fails at compile time, naming the template and provider', () => {
    const error = mappingFailure(() => mapperFor({ display_name_template: '{{ user.name ' }, 'broken-idp'));
    assert.equal(error.failure.kind, 'template_error');
    assert.match(error.message, /broken-idp: display_name_template/);
  });
  test('subject_claim chooses the binding subject', () => {
    assert.equal(mapperFor({ subject_claim: 'oid' }).map({ sub: 's', oid: 'object-id' }).subject, 'object-id');
  });
});

describe('sandbox', () => {
  const attempts = [
    "{{ user.constructor.constructor('return process')().pid }}",
    "{{ user.name.constructor.constructor('return process')().pid }}",
    "{{ user['constructor']['constructor']('return process')().pid }}",
    "{{ user.name.split.constructor('return process')().pid }}",
    "{{ range.constructor('return process')().pid }}",
    "{{ cycler.constructor('return process')().pid }}",
    "{{ ''.constructor.constructor('return process')().pid }}",
    "{{ user.__proto__.constructor.constructor('return process')().pid }}",
  ];
  for (const template of attempts) {
    test(`blocks ${template}`, () => {
      const mapper = mapperFor({ display_name_template: template });
      let rendered: string | undefined;
      try {
        rendered = mapper.map({ sub: 's', name: 'x' }).displayName;
      } catch (err: unknown) {
        // Failing is fine; reaching the process is not.
        assert.ok(err instanceof MappingError);
        return;
      }
      assert.notEqual(rendered, String(process.pid));
    });
  }
});

describe('attribute requirements', () => {
  const keycloakClaims = { sub: 's', groups: ['staff', 'matrix'], resource_access: { synapse: { roles: ['user', 'admin'] }, other: { roles: ['x'] } }, realm: 'main' };

  test('dotted paths reach nested claims (Keycloak resource_access.<client>.roles)', () => {
    assert.equal(meetsRequirements(keycloakClaims, [{ attribute: 'resource_access.synapse.roles', value: 'admin' }]), true);
    assert.equal(meetsRequirements(keycloakClaims, [{ attribute: 'resource_access.synapse.roles', value: 'x' }]), false);
    assert.equal(meetsRequirements(keycloakClaims, [{ attribute: 'resource_access.missing.roles', value: 'user' }]), false);
  });
  test('a list claim matches when any element matches; one_of accepts several values', () => {
    assert.equal(meetsRequirements(keycloakClaims, [{ attribute: 'groups', value: 'matrix' }]), true);
    assert.equal(meetsRequirements(keycloakClaims, [{ attribute: 'realm', one_of: ['other', 'main'] }]), true);
    assert.equal(meetsRequirements(keycloakClaims, [{ attribute: 'realm', one_of: ['other'] }]), false);
  });
  test('every requirement must hold', () => {
    assert.equal(meetsRequirements(keycloakClaims, [{ attribute: 'groups', value: 'matrix' }, { attribute: 'realm', value: 'nope' }]), false);
  });
  test('prototype members are not claims', () => {
    assert.equal(meetsRequirements({ sub: 's' }, [{ attribute: 'constructor.name', value: 'Object' }]), false);
  });
});

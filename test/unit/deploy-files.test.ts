import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/config/load-config.js';
import {
  DEPLOY_FILES,
  REPO_ROOT,
  deployText,
  readCompose,
  renderDeployFile,
  renderForNative,
  secretRewrites,
  type DeployFile,
  type NativePlaces,
} from '../support/compose-native.js';
import { dockerignoreExcludes, parseDockerfile } from '../support/dockerfile.js';

// The deployment files checked without a container engine (none runs in CI): the native rendering the interop suite
// uses, what docker-compose.yml and the Dockerfile refer to, and the values that must agree across files.

const places: NativePlaces = {
  nginxPort: 41001,
  proxyPort: 41002,
  proxyFacingPort: 41003,
  proxyMetricsPort: 41004,
  synapsePort: 41005,
  postgresPort: 41006,
  redisPort: 41007,
  keycloakPort: 41008,
  synapseDataDir: '/tmp/mcp-deploy-test/synapse-data',
  synapseConfigDir: '/tmp/mcp-deploy-test/synapse-config',
  nginxLogDir: '/tmp/mcp-deploy-test/nginx-logs',
};
const compose = readCompose();
const repoFile = (path: string) => readFileSync(join(REPO_ROOT, path), 'utf8');

describe('native rendering of the compose files', () => {
  for (const file of Object.keys(DEPLOY_FILES) as DeployFile[]) {
    test(`${DEPLOY_FILES[file]}: every rule matches and no container-only address is left`, () => {
      const rendered = renderDeployFile(file, places, compose);
      for (const port of [places.nginxPort, places.proxyPort, places.synapsePort]) {
        if (rendered.includes(`:${port}`)) assert.match(rendered, new RegExp(`127\\.0\\.0\\.1:${port}`));
      }
    });
  }

  test('a rule that matches nothing fails (a deploy file changed under it)', () => {
    assert.throws(() => renderForNative('x.yaml', 'url: http://synapse:8008\n', [['http://synapse:8009', 'http://127.0.0.1:1']]), /match nothing.*synapse:8009/);
  });

  test('a container-only address left over fails (a new reference needs a rule)', () => {
    assert.throws(() => renderForNative('x.yaml', 'a: http://redis:6379\nb: http://synapse:8008\n', [['http://synapse:8008', 'http://127.0.0.1:1']]), /left after rewriting.*redis:/);
    assert.throws(() => renderForNative('x.conf', 'listen 8080;\n', []), /listen 8080/);
    assert.throws(() => renderForNative('x.yaml', 'path: /data/media\n', []), /\/data\//);
    // Comments may name compose hosts to explain them.
    assert.equal(renderForNative('x.yaml', '# containers call keycloak:8080 and http://proxy:8010/\na: 1\n', []), '# containers call keycloak:8080 and http://proxy:8010/\na: 1\n');
  });

  test('replacements are applied once, longest first (a replaced value is not rewritten again)', () => {
    const out = renderForNative('x.yaml', 'a: /data/x\nb: /config/y\n', [
      ['/data/', '/tmp/config/'],
      ['/config/', '/tmp/c/'],
    ]);
    assert.equal(out, 'a: /tmp/config/x\nb: /tmp/c/y\n');
  });

  test('the rendered proxy configuration is valid (secrets read from the files docker-compose.yml mounts)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mcp-deploy-config-'));
    try {
      const path = join(dir, 'config.yaml');
      await writeFile(path, renderDeployFile('proxy', places, compose));
      const config = loadConfig(path, {});
      assert.equal(config.public_baseurl, `http://127.0.0.1:${places.nginxPort}/`);
      assert.equal(config.homeserver.secret, repoFile('deploy/compose/secrets/homeserver-secret').trim());
      assert.deepEqual(config.trusted_proxies, ['127.0.0.1/32']);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('docker-compose.yml', () => {
  const services = compose['services'] as Record<string, Record<string, any>>;

  test('every bind-mounted file or folder and every secret file exists', () => {
    for (const [name, service] of Object.entries(services)) {
      for (const volume of (service['volumes'] ?? []) as string[]) {
        for (const layout of ['full-proxy', 'auth-routes-only']) {
          const source = volume.replace('${NGINX_LAYOUT:-full-proxy}', layout).split(':')[0] ?? '';
          if (!source.startsWith('.')) continue; // a named volume
          assert.ok(existsSync(join(REPO_ROOT, source)), `${name}: ${source} does not exist`);
        }
      }
    }
    for (const [from, to] of secretRewrites(compose)) assert.ok(existsSync(to), `${from}: ${to} does not exist`);
  });

  test('the proxy config is mounted where the image reads it, and the image is built from this Dockerfile', () => {
    const proxy = services['proxy'] as Record<string, any>;
    assert.equal(proxy['build'], '.');
    assert.ok((proxy['volumes'] as string[]).includes(`./${DEPLOY_FILES.proxy}:/etc/matrix-compat-proxy/config.yaml:ro`));
    const cmd = parseDockerfile(repoFile('Dockerfile')).stages.at(-1)?.cmd;
    assert.deepEqual(cmd, ['--config', '/etc/matrix-compat-proxy/config.yaml']);
  });

  test('images are the versions the interop suite installs and tests', () => {
    const synapseVersion = /SYNAPSE_VERSION:-([\d.]+)/.exec(repoFile('scripts/install-synapse.sh'))?.[1];
    const keycloakVersion = /KEYCLOAK_VERSION:-([\d.]+)/.exec(repoFile('scripts/install-keycloak.sh'))?.[1];
    assert.equal(services['synapse']?.['image'], `ghcr.io/element-hq/synapse:v${synapseVersion}`);
    assert.equal(services['synapse-keys']?.['image'], `ghcr.io/element-hq/synapse:v${synapseVersion}`);
    assert.equal(services['keycloak']?.['image'], `quay.io/keycloak/keycloak:${keycloakVersion}`);
  });

  test('values two services must share agree: client secret, database password, nginx address', () => {
    const realm = JSON.parse(deployText('realm')) as { clients: { clientId: string; secret: string }[] };
    assert.equal(realm.clients.find((client) => client.clientId === 'matrix-compat-proxy')?.secret, repoFile('deploy/compose/secrets/keycloak-client-secret').trim());
    assert.match(deployText('homeserver'), new RegExp(`password: ${services['postgres']?.['environment']?.['POSTGRES_PASSWORD']}\\n`));
    assert.match(deployText('proxy'), new RegExp(`trusted_proxies: \\[${services['nginx']?.['networks']?.['matrix']?.['ipv4_address']}/32\\]`));
  });
});

describe('Dockerfile', () => {
  const dockerfile = parseDockerfile(repoFile('Dockerfile'));
  const ignore = repoFile('.dockerignore');

  test('multi-stage: the runtime stage takes only dist/ from the build stage and installs production dependencies only', () => {
    assert.deepEqual(
      dockerfile.stages.map((stage) => stage.name),
      ['build', 'runtime'],
    );
    const runtime = dockerfile.stages[1];
    assert.ok(runtime);
    assert.deepEqual(
      runtime.copies.filter((copy) => copy.from !== undefined).map((copy) => [copy.from, copy.sources]),
      [['build', ['/app/dist']]],
    );
    assert.ok(runtime.runs.some((run) => /npm ci --omit=dev/.test(run)), runtime.runs.join('\n'));
  });

  test('every COPY source exists in the build context and is not excluded by .dockerignore', () => {
    for (const stage of dockerfile.stages) {
      for (const copy of stage.copies.filter((c) => c.from === undefined)) {
        for (const source of copy.sources) {
          assert.ok(existsSync(join(REPO_ROOT, source)), `${stage.name}: COPY ${source}: no such file`);
          assert.equal(dockerignoreExcludes(ignore, source), false, `${stage.name}: COPY ${source} is excluded by .dockerignore`);
        }
      }
    }
    // And the context does not carry what must never be in an image.
    for (const path of ['node_modules/koa/package.json', 'dist/main.js', 'deploy/compose/secrets/homeserver-secret', 'test/unit/config.test.ts', '.env']) {
      assert.equal(dockerignoreExcludes(ignore, path), true, `${path} would be sent to the build`);
    }
  });

  test('runs as a non-root user, with a HEALTHCHECK on /health and the config under /etc/matrix-compat-proxy', () => {
    const runtime = dockerfile.stages.at(-1);
    assert.ok(runtime?.user !== undefined && runtime.user !== 'root' && runtime.user !== '0', `USER ${runtime?.user}`);
    assert.ok(runtime.healthcheck?.some((arg) => arg.includes('HEALTHCHECK_URL')));
    assert.equal(runtime.env['HEALTHCHECK_URL'], 'http://127.0.0.1:8009/health');
    assert.deepEqual(runtime.entrypoint, ['node', 'bin/matrix-compat-proxy.js']);
  });
});

describe('Grafana dashboard (deploy/grafana)', () => {
  test('valid JSON whose every query names a metric the proxy exports', async () => {
    const { createMetrics } = await import('../../src/observability/metrics.js');
    const exported = new Set((await createMetrics().registry.getMetricsAsJSON()).map((metric) => metric.name));
    const dashboard = JSON.parse(repoFile('deploy/grafana/matrix-compat-proxy-dashboard.json')) as { panels: { title: string; targets: { expr: string }[] }[] };
    assert.ok(dashboard.panels.length > 0);
    for (const panel of dashboard.panels) {
      for (const { expr } of panel.targets) {
        const names = [...expr.matchAll(/\bmcp_[a-z0-9_]+/g)].map((match) => match[0].replace(/_(bucket|sum|count)$/, ''));
        assert.ok(names.length > 0, `${panel.title}: no metric in ${expr}`);
        for (const name of names) assert.ok(exported.has(name), `${panel.title}: ${name} is not a metric of the proxy`);
      }
    }
  });
});

describe('the runtime stage’s dependencies', () => {
  test('every package src/ imports at run time is a production dependency (the image installs only those)', async () => {
    const { readdirSync } = await import('node:fs');
    const pkg = JSON.parse(repoFile('package.json')) as { dependencies: Record<string, string> };
    const files = (readdirSync(join(REPO_ROOT, 'src'), { recursive: true }) as string[]).filter((file) => file.endsWith('.ts'));
    const imported = new Set<string>();
    for (const file of files) {
      const text = repoFile(join('src', file));
      // `import type` is erased by the compiler; only value imports need the package at run time.
      for (const match of text.matchAll(/^import\s+(?!type\s)[^'"]*?from\s+'([^'.][^']*)'|^import\s+'([^'.][^']*)'|\bimport\(\s*'([^'.][^']*)'\s*\)/gm)) {
        const specifier = match[1] ?? match[2] ?? match[3] ?? '';
        if (specifier.startsWith('node:')) continue;
        imported.add(specifier.startsWith('@') ? specifier.split('/').slice(0, 2).join('/') : (specifier.split('/')[0] ?? specifier));
      }
    }
    assert.ok(imported.has('koa') && imported.has('ioredis') && imported.has('@koa/router'), `the scan found: ${[...imported].join(', ')}`);
    for (const name of imported) assert.ok(name in pkg.dependencies, `src/ imports ${name}, which is not in "dependencies" (npm ci --omit=dev leaves it out of the image)`);
  });
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The layering of docs/architecture.md, checked on the import graph: faces → kit → model → adapters → ground.
 * A file may import its own layer or a lower one, never a higher one (a model module that needs something from a
 * face gets it passed in through its own narrow deps interface).
 */
const SRC = resolve(dirname(fileURLToPath(import.meta.url)), '../../src');

const LAYERS: readonly (readonly string[])[] = [
  /* 0 ground   */ ['config', 'pages', 'observability', 'outbound', 'clock.ts'],
  /* 1 adapters */ ['store', 'oidc', 'provisioning'],
  /* 2 model    */ ['sessions', 'identity', 'security'],
  /* 3 kit      */ ['http', 'errors'],
  /* 4 the faces' dependencies */ ['app-deps.ts'],
  /* 5 faces    */ ['compat', 'backchannel', 'homeserver', 'admin', 'proxy', 'ops', 'doctor', 'account', 'oauth', 'migrate'],
  /* 6 entry    */ ['main.ts', 'cluster.ts', 'cluster-messages.ts', 'server.ts', 'app.ts', 'routes.ts', 'build-deps.ts'],
];
const LAYER_NAMES = ['ground', 'adapters', 'model', 'kit', "the faces' dependencies", 'faces', 'entry'];

function layerOf(file: string): number {
  const top = relative(SRC, file).split('/')[0] ?? '';
  const index = LAYERS.findIndex((names) => names.includes(top));
  if (index < 0) throw new Error(`src/${relative(SRC, file)}: its folder "${top}" has no layer; add it to docs/architecture.md and to this test`);
  return index;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sourceFiles(path);
    return name.endsWith('.ts') ? [path] : [];
  });
}

test('imports point down only: no file imports a higher layer', () => {
  const violations: string[] = [];
  const files = sourceFiles(SRC);
  assert.ok(files.length > 50);
  for (const file of files) {
    const text = readFileSync(file, 'utf8');
    for (const match of text.matchAll(/(?:from|import)\s*\(?\s*'(\.{1,2}\/[^']+)\.js'/g)) {
      const target = resolve(dirname(file), `${match[1] ?? ''}.ts`);
      const from = layerOf(file);
      const to = layerOf(target);
      if (to > from) violations.push(`src/${relative(SRC, file)} (${LAYER_NAMES[from]}) imports src/${relative(SRC, target)} (${LAYER_NAMES[to]})`);
    }
  }
  assert.deepEqual(violations, []);
});

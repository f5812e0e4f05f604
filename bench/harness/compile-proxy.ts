import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import ts from 'typescript';
import { REPO_ROOT, RESULTS_DIR } from './child-processes.js';

// Per process: a smoke run may build while a full run is using its copy.
export const BUILD_DIR = join(RESULTS_DIR, `.build-${process.pid}`);
const PROXY_ENTRY_SOURCES = ['bench/proxy-process.ts', 'bench/harness/proxy-protocol.ts'];

let built: string | undefined;

/**
 * The proxy process as plain JavaScript, transpiled by TypeScript like `npm run build` does, so that it runs
 * without tsx: tsx's module-hook thread adds about 30 MB of RSS and start-up work that production does not have,
 * and the RSS targets are about the proxy. Written under bench/results/.build-<pid> (inside the repository, so that
 * node_modules resolves). Returns the path of the entry script.
 */
export function compiledProxyProcess(): string {
  if (built !== undefined) return built;
  process.once('exit', () => rmSync(BUILD_DIR, { recursive: true, force: true }));
  built = compileProxyTree(REPO_ROOT, BUILD_DIR);
  return built;
}

/**
 * Transpiles the proxy sources under `sourceRoot` (src/ and the bench's proxy-process entry) into `buildDir`, which
 * must lie inside this repository so that node_modules resolves. Returns the path of the entry script.
 * bench/compare-cpu.ts uses it for a baseline tree (a git ref exported elsewhere).
 */
export function compileProxyTree(sourceRoot: string, buildDir: string, buildConfig: string = readFileSync(join(REPO_ROOT, 'tsconfig.build.json'), 'utf8')): string {
  const sources = [...listTypeScript(join(sourceRoot, 'src')), ...PROXY_ENTRY_SOURCES.map((path) => join(sourceRoot, path))];
  // Whether the tree's `npm run build` strips comments (V8 keeps every module's source text while the process lives).
  const removeComments = (ts.parseConfigFileTextToJson('tsconfig.build.json', buildConfig).config as { compilerOptions?: { removeComments?: boolean } } | undefined)?.compilerOptions?.removeComments === true;
  for (const source of sources) {
    const target = join(buildDir, relative(sourceRoot, source)).replace(/\.ts$/, '.js');
    mkdirSync(dirname(target), { recursive: true });
    writeFileSync(target, transpile(source, { removeComments }));
  }
  return join(buildDir, 'bench', 'proxy-process.js');
}

/**
 * The proxy of another git ref, for the scripts that measure this tree against it (compare-cpu, compare-login,
 * introspection-tail, memory-probe): the ref's src/ (git archive) and its proxy-process entry — or this tree's entry
 * with `thisEntry`, when the measuring protocol is newer than the ref — transpiled like this tree's under
 * bench/results/.<name>-*-<pid>, removed when the process exits. Returns the entry script and the ref's short commit.
 */
export function compileProxyAt(ref: string, name: string, options: { readonly thisEntry?: boolean } = {}): { entry: string; commit: string } {
  const sources = join(RESULTS_DIR, `.${name}-src-${process.pid}`);
  const build = join(RESULTS_DIR, `.${name}-build-${process.pid}`);
  process.once('exit', () => {
    rmSync(sources, { recursive: true, force: true });
    rmSync(build, { recursive: true, force: true });
  });
  mkdirSync(sources, { recursive: true });
  const paths = options.thisEntry === true ? ['src'] : ['src', ...PROXY_ENTRY_SOURCES];
  execFileSync('tar', ['-x', '-C', sources], { input: execFileSync('git', ['archive', ref, ...paths], { cwd: REPO_ROOT, maxBuffer: 1 << 28 }) });
  if (options.thisEntry === true) for (const path of PROXY_ENTRY_SOURCES) cpSync(join(REPO_ROOT, path), join(sources, path));
  const commit = execFileSync('git', ['rev-parse', '--short', ref], { cwd: REPO_ROOT, encoding: 'utf8' }).trim();
  let buildConfig = '{}';
  try {
    buildConfig = execFileSync('git', ['show', `${ref}:tsconfig.build.json`], { cwd: REPO_ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    // A ref from before tsconfig.build.json: built with tsc's defaults, comments kept.
  }
  return { entry: compileProxyTree(sources, build, buildConfig), commit };
}

let probe: string | undefined;

/**
 * harness/tail-probe.ts as plain JavaScript, for `node --import` into a proxy of any tree (it imports nothing from
 * src/): bench/introspection-tail.ts preloads it into the proxies it compares. Returns the path of the script.
 */
export function compiledTailProbe(): string {
  if (probe !== undefined) return probe;
  compiledProxyProcess();
  const source = join(REPO_ROOT, 'bench', 'harness', 'tail-probe.ts');
  probe = join(BUILD_DIR, 'tail-probe.js');
  writeFileSync(probe, transpile(source));
  return probe;
}

/**
 * bench/baseline-proxy-process.ts as plain JavaScript next to the proxy's (same BUILD_DIR, same transpilation): the
 * pass-through baselines run the way the proxy runs. It imports nothing of src/.
 */
export function compiledBaselineProcess(): string {
  const source = join(REPO_ROOT, 'bench', 'baseline-proxy-process.ts');
  const target = join(BUILD_DIR, 'bench', 'baseline-proxy-process.js');
  compiledProxyProcess();
  writeFileSync(target, transpile(source));
  return target;
}

function transpile(source: string, options: { readonly removeComments?: boolean } = {}): string {
  return ts.transpileModule(readFileSync(source, 'utf8'), {
    fileName: source,
    compilerOptions: {
      target: ts.ScriptTarget.ES2023,
      module: ts.ModuleKind.ESNext,
      verbatimModuleSyntax: true,
      sourceMap: false,
      removeComments: options.removeComments === true,
    },
  }).outputText;
}

function listTypeScript(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return listTypeScript(path);
    return entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts') ? [path] : [];
  });
}

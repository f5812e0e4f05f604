import { Worker } from 'node:worker_threads';
import { ConfigError } from './config-error.js';
import { deepFreeze } from './deep-freeze.js';
import type { ParseOptions } from './load-config.js';
import type { Config } from './schema.js';

/**
 * loadConfig and parseConfig (load-config.ts) run in a worker thread, for a process that goes on to serve: the same
 * checks, the same Config (deep-frozen again on this side), the same ConfigError lines.
 *
 * Why: the validation layer is needed once, at start-up, but what a module loads stays loaded for the life of its
 * isolate (ECMAScript has no unloading). zod and the schema built from it at load time hold about 5 MB of V8's old
 * space, the YAML parser another 1 MB, a third of what an idle proxy keeps alive; and their start-up allocations grow
 * the young generation early. A worker's isolate, and everything it loaded, is discarded when the worker ends
 * (bench/README.md, "Idle RSS").
 */
export function loadConfigInThread(path: string, env: NodeJS.ProcessEnv = process.env): Promise<Config> {
  return inThread({ call: 'loadConfig', args: [path, { ...env }] });
}

/** parseConfig in a worker thread (see loadConfigInThread). */
export function parseConfigInThread(yamlText: string, options: ParseOptions = {}): Promise<Config> {
  // This process's variables by default, as parseConfig's: the thread's own lack NODE_OPTIONS (see inThread).
  return inThread({ call: 'parseConfig', args: [yamlText, { ...options, env: { ...(options.env ?? process.env) } }] });
}

type Request = { readonly call: 'loadConfig' | 'parseConfig'; readonly args: readonly unknown[] };
type Reply = { readonly config: Config } | { readonly problems: readonly string[] } | { readonly error: unknown };

/**
 * The worker's script (evaluated as CommonJS): imports the loader, this folder's load-config, and posts one reply.
 * Run from source (tests, the dev stack: this file is then config-thread.ts), TypeScript is loaded through tsx, whose
 * module hooks a worker does not inherit from its parent: the worker registers them itself first.
 */
const WORKER_SCRIPT = `
const { parentPort, workerData } = require('node:worker_threads');
(async () => {
  if (workerData.tsx !== undefined) (await import(workerData.tsx)).register();
  const loader = await import(workerData.loader);
  try {
    parentPort.postMessage({ config: loader[workerData.call](...workerData.args) });
  } catch (err) {
    parentPort.postMessage(err instanceof loader.ConfigError ? { problems: [...err.problems] } : { error: err });
  }
})();
`;

function inThread(request: Request): Promise<Config> {
  const fromSource = import.meta.url.endsWith('.ts');
  const loader = new URL(fromSource ? './load-config.ts' : './load-config.js', import.meta.url).href;
  const tsx = fromSource ? import.meta.resolve('tsx/esm/api') : undefined;
  return new Promise<Config>((resolve, reject) => {
    let reply: Reply | undefined;
    // Not the parent's node options: a worker refuses V8's (`node --heap-growing-percent=50`, docs/production.md,
    // would stop the start with ERR_WORKER_INVALID_EXEC_ARGV), and the loader needs none (from source, it registers
    // tsx itself). A worker keeps a parent's --cpu-prof or --heap-prof even so, and would write a profile of its own
    // next to the process's: turned off here.
    // Nor NODE_OPTIONS: a worker given the parent's environment applies its options again, and a `--require` there (how
    // APM agents are attached, where the command line is the image's) would load the module a second time, in this
    // thread, whose timers or sockets would keep it from ever ending: the start would wait for it forever. The
    // loader reads no variable of its own: they are passed in `args`.
    const { NODE_OPTIONS: _, ...env } = process.env;
    const worker = new Worker(WORKER_SCRIPT, { eval: true, env, workerData: { loader, tsx, ...request }, execArgv: ['--no-cpu-prof', '--no-heap-prof'] });
    worker.once('message', (message: Reply) => {
      reply = message;
      // Its one answer given, the thread has nothing left to do: ended now, whatever it still holds.
      void worker.terminate();
    });
    worker.once('error', reject);
    // Settled once the worker has ended: its isolate is gone (and its memory returned) before the proxy starts.
    worker.once('exit', (code) => {
      if (reply === undefined) reject(new Error(`the configuration loader's thread ended (code ${code}) without an answer`));
      else if ('config' in reply) resolve(deepFreeze(reply.config));
      else if ('problems' in reply) reject(new ConfigError(reply.problems));
      else reject(reply.error);
    });
  });
}

import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const RESULTS_DIR = join(REPO_ROOT, 'bench', 'results');

const running = new Set<ChildProcess>();

// An interrupted benchmark must not leave proxies, load generators or nginx behind.
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => process.exit(130));
}

/** Remembers a child so that it is killed if this process exits first. */
export function track(child: ChildProcess): ChildProcess {
  running.add(child);
  child.once('exit', () => running.delete(child));
  return child;
}

export interface NodeChildOptions {
  /** 'tsx' loads TypeScript through tsx; 'none' runs plain JavaScript. Default tsx. */
  readonly loader?: 'tsx' | 'none';
  /** Extra node flags, e.g. --cpu-prof. */
  readonly nodeFlags?: readonly string[];
  readonly env?: Readonly<Record<string, string>>;
  /** Lines on stdout and stderr that are not the ready line go to bench/results/logs/<logName>.log. */
  readonly logName: string;
  /** Resolves once a stdout line passes this test (or the child sends an IPC message with `ready`). */
  readonly readyLine?: (line: string) => boolean;
  readonly startupTimeoutMs?: number;
}

export interface NodeChild {
  readonly child: ChildProcess;
  /** The ready line (or '' when readiness came over IPC). */
  readonly readyText: string;
  /** Resolves with the exit code once the child is gone. */
  readonly exited: Promise<number | null>;
}

/** Starts `node [--import tsx] <script>` from the repository root with an IPC channel, and waits until it is ready. */
export async function startNodeChild(script: string, options: NodeChildOptions): Promise<NodeChild> {
  const logs = join(RESULTS_DIR, 'logs');
  mkdirSync(logs, { recursive: true });
  const log = createWriteStream(join(logs, `${options.logName}.log`));
  const child = track(
    spawn(process.execPath, [...(options.nodeFlags ?? []), ...(options.loader === 'none' ? [] : ['--import', 'tsx']), script], {
      cwd: REPO_ROOT,
      env: { ...process.env, ...options.env },
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    }),
  );
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  void exited.then(() => log.end());
  child.stderr?.pipe(log, { end: false });

  const readyText = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${script} did not become ready in time (see ${options.logName}.log)`)), options.startupTimeoutMs ?? 30_000);
    const done = (text: string) => {
      clearTimeout(timer);
      resolve(text);
    };
    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      if (options.readyLine?.(line) === true) done(line);
      else log.write(`${line}\n`);
    });
    child.on('message', (message: { ready?: boolean }) => {
      if (message.ready === true) done('');
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`${script} exited with ${code} before it was ready (see bench/results/logs/${options.logName}.log)`));
    });
  });
  return { child, readyText, exited };
}

/** Request/response over a child's IPC channel, matched by id. */
export class IpcChannel<Request extends object, Reply> {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (reply: Reply) => void; reject: (error: Error) => void }>();

  constructor(private readonly child: ChildProcess) {
    child.on('message', (message: { id?: number; error?: string }) => {
      if (message.id === undefined) return;
      const waiter = this.pending.get(message.id);
      if (waiter === undefined) return;
      this.pending.delete(message.id);
      if (message.error !== undefined) waiter.reject(new Error(message.error));
      else waiter.resolve(message as Reply);
    });
    child.once('exit', (code) => {
      for (const waiter of this.pending.values()) waiter.reject(new Error(`child exited (${code}) with a request pending`));
      this.pending.clear();
    });
  }

  request(body: Request): Promise<Reply> {
    const id = this.nextId++;
    return new Promise<Reply>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.child.send({ id, ...body }, (error) => {
        if (error !== null) {
          this.pending.delete(id);
          reject(error);
        }
      });
    });
  }
}

import { spawn, type ChildProcess } from 'node:child_process';

/**
 * A real OP (or its companion) as a child process of the test run: its own process group, output kept for failure
 * messages, stopped with SIGTERM then SIGKILL, and killed when the test process exits however it exits.
 */
export interface OpProcess {
  readonly child: ChildProcess;
  logs(): string;
  /** Resolves when `url` answers 2xx; rejects with the last log lines when the process exits first or time runs out. */
  waitForUrl(url: string, timeoutMs: number): Promise<void>;
  stop(): Promise<void>;
}

const LOG_LIMIT = 512 * 1024;
const STOP_GRACE_MS = 5_000;
const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) killGroup(child, 'SIGKILL');
});

export function startOpProcess(name: string, command: string, args: readonly string[], env: Readonly<Record<string, string>> = {}): OpProcess {
  const child = spawn(command, [...args], { stdio: ['ignore', 'pipe', 'pipe'], detached: true, env: { ...process.env, ...env } });
  running.add(child);
  let output = '';
  const collect = (chunk: Buffer) => {
    output += chunk.toString();
    if (output.length > LOG_LIMIT) output = output.slice(-LOG_LIMIT);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const tail = () => output.split('\n').slice(-30).join('\n');

  return {
    child,
    logs: () => output,
    async waitForUrl(url, timeoutMs) {
      const deadline = performance.now() + timeoutMs;
      let done = false;
      const early = exited.then((code) => {
        if (!done) throw new Error(`${name} exited with code ${code} before ${url} answered; last log lines:\n${tail()}`);
      });
      const poll = (async () => {
        for (;;) {
          try {
            const response = await fetch(url, { signal: AbortSignal.timeout(2_000) });
            await response.body?.cancel();
            if (response.ok) return;
          } catch {
            // not listening yet
          }
          if (performance.now() > deadline) throw new Error(`${name} did not serve ${url} within ${timeoutMs} ms; last log lines:\n${tail()}`);
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      })();
      try {
        await Promise.race([poll, early]);
      } finally {
        done = true;
      }
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        killGroup(child, 'SIGTERM');
        const timer = setTimeout(() => killGroup(child, 'SIGKILL'), STOP_GRACE_MS);
        await exited;
        clearTimeout(timer);
      }
      running.delete(child);
    },
  };
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // already gone
  }
}

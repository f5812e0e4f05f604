import { execFileSync } from 'node:child_process';
import { availableParallelism } from 'node:os';

/** The CPUs this process may use, read before any pinning (availableParallelism follows the affinity mask). */
const ALL_CPUS = availableParallelism();

/**
 * `BENCH_PROXY_CPUS=0` (a taskset CPU list: `0`, `0,1`, `2-3`): every proxy process the bench starts (all its
 * threads, cluster workers too) runs on those CPUs only, and this process — with everything it starts after this
 * call: load generator, Redis, nginx, the upstream, OP and homeserver double it serves — on the others. It measures
 * "one worker on a core of its own" on a small machine, where otherwise the proxy shares its cores with the load
 * that measures it. Unset: nothing is pinned.
 */
export function proxyCpus(): readonly number[] | undefined {
  const raw = process.env['BENCH_PROXY_CPUS'];
  if (raw === undefined || raw === '') return undefined;
  const cpus = new Set<number>();
  for (const part of raw.split(',')) {
    const match = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (match === null) throw new Error(`BENCH_PROXY_CPUS: "${part}" is not a CPU number or range`);
    const first = Number(match[1]);
    const last = match[2] === undefined ? first : Number(match[2]);
    for (let cpu = first; cpu <= last; cpu++) cpus.add(cpu);
  }
  const all = ALL_CPUS;
  if ([...cpus].some((cpu) => cpu >= all) || cpus.size === 0 || cpus.size >= all) {
    throw new Error(`BENCH_PROXY_CPUS=${raw}: name at least one and fewer than all of the ${all} CPUs`);
  }
  return [...cpus].sort((a, b) => a - b);
}

let orchestratorPinned = false;

/** Pins this process (and so what it starts from now on) to the CPUs the proxies do not get; once. */
export function pinOrchestrator(): string | undefined {
  const cpus = proxyCpus();
  if (cpus === undefined) return undefined;
  const others = Array.from({ length: ALL_CPUS }, (_, cpu) => cpu).filter((cpu) => !cpus.includes(cpu));
  if (!orchestratorPinned) {
    execFileSync('taskset', ['-a', '-p', '-c', others.join(','), String(process.pid)], { stdio: 'ignore' });
    orchestratorPinned = true;
  }
  return `proxies pinned to CPU ${cpus.join(',')}, everything else to CPU ${others.join(',')} (BENCH_PROXY_CPUS)`;
}

/** Pins a started proxy's processes (all threads) to BENCH_PROXY_CPUS. */
export function pinProxy(pids: readonly number[]): void {
  const cpus = proxyCpus();
  if (cpus === undefined) return;
  for (const pid of pids) execFileSync('taskset', ['-a', '-p', '-c', cpus.join(','), String(pid)], { stdio: 'ignore' });
}

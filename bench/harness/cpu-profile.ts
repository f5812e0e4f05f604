import { readFileSync } from 'node:fs';

/** The parts of V8's .cpuprofile (written by `node --cpu-prof`) that a summary needs. */
interface CpuProfile {
  readonly startTime: number;
  readonly nodes: readonly { readonly id: number; readonly callFrame: CallFrame; readonly children?: readonly number[] }[];
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

interface CallFrame {
  readonly functionName: string;
  readonly url: string;
  readonly lineNumber: number;
}

export interface ProfileFrame {
  /** `function (file:line)`, file relative to the repository or to node_modules. */
  readonly frame: string;
  /** Share of the busy (non-idle) samples. */
  readonly selfPercent: number;
  readonly totalPercent: number;
}

export interface ProfileSummary {
  readonly busyMs: number;
  readonly idlePercent: number;
  /** Self time by origin: a package, node internals, the proxy's own code (src/...), GC, native. */
  readonly byOrigin: readonly { readonly origin: string; readonly selfPercent: number }[];
  readonly topSelf: readonly ProfileFrame[];
  /** Functions of the proxy's own code (src/) by inclusive time: what the hot path spends under each. */
  readonly topOwnInclusive: readonly ProfileFrame[];
}

export interface SummaryOptions {
  /** Path prefixes to strip from file names (the compiled copy of the proxy first, then the repository). */
  readonly roots: readonly string[];
  /** Only samples taken in this window (µs on the profiler's monotonic clock): the load, not start-up. */
  readonly window?: { readonly fromMicros: number; readonly toMicros: number };
  readonly top?: number;
}

/** Self and inclusive time per function, aggregated over all call sites. */
export function summariseProfile(path: string, options: SummaryOptions): ProfileSummary {
  const { roots, window } = options;
  const top = options.top ?? 15;
  const profile = JSON.parse(readFileSync(path, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);

  const selfByNode = new Map<number, number>();
  let timestamp = profile.startTime;
  profile.samples.forEach((nodeId, index) => {
    const delta = profile.timeDeltas[index] ?? 0;
    timestamp += delta;
    if (window !== undefined && (timestamp < window.fromMicros || timestamp > window.toMicros)) return;
    selfByNode.set(nodeId, (selfByNode.get(nodeId) ?? 0) + delta);
  });

  const keyOf = (frame: CallFrame) => `${frame.functionName || '(anonymous)'} (${shortUrl(frame.url, roots)}${frame.url === '' ? '' : `:${frame.lineNumber + 1}`})`;
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  const origin = new Map<string, number>();
  let idle = 0;
  let busy = 0;
  for (const [nodeId, micros] of selfByNode) {
    const node = byId.get(nodeId);
    if (node === undefined) continue;
    if (node.callFrame.functionName === '(idle)') {
      idle += micros;
      continue;
    }
    busy += micros;
    const key = keyOf(node.callFrame);
    self.set(key, (self.get(key) ?? 0) + micros);
    const place = originOf(node.callFrame, roots);
    origin.set(place, (origin.get(place) ?? 0) + micros);
    // Inclusive: every distinct function on the stack gets the sample once (recursion counted once).
    const seen = new Set<string>();
    for (let current: number | undefined = nodeId; current !== undefined; current = parent.get(current)) {
      const frame = byId.get(current)?.callFrame;
      if (frame === undefined) break;
      const frameKey = keyOf(frame);
      if (seen.has(frameKey)) continue;
      seen.add(frameKey);
      total.set(frameKey, (total.get(frameKey) ?? 0) + micros);
    }
  }

  const percent = (micros: number) => Math.round((micros / Math.max(1, busy)) * 1000) / 10;
  const frameOf = (key: string): ProfileFrame => ({ frame: key, selfPercent: percent(self.get(key) ?? 0), totalPercent: percent(total.get(key) ?? 0) });
  return {
    busyMs: Math.round(busy / 1000),
    idlePercent: Math.round((idle / Math.max(1, idle + busy)) * 1000) / 10,
    byOrigin: [...origin].sort((a, b) => b[1] - a[1]).map(([place, micros]) => ({ origin: place, selfPercent: percent(micros) })),
    topSelf: [...self.keys()].sort((a, b) => (self.get(b) ?? 0) - (self.get(a) ?? 0)).slice(0, top).map(frameOf),
    topOwnInclusive: [...total.keys()]
      .filter((key) => key.includes('(src/'))
      .sort((a, b) => (total.get(b) ?? 0) - (total.get(a) ?? 0))
      .slice(0, top)
      .map(frameOf),
  };
}

function shortUrl(url: string, roots: readonly string[]): string {
  const path = url.startsWith('file://') ? decodeURIComponent(new URL(url).pathname) : url;
  const modules = path.lastIndexOf('/node_modules/');
  if (modules >= 0) return path.slice(modules + '/node_modules/'.length);
  for (const root of roots) {
    const prefix = root.endsWith('/') ? root : `${root}/`;
    if (path.startsWith(prefix)) return path.slice(prefix.length);
  }
  return path;
}

function originOf(frame: CallFrame, roots: readonly string[]): string {
  const { functionName, url } = frame;
  if (url === '') {
    if (functionName === '(garbage collector)') return 'GC';
    if (functionName === '(program)') return 'V8/native (program)';
    return `native: ${functionName || '(anonymous)'}`;
  }
  if (url.startsWith('node:')) return 'node core';
  const short = shortUrl(url, roots);
  if (url.includes('/node_modules/')) {
    const parts = short.split('/');
    return parts[0]?.startsWith('@') === true ? `${parts[0]}/${parts[1]}` : (parts[0] ?? short);
  }
  if (short.startsWith('src/')) return `src/${short.split('/')[1] ?? ''}`;
  return short;
}

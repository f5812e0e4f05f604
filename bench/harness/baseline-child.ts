import { compiledBaselineProcess } from './compile-proxy.js';
import { ProxyChild } from './proxy-child.js';

/** node: http.request + pipe; http-proxy: http-proxy's web() (bench/baseline-proxy-process.ts). */
export type BaselineKind = 'node' | 'http-proxy';

/**
 * A minimal reverse proxy in a process of its own, in front of `upstreamUrl`, started exactly like the proxy
 * (transpiled JavaScript, the same node flags: BENCH_CPU_PROFILE_DIR profiles it too, BENCH_PROXY_CPUS pins it), so
 * that its CPU per request and its req/s compare with the proxy's. It answers `clock` and `stop` only.
 */
export function startBaselineProxy(kind: BaselineKind, upstreamUrl: string, options: { readonly name?: string; readonly cpuProfileDir?: string } = {}): Promise<ProxyChild> {
  return ProxyChild.start({
    name: options.name ?? `baseline-${kind}`,
    config: {},
    entry: compiledBaselineProcess(),
    env: { MCP_BENCH_BASELINE: JSON.stringify({ kind, target: upstreamUrl }) },
    ...(options.cpuProfileDir === undefined ? {} : { cpuProfileDir: options.cpuProfileDir }),
  });
}

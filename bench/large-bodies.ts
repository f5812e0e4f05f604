import { isEntryPoint, progress, runStandalone, type BenchEnvironment } from './harness/bench-environment.js';
import { ProxyChild } from './harness/proxy-child.js';
import { proxyConfig } from './harness/proxy-config.js';
import { atLeast, atMost, ratioRow, type ResultRow, type ScenarioResult } from './harness/report.js';
import { RoundFigures, rotated } from './harness/rounds.js';

/**
 * Issue 8, scenario 2: one 100 MB download and one 100 MB upload (media), directly, through the proxy, and through
 * Debian's nginx with its default buffering (what admins run; it shows what this machine allows a proxy). The proxy
 * must stream: its throughput stays near the direct one and its RSS barely moves while the body passes.
 */

type Target = 'direct' | 'nginx' | 'proxy';
const TARGETS: readonly Target[] = ['direct', 'nginx', 'proxy'];
const MIB = 1024 * 1024;
const MB = 1e6;

export async function largeBodies(env: BenchEnvironment): Promise<ScenarioResult> {
  const settings = env.settings;
  const bytes = settings.largeBodyBytes;
  const upstream = await env.upstream();
  const load = await env.loadGenerator();
  const nginx = await env.nginx();
  const proxy = await ProxyChild.start({ name: 'large-bodies', config: proxyConfig({ homeserverUrl: upstream.url }) });
  const base: Record<Target, string> = { direct: upstream.url, nginx: nginx.url, proxy: proxy.clientUrl };
  const url = (target: Target, direction: 'upload' | 'download') =>
    direction === 'download' ? `${base[target]}/_upstream/download?bytes=${bytes}` : `${base[target]}/_matrix/media/v3/upload?filename=bench.bin`;

  const figures = new RoundFigures<Target>();
  const failures: string[] = [];
  try {
    // Full size: the first large transfer grows V8's young generation to its working size once, which is not
    // growth with the body.
    progress('large bodies: warm-up');
    for (const target of TARGETS) {
      for (const direction of ['download', 'upload'] as const) await load.run({ kind: 'transfer', url: url(target, direction), direction, bytes });
    }
    const rounds = settings.transferRounds;
    for (let round = 0; round < rounds; round++) {
      for (const direction of ['download', 'upload'] as const) {
        for (const target of rotated(TARGETS, round)) {
          progress(`large bodies: round ${round + 1}/${rounds}, ${direction} ${Math.round(bytes / MIB)} MiB, ${target}`);
          if (target === 'proxy') await proxy.startRssWatch();
          const result = await load.run({ kind: 'transfer', url: url(target, direction), direction, bytes });
          if (target === 'proxy') {
            const rss = await proxy.stopRssWatch();
            figures.add(target, `${direction} rss growth MB`, (rss.peak - rss.baseline) / MB);
            figures.add(target, `${direction} rss peak MB`, rss.peak / MB);
          }
          if (result.status !== 200 || result.bytes !== bytes) failures.push(`${target} ${direction}: status ${result.status}, ${result.bytes} of ${bytes} bytes`);
          figures.add(target, `${direction} MB/s`, result.megabytesPerSecond);
        }
      }
    }
  } finally {
    await proxy.stop();
  }

  const rows: ResultRow[] = [];
  const notes: string[] = [];
  for (const direction of ['download', 'upload'] as const) {
    const speed = (target: Target) => figures.median(target, `${direction} MB/s`);
    const label = `${direction} ${Math.round(bytes / MIB)} MiB`;
    rows.push(ratioRow(`direct, ${label}`, speed('direct'), 'MB/s', { label: 'direct', value: speed('direct') }, { rounds: figures.rounds('direct', `${direction} MB/s`) }));
    rows.push(ratioRow(`nginx (default buffering), ${label}`, speed('nginx'), 'MB/s', { label: 'direct', value: speed('direct') }, { rounds: figures.rounds('nginx', `${direction} MB/s`) }));
    rows.push(
      ratioRow(`proxy, ${label}`, speed('proxy'), 'MB/s', { label: 'direct', value: speed('direct') }, {
        rounds: figures.rounds('proxy', `${direction} MB/s`),
        target: atLeast('≥ 0.8× direct', speed('proxy') / speed('direct'), 0.8, (ratio) => `${ratio.toFixed(2)}× direct`),
      }),
    );
    const growth = figures.rounds('proxy', `${direction} rss growth MB`);
    const typical = figures.median('proxy', `${direction} rss growth MB`);
    const peak = Math.max(...figures.rounds('proxy', `${direction} rss peak MB`));
    rows.push(
      ratioRow(`proxy RSS growth during ${label}`, typical, 'MB', { label: 'proxy RSS peak', value: peak }, {
        rounds: growth,
        target: atMost('< 20 MB', typical, 20, (mb) => `${mb.toFixed(1)} MB`),
      }),
    );
    notes.push(`${direction}: proxy RSS growth per round ${growth.map((mb) => mb.toFixed(1)).join(' / ')} MB (worst ${Math.max(...growth).toFixed(1)} MB), highest RSS ${peak.toFixed(1)} MB`);
  }
  return {
    scenario: 'large bodies',
    rows,
    notes,
    problems: failures,
    details: { bytes, figures: figures.toJSON() },
  };
}

if (isEntryPoint(import.meta.url)) await runStandalone('large-bodies', largeBodies);

import { parseArgs } from 'node:util';

/** How long and how often each scenario measures. `--smoke` shrinks everything to a few seconds in total. */
export interface BenchSettings {
  readonly mode: 'full' | 'smoke';
  /** Repetitions of every measurement; tables show the median over them. */
  readonly rounds: number;
  readonly roundSec: number;
  readonly warmupSec: number;
  readonly passThroughConnections: number;
  /** Fixed rate for the added-latency measurement (issue 8: 1,000 req/s). */
  readonly latencyRate: number;
  /** Fixed rate for the introspection latency target (issue 8: 5,000/s with p99 ≤ 5 ms). */
  readonly introspectionRate: number;
  /** Connections of the saturating introspection run (a homeserver's worker pool, not 50 browsers). */
  readonly introspectionConnections: number;
  readonly largeBodyBytes: number;
  /** Transfers are short and noisy: more rounds than the other measures. */
  readonly transferRounds: number;
  readonly logins: number;
  /**
   * Password logins (each paired with an OP grant) between the just-started measure and the measured logins: V8
   * compiles the login's code with TurboFan only after several hundred logins, and until then a login costs the proxy
   * about twice the CPU of a warm one (bench/README.md, login).
   */
  readonly loginWarmUp: number;
  readonly ssoLogins: number;
  /** Live sessions for the memory and scale scenario, and the small set it compares lookups with. */
  readonly sessions: number;
  readonly smallSessionSet: number;
  /** Fixed rate for lookup latency at 1k vs 100k sessions: well below capacity, so it shows latency, not queueing. */
  readonly lookupRate: number;
  readonly horizontalUsers: number;
  readonly profileSec: number;
  /** Scenario names to run (run-all only); empty = all. */
  readonly only: readonly string[];
  /** `--report` (run-all only): also write the HTML report and the SVG charts (bench/charts/). */
  readonly report: boolean;
  /** `--base REF` (memory-scale only): measure the proxy built from REF's src/ instead of this tree's. */
  readonly base?: string;
}

const FULL: Omit<BenchSettings, 'only' | 'report'> = {
  mode: 'full',
  rounds: 3,
  roundSec: 3,
  warmupSec: 1,
  passThroughConnections: 50,
  latencyRate: 1000,
  introspectionRate: 5000,
  introspectionConnections: 16,
  largeBodyBytes: 100 * 1024 * 1024,
  transferRounds: 5,
  logins: 200,
  loginWarmUp: 1_000,
  ssoLogins: 60,
  sessions: 100_000,
  smallSessionSet: 1_000,
  lookupRate: 2000,
  horizontalUsers: 20,
  profileSec: 5,
};

const SMOKE: Omit<BenchSettings, 'only' | 'report'> = {
  mode: 'smoke',
  rounds: 1,
  roundSec: 0.15,
  warmupSec: 0.05,
  passThroughConnections: 10,
  latencyRate: 200,
  introspectionRate: 300,
  introspectionConnections: 4,
  largeBodyBytes: 4 * 1024 * 1024,
  transferRounds: 1,
  logins: 3,
  loginWarmUp: 0,
  ssoLogins: 1,
  sessions: 300,
  smallSessionSet: 100,
  lookupRate: 200,
  horizontalUsers: 1,
  profileSec: 0.2,
};

/** `--smoke`, `--rounds N`, `--sessions N`, `--only a,b`, `--report`, `--base REF` from the command line. */
export function settingsFromArgs(argv: readonly string[] = process.argv.slice(2)): BenchSettings {
  const { values } = parseArgs({
    args: [...argv],
    options: { smoke: { type: 'boolean' }, rounds: { type: 'string' }, sessions: { type: 'string' }, only: { type: 'string' }, report: { type: 'boolean' }, base: { type: 'string' } },
    strict: true,
  });
  const base = values.smoke === true ? SMOKE : FULL;
  const count = (text: string | undefined, fallback: number, name: string) => {
    if (text === undefined) return fallback;
    const value = Number(text);
    if (!Number.isInteger(value) || value < 1) throw new Error(`--${name} must be a positive integer`);
    return value;
  };
  return {
    ...base,
    rounds: count(values.rounds, base.rounds, 'rounds'),
    sessions: count(values.sessions, base.sessions, 'sessions'),
    only: values.only === undefined ? [] : values.only.split(',').map((name) => name.trim()).filter((name) => name !== ''),
    report: values.report === true,
    ...(values.base === undefined ? {} : { base: values.base }),
  };
}

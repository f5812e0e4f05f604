import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from '../config/load-config.js';
import type { Config } from '../config/schema.js';
import type { DoctorCheck } from './checks.js';
import { runDoctor } from './run-doctor.js';

export const DOCTOR_USAGE = `Usage: matrix-compat-proxy doctor --config FILE [--json]

Checks a configuration against the real OPs, homeserver, store and public URL, one line per check:
  ✓ passed   ✗ failed (with what to change)   ! worth a look   · information   - skipped
  --json     one JSON array of {scope, check, status, message, fix}

A real password login (and the mapping templates against its claims) is tried when MCP_DOCTOR_USERNAME and
MCP_DOCTOR_PASSWORD name a test account of the password-login provider.
Exit status: 0 no ✗, 1 at least one ✗ (or an invalid configuration), 2 usage error.
`;

export interface DoctorIo {
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
}

const processIo: DoctorIo = { env: process.env, stdout: (text) => process.stdout.write(text), stderr: (text) => process.stderr.write(text) };

const MARKS: Readonly<Record<DoctorCheck['status'], string>> = { pass: '✓', fail: '✗', warn: '!', info: '·', skip: '-' };

/** `matrix-compat-proxy doctor`: runs the checks and prints them; exit 1 on any ✗. */
export async function runDoctorCli(argv: readonly string[], io: DoctorIo = processIo): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({ args: [...argv], options: { config: { type: 'string', short: 'c' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } }, strict: true }));
  } catch (err: unknown) {
    io.stderr(`${err instanceof Error ? err.message : String(err)}\n${DOCTOR_USAGE}`);
    return 2;
  }
  if (values.help === true) {
    io.stdout(DOCTOR_USAGE);
    return 0;
  }
  if (values.config === undefined) {
    io.stderr(`--config FILE is required\n${DOCTOR_USAGE}`);
    return 2;
  }
  let config: Config;
  try {
    config = loadConfig(values.config, io.env as NodeJS.ProcessEnv);
  } catch (err: unknown) {
    if (!(err instanceof ConfigError)) throw err;
    const problems = err.problems.map((problem) => ({ scope: 'config', check: 'valid', status: 'fail' as const, message: problem, fix: 'correct the key named' }));
    io.stdout(values.json === true ? `${JSON.stringify(problems, null, 2)}\n` : problems.map(formatLine).join(''));
    return 1;
  }
  const checks = await runDoctor(config, { env: io.env });
  io.stdout(values.json === true ? `${JSON.stringify(checks, null, 2)}\n` : checks.map(formatLine).join(''));
  return checks.some((check) => check.status === 'fail') ? 1 : 0;
}

export function formatLine(check: DoctorCheck): string {
  const fix = check.fix !== undefined && (check.status === 'fail' || check.status === 'warn') ? ` → ${check.fix}` : '';
  return `${MARKS[check.status]} ${check.scope} · ${check.check}: ${check.message}${fix}\n`;
}

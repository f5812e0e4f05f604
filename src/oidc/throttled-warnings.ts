import type { Logger } from 'pino';
import type { Clock } from '../clock.js';

const DEFAULT_INTERVAL_MS = 60_000;
/** Distinct keys are few (operation × status × cause); the bound only guards against a key built from OP input. */
const MAX_KEYS = 256;

/**
 * One warning per key and interval: an OP that answers every login with the same quirk gets one log line a minute
 * (with the number of repeats it stood for), not one per request.
 */
export class ThrottledWarnings {
  private readonly lastLogged = new Map<string, { at: number; suppressed: number }>();

  constructor(
    private readonly log: Logger,
    private readonly clock: Clock,
    private readonly intervalMs: number = DEFAULT_INTERVAL_MS,
  ) {}

  warn(key: string, fields: Readonly<Record<string, unknown>>, message: string): void {
    const now = this.clock.now();
    const last = this.lastLogged.get(key);
    if (last !== undefined && now - last.at < this.intervalMs) {
      last.suppressed += 1;
      return;
    }
    if (last === undefined && this.lastLogged.size >= MAX_KEYS) this.lastLogged.clear();
    this.lastLogged.set(key, { at: now, suppressed: 0 });
    this.log.warn({ ...fields, ...(last !== undefined && last.suppressed > 0 ? { repeated_since_last: last.suppressed } : {}) }, message);
  }
}

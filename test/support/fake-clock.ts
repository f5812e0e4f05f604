import type { Clock } from '../../src/clock.js';

/** A clock tests move by hand: no sleeps to reach an expiry. */
export class FakeClock implements Clock {
  constructor(private current = Date.UTC(2026, 10, 23, 12, 0, 0)) {}
  now(): number {
    return this.current;
  }
  advance(ms: number): void {
    this.current += ms;
  }
}

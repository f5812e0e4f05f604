import { formatPath } from './format-issues.js';

/**
 * Problems found before schema validation (environment references, secret files). A key reported here is "covered":
 * the schema's own complaint about the same key ("is required" after a missing file) would only repeat it.
 */
export class ProblemList {
  readonly lines: string[] = [];
  private readonly covered = new Set<string>();

  report(path: readonly PropertyKey[], message: string): void {
    this.lines.push(`${formatPath(path)}: ${message}`);
    this.cover(path);
  }

  cover(path: readonly PropertyKey[]): void {
    this.covered.add(formatPath(path));
  }

  /** True for a problem line about a covered key or anything below it. */
  isCovered(line: string): boolean {
    for (const key of this.covered) {
      if (line.startsWith(`${key}:`) || line.startsWith(`${key}.`) || line.startsWith(`${key}[`)) return true;
    }
    return false;
  }
}

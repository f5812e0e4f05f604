import { median } from './statistics.js';

/** The same items in an order that starts one later each round, so drift over a run hits every target alike. */
export function rotated<T>(items: readonly T[], round: number): T[] {
  const shift = round % items.length;
  return [...items.slice(shift), ...items.slice(0, shift)];
}

/** Per-target figures collected over rounds. */
export class RoundFigures<Key extends string> {
  private readonly figures = new Map<string, number[]>();

  add(key: Key, figure: string, value: number): void {
    const id = `${key}\0${figure}`;
    const list = this.figures.get(id) ?? [];
    list.push(value);
    this.figures.set(id, list);
  }

  rounds(key: Key, figure: string): number[] {
    return this.figures.get(`${key}\0${figure}`) ?? [];
  }

  median(key: Key, figure: string): number {
    return median(this.rounds(key, figure));
  }

  toJSON(): Record<string, number[]> {
    return Object.fromEntries([...this.figures].map(([id, values]) => [id.replace('\0', ' '), values]));
  }
}

/** Starts a base ref's proxy and this tree's one after the other, this tree's first when asked (`--this-first`). */
export async function startBaseAndThis(thisFirst: boolean | undefined, startBase: () => Promise<void>, startThis: () => Promise<void>): Promise<void> {
  for (const start of thisFirst === true ? [startThis, startBase] : [startBase, startThis]) await start();
}

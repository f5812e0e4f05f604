import type { Binding, BindingStore } from '../identity/bindings.js';
import { isValidLocalpart } from '../identity/user-mapping.js';

/**
 * Importing (issuer, sub) → localpart bindings before the first login (migration of existing Matrix users to OP
 * subjects: Synapse #17472, #7633). Rows already present identically are skipped, so an import can be re-run.
 */
export interface ImportRow {
  /** 1-based: the line of a CSV file or the position in a JSON array. */
  readonly line: number;
  readonly issuer: string;
  readonly sub: string;
  readonly localpart: string;
}

export type RowProblem =
  | 'invalid_row' // a field missing or empty, or a malformed line
  | 'invalid_localpart' // not a Matrix localpart
  | 'unknown_issuer' // no configured provider has this issuer
  | 'duplicate_in_input' // the subject or the localpart appears again in the input with a different partner
  | 'subject_bound_elsewhere' // the subject is already bound to another localpart
  | 'localpart_taken'; // the localpart is already bound to another subject

export interface RowReport {
  /** 1-based: the line of a CSV file or the position in a JSON array. */
  readonly line: number;
  readonly issuer?: string;
  readonly sub?: string;
  readonly localpart?: string;
  readonly problem: RowProblem;
  /** The binding in the way, for the two conflicts with existing bindings. */
  readonly existing?: { readonly issuer: string; readonly sub: string; readonly localpart: string };
}

export interface ImportReport {
  readonly dryRun: boolean;
  readonly total: number;
  /** Written (or, in a dry run, that would be written). */
  readonly created: number;
  readonly unchanged: number;
  readonly problems: readonly RowReport[];
}

export class ImportFormatError extends Error {}

const HEADER = ['issuer', 'sub', 'localpart'];

/** JSON array of `{issuer, sub, localpart}` objects, or CSV `issuer,sub,localpart` with an optional header line. */
export function parseImport(text: string, contentType: string): { rows: (ImportRow | RowReport)[] } {
  const trimmed = text.trimStart();
  const json = contentType.includes('json') || (contentType === '' && trimmed.startsWith('['));
  return { rows: json ? parseJsonRows(trimmed) : parseCsvRows(text) };
}

function parseJsonRows(text: string): (ImportRow | RowReport)[] {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err: unknown) {
    throw new ImportFormatError(`The body is not valid JSON: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (!Array.isArray(value)) throw new ImportFormatError('Expected a JSON array of {issuer, sub, localpart} objects');
  return value.map((item: unknown, index) => {
    const record = typeof item === 'object' && item !== null ? (item as Record<string, unknown>) : {};
    return rowOf(index + 1, [record['issuer'], record['sub'], record['localpart']]);
  });
}

function parseCsvRows(text: string): (ImportRow | RowReport)[] {
  const rows: (ImportRow | RowReport)[] = [];
  const lines = text.split(/\r?\n/);
  lines.forEach((line, index) => {
    if (line.trim() === '' || line.trimStart().startsWith('#')) return;
    const fields = splitCsvLine(line);
    if (fields === undefined) {
      rows.push({ line: index + 1, problem: 'invalid_row' });
      return;
    }
    if (rows.length === 0 && fields.map((field) => field.trim().toLowerCase()).join(',') === HEADER.join(',')) return;
    rows.push(fields.length === 3 ? rowOf(index + 1, fields) : { line: index + 1, problem: 'invalid_row' });
  });
  return rows;
}

/** RFC 4180 fields of one line: quoted fields may hold commas and doubled quotes. Undefined when malformed. */
function splitCsvLine(line: string): string[] | undefined {
  const fields: string[] = [];
  let position = 0;
  for (;;) {
    if (line[position] === '"') {
      let value = '';
      position++;
      for (;;) {
        const quote = line.indexOf('"', position);
        if (quote < 0) return undefined;
        value += line.slice(position, quote);
        if (line[quote + 1] === '"') {
          value += '"';
          position = quote + 2;
          continue;
        }
        position = quote + 1;
        break;
      }
      fields.push(value);
      if (position === line.length) return fields;
      if (line[position] !== ',') return undefined;
      position++;
    } else {
      const comma = line.indexOf(',', position);
      if (comma < 0) {
        fields.push(line.slice(position));
        return fields;
      }
      fields.push(line.slice(position, comma));
      position = comma + 1;
    }
  }
}

function rowOf(line: number, fields: readonly unknown[]): ImportRow | RowReport {
  const [issuer, sub, localpart] = fields.map((field) => (typeof field === 'string' ? field.trim() : ''));
  if (!issuer || !sub || !localpart) return { line, problem: 'invalid_row' };
  return { line, issuer, sub, localpart };
}

function isProblem(row: ImportRow | RowReport): row is RowReport {
  return 'problem' in row;
}

/**
 * Checks every row against the input itself and the existing bindings; writes the clean rows unless `dryRun`.
 * Writes go through BindingStore.claim, so a localpart claimed concurrently (a first login racing the import) is
 * reported as taken, never overwritten.
 */
export async function importBindings(
  bindings: BindingStore,
  input: readonly (ImportRow | RowReport)[],
  options: { dryRun: boolean; idpIdOfIssuer: (issuer: string) => string | undefined; serverName: string },
): Promise<ImportReport> {
  const problems: RowReport[] = [];
  const clean: { row: ImportRow; idpId: string }[] = [];
  // A conflict inside the input is reported on every row involved, so collect each side's partners first.
  const partners = new Map<string, Set<string>>();
  const note = (key: string, partner: string) => partners.set(key, (partners.get(key) ?? new Set()).add(partner));
  for (const row of input) {
    if (isProblem(row)) continue;
    note(`subject:${row.issuer}|${row.sub}`, row.localpart);
    note(`localpart:${row.localpart}`, `${row.issuer}|${row.sub}`);
  }

  const seen = new Set<string>();
  for (const row of input) {
    if (isProblem(row)) {
      problems.push(row);
      continue;
    }
    const report = (problem: RowProblem) => problems.push({ ...row, problem });
    if (!isValidLocalpart(row.localpart, options.serverName)) {
      report('invalid_localpart');
      continue;
    }
    const idpId = options.idpIdOfIssuer(row.issuer);
    if (idpId === undefined) {
      report('unknown_issuer');
      continue;
    }
    if ((partners.get(`subject:${row.issuer}|${row.sub}`)?.size ?? 0) > 1 || (partners.get(`localpart:${row.localpart}`)?.size ?? 0) > 1) {
      report('duplicate_in_input');
      continue;
    }
    const identity = `${row.issuer}|${row.sub}|${row.localpart}`;
    if (seen.has(identity)) continue; // the same row twice is harmless
    seen.add(identity);
    clean.push({ row, idpId });
  }

  let created = 0;
  let unchanged = 0;
  for (const { row, idpId } of clean) {
    const bySubject = await bindings.find(row.issuer, row.sub);
    if (bySubject !== undefined) {
      if (bySubject.localpart === row.localpart) unchanged++;
      else problems.push({ ...row, problem: 'subject_bound_elsewhere', existing: pick(bySubject) });
      continue;
    }
    const owner = await bindings.findByLocalpart(row.localpart);
    if (owner !== undefined) {
      problems.push({ ...row, problem: 'localpart_taken', existing: pick(owner) });
      continue;
    }
    if (options.dryRun) {
      created++;
      continue;
    }
    const claim = await bindings.claim({ issuer: row.issuer, sub: row.sub, localpart: row.localpart, idpId });
    if (claim.ok) created++;
    else problems.push({ ...row, problem: 'localpart_taken', existing: { ...claim.owner, localpart: row.localpart } });
  }
  problems.sort((a, b) => a.line - b.line);
  return { dryRun: options.dryRun, total: input.length, created, unchanged, problems };
}

function pick(binding: Binding): { issuer: string; sub: string; localpart: string } {
  return { issuer: binding.issuer, sub: binding.sub, localpart: binding.localpart };
}

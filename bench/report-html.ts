import { mkdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { RESULTS_DIR } from './harness/child-processes.js';
import { writeReport, type ResultsDocument } from './harness/html-report.js';

/**
 * Renders a results document (default bench/results/latest-all.json) as the HTML report, without measuring again:
 * `node --import tsx bench/report-html.ts [results.json] [--charts DIR]`. `npm run bench -- --report` does the same
 * at the end of a run.
 */
const args = process.argv.slice(2);
const chartsAt = args.indexOf('--charts');
const chartsDir = chartsAt >= 0 ? args[chartsAt + 1] : undefined;
const input = args.find((arg, index) => !arg.startsWith('--') && (chartsAt < 0 || index !== chartsAt + 1)) ?? join(RESULTS_DIR, 'latest-all.json');
const document = JSON.parse(readFileSync(input, 'utf8')) as ResultsDocument;
// Always into this checkout's results folder (ignored by git), whichever file was read.
mkdirSync(RESULTS_DIR, { recursive: true });
const output = join(RESULTS_DIR, basename(input).replace(/\.json$/, '') + '-report.html');
process.stdout.write(`${writeReport(document, output, chartsDir)}\n`);

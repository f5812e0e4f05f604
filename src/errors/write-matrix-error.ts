import type { ServerResponse } from 'node:http';
import type { MatrixError } from './matrix-error.js';

/**
 * Writes a MatrixError on a raw response, for the paths that answer before or outside Koa (malformed paths,
 * pass-through refusals, an unreachable homeserver). Same body and headers as the error middleware.
 */
export function writeMatrixError(res: ServerResponse, error: MatrixError, extraHeaders: Readonly<Record<string, string>> = {}): void {
  const body = JSON.stringify(error.toBody());
  res.writeHead(error.status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
    ...error.headers(),
    ...extraHeaders,
  });
  res.end(body);
}

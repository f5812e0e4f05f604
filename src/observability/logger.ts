import { pino, type Logger, type LevelWithSilent } from 'pino';

/** Every secret a log line could carry, at any depth we log. pino replaces them with "[redacted]". */
const REDACTED_PATHS = [
  'authorization',
  'password',
  'access_token',
  'refresh_token',
  'login_token',
  'loginToken',
  'token',
  'client_secret',
  'secret',
  '*.authorization',
  '*.password',
  '*.access_token',
  '*.refresh_token',
  '*.token',
  '*.client_secret',
  '*.secret',
  'req.headers.authorization',
  'req.headers.cookie',
  'res.headers["set-cookie"]',
];

export function createLogger(level: LevelWithSilent, destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      level,
      base: { service: 'matrix-compat-proxy' },
      redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination as pino.DestinationStream | undefined,
  );
}

/** Removes `access_token` (legacy clients still send it in the query) and other token parameters from a URL for logs. */
export function redactUrl(url: string): string {
  return url.replace(/([?&](?:access_token|loginToken|login_token|token|code|state)=)[^&]*/gi, '$1[redacted]');
}

import { pino, type Logger, type LevelWithSilent } from 'pino';

const CENSOR = '[redacted]';

/** Secrets a log line could carry as one of its own fields (or a child logger's binding): replaced whole. */
const SECRET_FIELDS = ['authorization', 'password', 'access_token', 'refresh_token', 'login_token', 'loginToken', 'token', 'client_secret', 'secret'];

/**
 * Secrets replaced one level down as well: inside any object a log line carries as a field (an error's own
 * properties included, after pino's error serializer).
 */
const NESTED_SECRET_FIELDS = ['authorization', 'password', 'access_token', 'refresh_token', 'token', 'client_secret', 'secret'];

/**
 * What pino's own redaction does (exact paths only): the fields above, and the headers and nested secrets of a
 * request or response logged as `req` / `res` (pino turns a logged IncomingMessage or ServerResponse into those).
 */
const REDACTED_PATHS = [
  ...SECRET_FIELDS,
  ...NESTED_SECRET_FIELDS.flatMap((name) => [`req.${name}`, `res.${name}`]),
  'req.headers.authorization',
  'req.headers.cookie',
  'res.headers["set-cookie"]',
];

/** Fields pino itself handles: redacted by its paths above, or an error (its serializer below does the rest). */
const FIELDS_PINO_HANDLES = new Set([...SECRET_FIELDS, 'req', 'res', 'err']);

/**
 * The one level down for every other field is done here rather than by pino's wildcard paths (`*.token`): with
 * those, pino sends EVERY value of every line (and the message) through @pinojs/redact, which parses its paths,
 * copies the object and serialises the copy each time — about 7 µs and a few KB of allocation per line, on every
 * request that logs (bench/README.md, "Login CPU"). This looks at each field's own properties and copies only an
 * object that has a secret to hide, as pino's copy did (same prototype, own enumerable properties), so a line comes
 * out the same (test/unit/logger-redaction.test.ts compares both over representative lines).
 */
export function createLogger(level: LevelWithSilent, destination?: NodeJS.WritableStream): Logger {
  const logger = pino(
    {
      level,
      base: { service: 'matrix-compat-proxy' },
      redact: { paths: REDACTED_PATHS, censor: CENSOR },
      formatters: { log: redactNestedFields },
      serializers: { err: (error: unknown) => redactInside(pino.stdSerializers.err(error as Error)) },
      hooks: { logMethod: redactFormatArguments },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination as pino.DestinationStream | undefined,
  );
  // A child's bindings went through the wildcard paths too. pino applies a `bindings` formatter to the root's only
  // (children get an identity one), so the redaction goes in front of `child`, which every descendant inherits.
  const child = logger.child as unknown as (this: Logger, bindings: pino.Bindings, options?: pino.ChildLoggerOptions) => Logger;
  logger.child = function redactedChild(this: Logger, bindings: pino.Bindings, options?: pino.ChildLoggerOptions) {
    return child.call(this, redactNestedFields(bindings), options === undefined ? undefined : redactingOptions(options));
  } as unknown as Logger['child'];
  // setBindings serialises new bindings the way child() does (pino's asChindings); every descendant inherits this.
  const setBindings = logger.setBindings;
  logger.setBindings = function redactedSetBindings(this: Logger, bindings: pino.Bindings) {
    setBindings.call(this, redactNestedFields(bindings));
  };
  return logger;
}

/**
 * A child's own `formatters.log` replaces the root's (pino's child(): `log || formatters.log`) and its own serializers
 * run after the log formatter: both would bypass the one level down that the wildcard paths applied after them.
 */
function redactingOptions(options: pino.ChildLoggerOptions): pino.ChildLoggerOptions {
  const log = options.formatters?.log;
  const serializers = options.serializers;
  if (log === undefined && serializers === undefined) return options;
  return {
    ...options,
    ...(log === undefined ? {} : { formatters: { ...options.formatters, log: (fields: object) => redactNestedFields(log(fields) as Record<string, unknown>) } }),
    ...(serializers === undefined
      ? {}
      : {
          // Symbol-keyed ones (pino's `Symbol.for('pino.*')`) are kept as they are.
          serializers: Object.assign(
            { ...serializers },
            Object.fromEntries(
              Object.entries(serializers).map(([name, serialize]) => [name, SECRET_FIELDS.includes(name) ? serialize : (value: unknown) => redactInside(serialize(value))]),
            ),
          ),
        }),
  };
}

/** A log line's (or binding set's) fields, with the secrets one level inside each object field replaced. */
function redactNestedFields(fields: Record<string, unknown>): Record<string, unknown> {
  let redacted: Record<string, unknown> | undefined;
  for (const name in fields) {
    if (FIELDS_PINO_HANDLES.has(name) || !Object.hasOwn(fields, name)) continue;
    const value = fields[name];
    const inside = redactInside(value);
    if (inside === value) continue;
    redacted ??= { ...fields };
    redacted[name] = inside;
  }
  return redacted ?? fields;
}

/**
 * The value with its own enumerable secret properties replaced, in a copy; the value itself when it has none. Arrays
 * and dates keep their elements (pino's copy of them carried no named properties).
 */
function redactInside(value: unknown): unknown {
  if (typeof value !== 'object' || value === null || Array.isArray(value) || value instanceof Date) return value;
  let copy: Record<string, unknown> | undefined;
  for (const name of NESTED_SECRET_FIELDS) {
    if (!Object.prototype.propertyIsEnumerable.call(value, name)) continue;
    copy ??= copyOwnEnumerable(value);
    copy[name] = CENSOR;
  }
  return copy ?? value;
}

function copyOwnEnumerable(value: object): Record<string, unknown> {
  const copy = Object.create(Object.getPrototypeOf(value) as object | null) as Record<string, unknown>;
  for (const name in value) if (Object.hasOwn(value, name)) copy[name] = (value as Record<string, unknown>)[name];
  return copy;
}

/**
 * Objects interpolated into a message (`%j`, `%o`, `%O`) went through the same wildcard paths, applied to the
 * argument: a secret one level inside any of its properties (array elements included) is replaced. pino's paths
 * above still apply to the argument's own fields.
 */
function redactFormatArguments(this: Logger, args: Parameters<Logger['info']>, method: (...args: unknown[]) => void): void {
  const first = typeof args[0] === 'object' ? 2 : 1;
  for (let index = first; index < args.length; index++) {
    const argument: unknown = args[index];
    if (typeof argument !== 'object' || argument === null) continue;
    let redacted: Record<string, unknown> | undefined;
    for (const name in argument) {
      if (!Object.hasOwn(argument, name)) continue;
      const value = (argument as Record<string, unknown>)[name];
      const inside = redactInside(value);
      if (inside === value) continue;
      redacted ??= Array.isArray(argument) ? (Array.from(argument) as unknown as Record<string, unknown>) : copyOwnEnumerable(argument);
      redacted[name] = inside;
    }
    if (redacted !== undefined) (args as unknown[])[index] = redacted;
  }
  method.apply(this, args as unknown[]);
}

/** Removes `access_token` (legacy clients still send it in the query) and other token parameters from a URL for logs. */
export function redactUrl(url: string): string {
  return url.replace(/([?&](?:access_token|loginToken|login_token|token|code|state)=)[^&]*/gi, '$1[redacted]');
}

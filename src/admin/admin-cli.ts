import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { ADMIN_PREFIX } from './admin-routes.js';

export const ADMIN_USAGE = `Usage: matrix-compat-proxy admin [--url URL] [--token TOKEN] COMMAND [ARGS]

Calls the admin API of a running proxy (its homeserver-facing listener, homeserver.listen).
  --url URL      base URL of that listener (or env MCP_ADMIN_URL)
  --token TOKEN  admin.token of the proxy (better: env MCP_ADMIN_TOKEN, which does not show in ps)

Commands:
  list-sessions LOCALPART          the user's legacy sessions (device, client, IP, created, last seen, provider)
  end-session SESSION_ID           end one session (device removed at the homeserver)
  end-user-sessions LOCALPART      end every legacy session of the user
  show-binding ISSUER SUB          the (issuer, sub) -> localpart binding
  show-binding --localpart LOCALPART
  delete-binding ISSUER SUB        remove the binding and end the sessions made through it
  import-bindings FILE [--dry-run] import bindings from CSV (issuer,sub,localpart) or a JSON array; FILE - reads stdin

Exit status: 0 done, 1 refused or conflicts reported, 2 usage error.
`;

export interface CliIo {
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
  readonly readInput: (path: string) => Promise<string>;
  readonly fetch: typeof fetch;
}

const processIo: CliIo = {
  env: process.env,
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
  readInput: async (path) => (path === '-' ? readStdin() : readFile(path, 'utf8')),
  fetch: (input, init) => fetch(input, init),
};

class UsageError extends Error {}

interface ApiCall {
  readonly method: 'GET' | 'DELETE' | 'POST';
  readonly path: string;
  readonly body?: { readonly text: string; readonly contentType: string };
}

/** `matrix-compat-proxy admin ...`: a thin client of the same HTTP admin API, printing its JSON answers. */
export async function runAdminCli(argv: readonly string[], io: CliIo = processIo): Promise<number> {
  let call: ApiCall;
  let baseUrl: string;
  let token: string;
  try {
    const { values, positionals } = parseArgs({
      args: [...argv],
      options: {
        url: { type: 'string' },
        token: { type: 'string' },
        localpart: { type: 'string' },
        'dry-run': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      allowPositionals: true,
      strict: true,
    });
    if (values.help === true) {
      io.stdout(ADMIN_USAGE);
      return 0;
    }
    baseUrl = values.url ?? io.env['MCP_ADMIN_URL'] ?? '';
    token = values.token ?? io.env['MCP_ADMIN_TOKEN'] ?? '';
    if (baseUrl === '') throw new UsageError('--url (or MCP_ADMIN_URL) is required');
    if (token === '') throw new UsageError('--token (or MCP_ADMIN_TOKEN) is required');
    call = await apiCallFor(positionals, { localpart: values.localpart, dryRun: values['dry-run'] === true }, io);
  } catch (err: unknown) {
    if (err instanceof UsageError || (err instanceof TypeError && 'code' in err)) {
      io.stderr(`${err.message}\n\n${ADMIN_USAGE}`);
      return 2;
    }
    throw err;
  }

  let response: Response;
  try {
    response = await io.fetch(new URL(call.path, baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`), {
      method: call.method,
      headers: { authorization: `Bearer ${token}`, ...(call.body === undefined ? {} : { 'content-type': call.body.contentType }) },
      ...(call.body === undefined ? {} : { body: call.body.text }),
    });
  } catch (err: unknown) {
    io.stderr(`Could not reach ${baseUrl}: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
  const text = await response.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: print as it came
  }
  const printed = typeof body === 'string' ? `${body}\n` : `${JSON.stringify(body, null, 2)}\n`;
  if (!response.ok) {
    io.stderr(`HTTP ${response.status}\n${printed}`);
    return 1;
  }
  io.stdout(printed);
  const conflicts = (body as { conflicts?: unknown[] } | undefined)?.conflicts;
  return Array.isArray(conflicts) && conflicts.length > 0 ? 1 : 0;
}

async function apiCallFor(positionals: readonly string[], flags: { localpart: string | undefined; dryRun: boolean }, io: CliIo): Promise<ApiCall> {
  const [command, ...args] = positionals;
  const segment = (value: string) => encodeURIComponent(value);
  const want = (count: number) => {
    if (args.length !== count) throw new UsageError(`${command} takes ${count} argument${count === 1 ? '' : 's'}`);
    return args as string[];
  };
  const base = ADMIN_PREFIX.slice(1);
  switch (command) {
    case 'list-sessions': {
      const [localpart] = want(1);
      return { method: 'GET', path: `${base}/users/${segment(localpart as string)}/sessions` };
    }
    case 'end-session': {
      const [sessionId] = want(1);
      return { method: 'DELETE', path: `${base}/sessions/${segment(sessionId as string)}` };
    }
    case 'end-user-sessions': {
      const [localpart] = want(1);
      return { method: 'DELETE', path: `${base}/users/${segment(localpart as string)}/sessions` };
    }
    case 'show-binding': {
      if (flags.localpart !== undefined) {
        want(0);
        return { method: 'GET', path: `${base}/users/${segment(flags.localpart)}/binding` };
      }
      const [issuer, sub] = want(2);
      return { method: 'GET', path: `${base}/bindings/${segment(issuer as string)}/${segment(sub as string)}` };
    }
    case 'delete-binding': {
      const [issuer, sub] = want(2);
      return { method: 'DELETE', path: `${base}/bindings/${segment(issuer as string)}/${segment(sub as string)}` };
    }
    case 'import-bindings': {
      const [file] = want(1);
      const text = await io.readInput(file as string);
      const json = (file as string).toLowerCase().endsWith('.json') || text.trimStart().startsWith('[');
      return {
        method: 'POST',
        path: `${base}/bindings/import${flags.dryRun ? '?dry_run=true' : ''}`,
        body: { text, contentType: json ? 'application/json' : 'text/csv' },
      };
    }
    case undefined:
      throw new UsageError('A command is required');
    default:
      throw new UsageError(`Unknown command ${command}`);
  }
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

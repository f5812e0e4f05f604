import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../test/support/free-port.js';
import { track } from './child-processes.js';
import { processCpuTimeMs, withChildren } from './process-cpu.js';

const NGINX = process.env['NGINX_BIN'] ?? '/usr/sbin/nginx';

export interface RunningNginx {
  readonly url: string;
  /** CPU time (user + system, ms) of nginx's processes so far: the master and its workers, or the one process. */
  cpuTimeMs(): number;
  stop(): Promise<void>;
}

/**
 * Debian's nginx as the reverse proxy admins already run in front of Synapse: with `workers` 1 one process (no master,
 * like the single Node process it is compared with), with more a master and that many worker processes (like the
 * proxy's cluster primary and its workers; nginx's defaults otherwise: accept_mutex off, no reuseport), proxy_pass to `upstreamUrl` with a keep-alive upstream pool, the usual
 * forwarding headers, access log off. Everything lives in a temporary directory.
 */
export async function startNginx(upstreamUrl: string, workers = 1): Promise<RunningNginx> {
  const upstream = new URL(upstreamUrl);
  const dir = await mkdtemp(join(tmpdir(), 'mcp-bench-nginx-'));
  const port = await freePort();
  const config = `
daemon off;
master_process ${workers > 1 ? 'on' : 'off'};
worker_processes ${workers};
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy_temp;
  fastcgi_temp_path ${dir}/fastcgi_temp;
  uwsgi_temp_path ${dir}/uwsgi_temp;
  scgi_temp_path ${dir}/scgi_temp;
  keepalive_requests 100000;
  upstream homeserver {
    server ${upstream.hostname}:${upstream.port};
    keepalive 128;
    keepalive_requests 100000;
  }
  server {
    listen 127.0.0.1:${port};
    client_max_body_size 0;
    location / {
      proxy_pass http://homeserver;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
    }
  }
}
`;
  const configPath = join(dir, 'nginx.conf');
  await writeFile(configPath, config);
  const child = track(spawn(NGINX, ['-p', dir, '-c', configPath, '-e', join(dir, 'error.log')], { stdio: ['ignore', 'ignore', 'pipe'] }));
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const spawnFailed = new Promise<never>((_, reject) => child.once('error', (error) => reject(new Error(`cannot start ${NGINX}: ${error.message}`))));

  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGQUIT');
      const timer = setTimeout(() => child.kill('SIGKILL'), 2000);
      await exited;
      clearTimeout(timer);
    }
    await rm(dir, { recursive: true, force: true });
  };

  try {
    await Promise.race([waitForPort(port, 5000), spawnFailed, exited.then(() => Promise.reject(new Error(`nginx exited: ${stderr}`)))]);
  } catch (error) {
    const log = await readFile(join(dir, 'error.log'), 'utf8').catch(() => '');
    await stop();
    throw new Error(`${error instanceof Error ? error.message : String(error)}\n${log}`);
  }
  const pid = child.pid as number;
  return { url: `http://127.0.0.1:${port}`, cpuTimeMs: () => processCpuTimeMs(workers > 1 ? withChildren(pid) : [pid]), stop };
}

async function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const open = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (open) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on ${port} after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import autocannon from 'autocannon';
import type { FixedRateJob, FixedRateResult, FixedRateTrace, LoadJob, RequestShape, SequenceJob, SequenceResult, ThroughputJob, ThroughputResult, TransferJob, TransferResult } from './harness/load-jobs.js';
import { DEAD, PacedSender } from './harness/paced-sender.js';
import { distributionOf } from './harness/statistics.js';
import { startProbe, stopProbe } from './harness/tail-probe.js';

/**
 * The load-generator process (forked by harness/load-generator-client.ts). It answers `{ id, job }` messages with
 * `{ id, result }` or `{ id, error }`, one job at a time.
 */

const UPLOAD_CHUNK = Buffer.alloc(64 * 1024, 0x5a);
/** No single request may hang a benchmark: past this, it counts as an error. */
const REQUEST_TIMEOUT_MS = 30_000;

async function runJob(job: LoadJob): Promise<unknown> {
  switch (job.kind) {
    case 'throughput':
      return throughput(job);
    case 'fixed-rate':
      return fixedRate(job);
    case 'transfer':
      return transfer(job);
    case 'sequence':
      return sequence(job);
  }
}

/** Builds the per-request variation (rotating tokens) of a request shape. */
function variation(shape: RequestShape): () => { headers: Record<string, string>; body: string | undefined } {
  const headers = { ...shape.headers };
  if (shape.tokens === undefined) return () => ({ headers, body: shape.body });
  const tokens = readFileSync(shape.tokens.file, 'utf8').split('\n').filter((line) => line !== '');
  if (tokens.length === 0) throw new Error(`no tokens in ${shape.tokens.file}`);
  let next = 0;
  if (shape.tokens.as === 'form') {
    headers['content-type'] = 'application/x-www-form-urlencoded';
    return () => ({ headers, body: `token=${tokens[next++ % tokens.length]}&token_type_hint=access_token` });
  }
  return () => ({ headers: { ...headers, authorization: `Bearer ${tokens[next++ % tokens.length]}` }, body: shape.body });
}

function throughput(job: ThroughputJob): Promise<ThroughputResult> {
  const url = new URL(job.url);
  const vary = variation(job);
  const method = job.method ?? 'GET';
  const first = vary();
  const latencies: number[] = [];
  let ok = 0;
  let non2xx = 0;
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const instance = autocannon(
      {
        url: url.origin,
        connections: job.connections,
        ...(job.amount === undefined ? { duration: job.durationSec ?? 1 } : { amount: job.amount }),
        timeout: 10,
        // autocannon ends a timed run only on a sample tick (default every second): 1.3 s would become 2 s.
        sampleInt: 100,
        requests: [
          {
            method,
            path: url.pathname + url.search,
            headers: first.headers,
            ...(first.body === undefined ? {} : { body: first.body }),
            ...(job.tokens === undefined
              ? {}
              : {
                  setupRequest: (request) => {
                    const { headers, body } = vary();
                    return { ...request, headers, ...(body === undefined ? {} : { body }) };
                  },
                }),
          },
        ],
      },
      (error, result) => {
        if (error !== null) {
          reject(error);
          return;
        }
        const seconds = (performance.now() - started) / 1000;
        resolve({ requestsPerSecond: ok / seconds, ok, errors: result.errors + result.timeouts, non2xx, seconds, latencyMs: distributionOf(latencies) });
      },
    );
    instance.on('response', (_client: unknown, statusCode: number, _bytes: number, responseTimeMs: number) => {
      if (statusCode >= 200 && statusCode < 300) {
        ok += 1;
        latencies.push(responseTimeMs);
      } else {
        non2xx += 1;
      }
    });
  });
}

/**
 * Open loop: request i is due at i / rate seconds, whatever happened to earlier ones. Latency runs from the moment a
 * request is due (so waiting for a free connection counts) to the last byte of its response. The client is a
 * minimal keep-alive HTTP/1.1 client on raw sockets: node's http client would cost the generator more CPU than the
 * proxy spends, on a machine with two cores. What sends is this thread woken by `setTimeout` (whole milliseconds,
 * the default), or with `clock: 'thread'` harness/paced-sender.ts (a worker thread that sleeps until each due time,
 * sub-millisecond, at about twice the generator's CPU per request); either way the latency is counted from the due time, never
 * from the send.
 */
async function fixedRate(job: FixedRateJob): Promise<FixedRateResult> {
  const url = new URL(job.url);
  const vary = variation(job);
  const total = Math.max(1, Math.round(job.rate * job.durationSec));
  const intervalMs = 1000 / job.rate;
  const headOf = () => {
    const { headers, body } = vary();
    return requestBytes(url, job.method ?? 'GET', headers, body);
  };
  const connections = await Promise.all(Array.from({ length: job.connections }, () => RawConnection.open(url)));
  const clock = job.clock ?? (process.env['BENCH_FIXED_RATE_CLOCK'] === 'thread' ? 'thread' : 'timer');
  const paced = clock === 'timer' ? undefined : new PacedSender(connections.map((connection) => connection.fd), Array.from({ length: total }, headOf));
  await paced?.start();
  const latencies = new Float64Array(total);
  let settled = 0;
  let ok = 0;
  let non2xx = 0;
  let errors = 0;
  // --trace: due time, send lag and latency of every request by its index.
  const traced = job.trace === true;
  const latencyOf = traced ? new Float64Array(total).fill(-1) : undefined;
  if (traced) await startProbe();
  const started = performance.now();
  const dueOf = (index: number) => started + index * intervalMs;
  let finished = false;
  let resolveRun: (result: FixedRateResult) => void = () => undefined;
  const run = new Promise<FixedRateResult>((resolve) => (resolveRun = resolve));
  const answered = (status: number | undefined, index: number) => {
    if (status === undefined) errors += 1;
    else if (status >= 200 && status < 300) {
      const latency = performance.now() - dueOf(index);
      latencies[ok++] = latency;
      if (latencyOf !== undefined) latencyOf[index] = latency;
    } else non2xx += 1;
    settled += 1;
    if (settled + (paced?.failed ?? 0) === total) void finish();
  };
  const finish = async () => {
    if (finished) return;
    finished = true;
    clearTimeout(deadline);
    clearTimeout(timer);
    // The worker first: it must not write to a descriptor that closing the sockets frees.
    await paced?.stop();
    for (const connection of connections) connection.close();
    const seconds = (performance.now() - started) / 1000;
    const sendLag = paced?.sendLag ?? timerLag;
    const sendLagMs = distributionOf(sendLag.subarray(0, paced?.handled ?? sent));
    const result: FixedRateResult = { requestsPerSecond: ok / seconds, ok, errors: errors + (total - settled), non2xx, latencyMs: distributionOf(latencies.subarray(0, ok)), maxLagMs: sendLagMs.max, sendLagMs };
    if (latencyOf === undefined) {
      resolveRun(result);
      return;
    }
    const origin = performance.timeOrigin;
    const trace: FixedRateTrace = {
      clock,
      dueAt: Array.from({ length: total }, (_, index) => origin + dueOf(index)),
      sendLagMs: Array.from(sendLag),
      latencyMs: Array.from(latencyOf),
      generator: await stopProbe(),
    };
    resolveRun({ ...result, trace });
  };
  // Answers that never come (a hung target) end the run as errors instead of hanging it.
  const deadline = setTimeout(() => void finish(), job.durationSec * 1000 + REQUEST_TIMEOUT_MS);

  // With the timer: this thread sends; which request each connection carries, and the requests waiting for one.
  const timerLag = new Float64Array(paced === undefined ? total : 0);
  const carried = new Int32Array(connections.length).fill(-1);
  const waiting: { head: Buffer; index: number }[] = [];
  const idle: number[] = [];
  let sent = 0;
  let timer: NodeJS.Timeout | undefined;

  connections.forEach((connection, c) => {
    connection.listen(
      (status) => {
        if (paced !== undefined) {
          const index = Atomics.load(paced.carries, c);
          paced.free(c);
          answered(status, index);
          return;
        }
        const index = carried[c] as number;
        carried[c] = -1;
        answered(status, index);
        const next = waiting.shift();
        if (next === undefined) idle.push(c);
        else {
          carried[c] = next.index;
          connection.send(next.head);
        }
      },
      () => {
        if (finished) return;
        if (paced !== undefined) {
          // A target that closes a connection mid-run: the worker never takes it again (a write it was making at that
          // very moment fails with EBADF and counts as an error; the generator opens no descriptor during a run
          // that could take the number meanwhile).
          if (Atomics.exchange(paced.state, c, DEAD) === 1) answered(undefined, Atomics.load(paced.carries, c));
        } else if (carried[c] !== -1) answered(undefined, carried[c] as number);
      },
    );
  });
  if (paced !== undefined) {
    // The same instant on the worker's clock (both read process.hrtime's monotonic clock).
    paced.begin(started + (PacedSender.nowMs() - performance.now()), intervalMs);
    return run;
  }
  idle.push(...connections.keys());
  const tick = () => {
    const now = performance.now();
    const due = Math.min(total, Math.floor((now - started) / intervalMs) + 1);
    while (sent < due) {
      const head = headOf();
      // How late the generator itself is (a request queued for a busy connection is not: that wait is the target's).
      timerLag[sent] = performance.now() - dueOf(sent);
      const c = idle.pop();
      if (c === undefined) waiting.push({ head, index: sent });
      else {
        carried[c] = sent;
        (connections[c] as RawConnection).send(head);
      }
      sent += 1;
    }
    if (sent < total && !finished) timer = setTimeout(tick, Math.max(0, dueOf(sent) - performance.now()));
  };
  tick();
  return run;
}

function requestBytes(url: URL, method: string, headers: Readonly<Record<string, string>>, body: string | undefined): Buffer {
  let head = `${method} ${url.pathname}${url.search} HTTP/1.1\r\nhost: ${url.host}\r\n`;
  for (const [name, value] of Object.entries(headers)) head += `${name}: ${value}\r\n`;
  if (body !== undefined) head += `content-length: ${Buffer.byteLength(body)}\r\n`;
  return Buffer.from(`${head}\r\n${body ?? ''}`);
}

const HEAD_END = Buffer.from('\r\n\r\n');
const CHUNKED_END = Buffer.from('0\r\n\r\n');

/**
 * One keep-alive connection, one request at a time; understands Content-Length and (trailer-less) chunked bodies.
 * It reports each complete answer's status; who sent the request (this thread or harness/paced-sender.ts's worker,
 * writing to `fd`) is the caller's business.
 */
class RawConnection {
  private buffered: Buffer = Buffer.alloc(0);
  private bodyStart = -1;
  private status = 0;
  private length: number | 'chunked' = 0;
  private onAnswer: (status: number) => void = () => undefined;
  private onClose: () => void = () => undefined;

  private constructor(private readonly socket: Socket) {
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.receive(chunk));
    socket.on('error', () => undefined);
    socket.on('close', () => this.onClose());
  }

  static open(url: URL): Promise<RawConnection> {
    return new Promise((resolve, reject) => {
      const socket = connect(Number(url.port), url.hostname);
      socket.once('connect', () => resolve(new RawConnection(socket)));
      socket.once('error', reject);
    });
  }

  /** The socket's descriptor, for a writer on another thread (node keeps it in the handle; Linux and macOS). */
  get fd(): number {
    return (this.socket as unknown as { _handle: { fd: number } })._handle.fd;
  }

  listen(onAnswer: (status: number) => void, onClose: () => void): void {
    this.onAnswer = onAnswer;
    this.onClose = onClose;
  }

  send(head: Buffer): void {
    this.socket.write(head);
  }

  close(): void {
    this.onClose = () => undefined;
    this.socket.destroy();
  }

  private receive(chunk: Buffer): void {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    for (;;) {
      if (this.bodyStart < 0) {
        const end = this.buffered.indexOf(HEAD_END);
        if (end < 0) return;
        const head = this.buffered.subarray(0, end).toString('latin1');
        this.status = Number(head.slice(9, 12));
        const length = /\r\ncontent-length:\s*(\d+)/i.exec(head);
        this.length = length !== null ? Number(length[1]) : /\r\ntransfer-encoding:\s*chunked/i.test(head) ? 'chunked' : 0;
        this.bodyStart = end + HEAD_END.length;
      }
      let consumed: number;
      if (this.length === 'chunked') {
        const end = this.buffered.indexOf(CHUNKED_END, this.bodyStart);
        if (end < 0) return;
        consumed = end + CHUNKED_END.length;
      } else {
        consumed = this.bodyStart + this.length;
        if (this.buffered.length < consumed) return;
      }
      this.buffered = this.buffered.subarray(consumed);
      this.bodyStart = -1;
      this.onAnswer(this.status);
      if (this.buffered.length === 0) return;
    }
  }
}

function transfer(job: TransferJob): Promise<TransferResult> {
  const url = new URL(job.url);
  return new Promise((resolve, reject) => {
    const started = performance.now();
    let received = 0;
    const outgoing = request(
      {
        host: url.hostname,
        port: url.port,
        path: url.pathname + url.search,
        method: job.direction === 'upload' ? 'PUT' : 'GET',
        headers: job.direction === 'upload' ? { 'content-type': 'application/octet-stream', 'content-length': String(job.bytes) } : {},
      },
      (res) => {
        res.on('data', (chunk: Buffer) => (received += chunk.length));
        res.on('end', () => {
          const seconds = (performance.now() - started) / 1000;
          resolve({ status: res.statusCode ?? 0, bytes: job.direction === 'upload' ? job.bytes : received, seconds, megabytesPerSecond: job.bytes / 1e6 / seconds });
        });
        res.on('error', reject);
      },
    );
    outgoing.on('error', reject);
    outgoing.setTimeout(REQUEST_TIMEOUT_MS, () => outgoing.destroy(new Error(`no progress for ${REQUEST_TIMEOUT_MS} ms`)));
    if (job.direction === 'download') {
      outgoing.end();
      return;
    }
    let remaining = job.bytes;
    const writeMore = () => {
      while (remaining > 0) {
        const size = Math.min(remaining, UPLOAD_CHUNK.length);
        remaining -= size;
        const more = outgoing.write(size === UPLOAD_CHUNK.length ? UPLOAD_CHUNK : UPLOAD_CHUNK.subarray(0, size));
        if (!more) {
          outgoing.once('drain', writeMore);
          return;
        }
      }
      outgoing.end();
    };
    writeMore();
  });
}

async function sequence(job: SequenceJob): Promise<SequenceResult> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const steps = [];
  try {
    for (const step of job.steps) {
      const { headers, body } = variation(step)();
      const url = new URL(step.url);
      const t0 = performance.now();
      const { status, text } = await new Promise<{ status: number; text: string }>((resolve, reject) => {
        const outgoing = request(
          {
            agent,
            host: url.hostname,
            port: url.port,
            path: url.pathname + url.search,
            method: step.method ?? 'GET',
            headers: body === undefined ? headers : { ...headers, 'content-length': String(Buffer.byteLength(body)) },
          },
          (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (chunk: Buffer) => chunks.push(chunk));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
            res.on('error', reject);
          },
        );
        outgoing.on('error', reject);
        outgoing.setTimeout(REQUEST_TIMEOUT_MS, () => outgoing.destroy(new Error(`no answer for ${REQUEST_TIMEOUT_MS} ms`)));
        outgoing.end(body);
      });
      steps.push({ ms: performance.now() - t0, status, body: text.slice(0, 4000) });
    }
  } finally {
    agent.destroy();
  }
  return { steps };
}

interface JobMessage {
  readonly id: number;
  readonly job: LoadJob;
}

process.on('message', (message: JobMessage) => {
  runJob(message.job).then(
    (result) => process.send?.({ id: message.id, result }),
    (error: unknown) => process.send?.({ id: message.id, error: error instanceof Error ? error.stack ?? error.message : String(error) }),
  );
});
process.on('disconnect', () => process.exit(0));
process.send?.({ ready: true });

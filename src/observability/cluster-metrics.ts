import cluster from 'node:cluster';
import { AggregatorRegistry, type Registry } from 'prom-client';

/*
 * Metrics across node:cluster workers. A scrape of the ops listener lands on any one worker (the listener is shared),
 * so that worker asks the primary, which collects every worker's registry through prom-client's AggregatorRegistry
 * (counters and histograms summed per label set) and answers with the exposition text.
 */

const REQUEST = 'mcp:cluster-metrics-request';
const REPLY = 'mcp:cluster-metrics-reply';
const WAIT_MS = 10_000;

interface Request {
  readonly type: typeof REQUEST;
  readonly id: number;
}

interface Reply {
  readonly type: typeof REPLY;
  readonly id: number;
  readonly text?: string;
  readonly error?: string;
}

function isRequest(message: unknown): message is Request {
  return typeof message === 'object' && message !== null && (message as Request).type === REQUEST && typeof (message as Request).id === 'number';
}

function isReply(message: unknown): message is Reply {
  return typeof message === 'object' && message !== null && (message as Reply).type === REPLY && typeof (message as Reply).id === 'number';
}

/** Worker side: answers the primary's collection with `registry`, and returns how to get the cluster-wide text. */
export function clusterMetricsSource(registry: Registry): () => Promise<string> {
  // Constructing one installs prom-client's worker listener, which answers the primary with the registries set here.
  new AggregatorRegistry();
  AggregatorRegistry.setRegistries([registry]);
  const pending = new Map<number, { resolve: (text: string) => void; reject: (err: Error) => void; timer: NodeJS.Timeout }>();
  let next = 0;
  process.on('message', (message: unknown) => {
    if (!isReply(message)) return;
    const waiting = pending.get(message.id);
    if (waiting === undefined) return;
    pending.delete(message.id);
    clearTimeout(waiting.timer);
    if (message.text !== undefined) waiting.resolve(message.text);
    else waiting.reject(new Error(`cluster metrics: ${message.error ?? 'no answer'}`));
  });
  return () =>
    new Promise<string>((resolve, reject) => {
      const id = next++;
      const timer = setTimeout(() => {
        pending.delete(id);
        reject(new Error(`cluster metrics: the primary did not answer within ${WAIT_MS} ms`));
      }, WAIT_MS);
      timer.unref();
      pending.set(id, { resolve, reject, timer });
      process.send?.({ type: REQUEST, id } satisfies Request);
    });
}

/** Primary side: answers every worker's request with the metrics of all workers. */
export function serveClusterMetrics(): void {
  const aggregator = new AggregatorRegistry();
  cluster.on('message', (worker, message: unknown) => {
    if (!isRequest(message)) return;
    const answer = (reply: Reply) => {
      if (worker.isConnected()) worker.send(reply);
    };
    aggregator.clusterMetrics().then(
      (text) => answer({ type: REPLY, id: message.id, text }),
      (err: unknown) => answer({ type: REPLY, id: message.id, error: err instanceof Error ? err.message : String(err) }),
    );
  });
}

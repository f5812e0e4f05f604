/** What a cluster worker tells the primary once its listeners are up (kept apart so main.ts need not load cluster.ts). */
export const WORKER_READY = { type: 'mcp:worker-ready' } as const;

export function isWorkerReady(message: unknown): boolean {
  return typeof message === 'object' && message !== null && (message as { type?: unknown }).type === WORKER_READY.type;
}

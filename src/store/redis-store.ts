import { randomBytes } from 'node:crypto';
import { Cluster, Redis, type ChainableCommander, type ClusterOptions, type RedisOptions } from 'ioredis';
import { checkTtlMs } from './argument-checks.js';
import { applyStoreWrite, checkWord, type BucketTake, type SetOptions, type Store, type StoreWrite, type TokenBucket, type TokenBucketResult } from './store.js';
import { checkTokenBucket, takeTokensInTurn } from './token-bucket.js';

/**
 * Where Redis is. Exactly one topology: `sentinels` + `sentinelName` (Sentinel), `clusterNodes` (Cluster), or `url`
 * alone. With Sentinel or Cluster, `url` may still be given to carry the data nodes' credentials, TLS (`rediss://`)
 * and, for Sentinel, the database number; its host is then ignored.
 */
export interface RedisConnectionOptions {
  readonly url?: string;
  readonly sentinels?: readonly { readonly host: string; readonly port: number }[];
  readonly sentinelName?: string;
  readonly clusterNodes?: readonly { readonly host: string; readonly port: number }[];
  /**
   * Prepended to every key. Must not contain `{`: Redis Cluster would then hash every key on the prefix's tag and
   * put the whole data set on one shard.
   */
  readonly keyPrefix: string;
  /** Per connection attempt, and the longest `connectRedisStore` waits at startup. Default 5000. */
  readonly connectTimeoutMs?: number;
  /** Longest any one command (and `ping`) may take before it fails. Default 2000. */
  readonly commandTimeoutMs?: number;
}

export type RedisClient = Redis | Cluster;

const DEFAULT_CONNECT_TIMEOUT_MS = 5000;
const DEFAULT_COMMAND_TIMEOUT_MS = 2000;

/**
 * While Redis is down, ioredis parks commands in its offline queue until a reconnect succeeds. These bounds make a
 * dead Redis surface as errors within about a second (a few quick reconnect attempts) instead of requests hanging,
 * while a short blip (a Sentinel failover) is still ridden out. Reconnection itself goes on in the background.
 */
const MAX_RETRIES_PER_REQUEST = 2;
const reconnectDelayMs = (attempt: number): number => Math.min(attempt * 100, 300);

/**
 * Builds an ioredis client for the configured topology. The client gets no ioredis `keyPrefix`: RedisStore applies
 * the prefix itself, in one place (`RedisStore.key`), to commands and scripts alike.
 */
export function createRedisClient(options: RedisConnectionOptions): RedisClient {
  const fromUrl = options.url === undefined ? {} : parseRedisUrl(options.url);
  const common: RedisOptions = {
    connectTimeout: options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
    commandTimeout: options.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS,
    maxRetriesPerRequest: MAX_RETRIES_PER_REQUEST,
    enableOfflineQueue: true,
    // Concurrent requests' commands still share one socket write, through coalesceWrites (below) rather than
    // ioredis's auto-pipelining, whose Pipelines outlive their replies in V8's young generation.
    enableAutoPipelining: false,
    retryStrategy: reconnectDelayMs,
    // disconnect() on an already dead socket leaves a ref'd timer of this length, holding shutdown up.
    disconnectTimeout: 500,
    ...credentialsOf(fromUrl),
  };

  if (options.sentinels !== undefined && options.clusterNodes !== undefined) {
    throw new Error('Redis: give either sentinels or clusterNodes, not both');
  }
  if (options.sentinels !== undefined) {
    if (options.sentinelName === undefined || options.sentinels.length === 0) {
      throw new Error('Redis: Sentinel needs at least one sentinel and sentinelName');
    }
    return coalesceWrites(new Redis({
      ...common,
      sentinels: options.sentinels.map(({ host, port }) => ({ host, port })),
      name: options.sentinelName,
      sentinelRetryStrategy: reconnectDelayMs,
      ...(fromUrl.db === undefined ? {} : { db: fromUrl.db }),
      ...(fromUrl.tls === true ? { tls: {}, enableTLSForSentinelMode: true } : {}),
    }));
  }
  if (options.clusterNodes !== undefined) {
    if (options.clusterNodes.length === 0) throw new Error('Redis: clusterNodes is empty');
    if (fromUrl.db !== undefined && fromUrl.db !== 0) throw new Error('Redis Cluster has only database 0');
    const clusterOptions: ClusterOptions = {
      // Each node's connection is made by the Cluster, not here: it keeps ioredis's auto-pipelining, which also
      // groups commands by the node that serves their slot.
      redisOptions: { ...common, enableAutoPipelining: true, ...(fromUrl.tls === true ? { tls: {} } : {}) },
      // The Cluster-level offline queue has no timeout of its own: with every node down, queued commands would
      // wait for the cluster to come back. Failing at once is right then; a single node's blip is still ridden out
      // by that node's connection.
      enableOfflineQueue: false,
      enableAutoPipelining: true,
      clusterRetryStrategy: reconnectDelayMs,
    };
    return new Cluster(
      options.clusterNodes.map(({ host, port }) => ({ host, port })),
      clusterOptions,
    );
  }
  if (fromUrl.host === undefined) throw new Error('Redis: give url, sentinels + sentinelName, or clusterNodes');
  return coalesceWrites(
    new Redis({
      ...common,
      host: fromUrl.host,
      port: fromUrl.port ?? 6379,
      ...(fromUrl.db === undefined ? {} : { db: fromUrl.db }),
      ...(fromUrl.tls === true ? { tls: { servername: fromUrl.host } } : {}),
    }),
  );
}

/**
 * The commands a turn of the event loop sends go out in one socket write: the first command corks the connection
 * and the check phase uncorks it (Node's `writable.cork()`: writes are buffered until `uncork()` and then handed to
 * the socket's `_writev` together). That is what ioredis's auto-pipelining gained — one write and one Redis read for
 * many concurrent requests, instead of one each (+14 % CPU per introspection without either, bench/README.md) —
 * without its Pipeline objects: each Pipeline defines its `length` as an own accessor whose getter closes over the
 * Pipeline, which keeps it and everything it holds (the batch's commands, replies and callbacks) alive through
 * scavenges until a full collection, so every batch was promoted to the old space (2.3 KB per introspection,
 * measured with V8's sampling heap profiler; bench/README.md, "Memory").
 */
function coalesceWrites(client: Redis): Redis {
  const send = client.sendCommand;
  let corked: Redis['stream'] | undefined;
  const uncork = () => {
    const stream = corked;
    corked = undefined;
    stream?.uncork();
  };
  client.sendCommand = function (this: Redis, ...args: Parameters<Redis['sendCommand']>) {
    if (corked === undefined && this.stream !== undefined && this.status === 'ready') {
      corked = this.stream;
      corked.cork();
      setImmediate(uncork);
    }
    return send.apply(this, args);
  };
  return client;
}

/** Names the Redis target for logs and errors, never with its password. */
export function describeRedisTarget(options: RedisConnectionOptions): string {
  if (options.sentinels !== undefined) {
    return `sentinel master "${options.sentinelName ?? ''}" via ${options.sentinels.map(hostPort).join(',')}`;
  }
  if (options.clusterNodes !== undefined) return `cluster ${options.clusterNodes.map(hostPort).join(',')}`;
  if (options.url === undefined) return 'redis (no url)';
  try {
    const url = new URL(options.url);
    return `${url.protocol}//${url.host}${url.pathname === '/' ? '' : url.pathname}`;
  } catch {
    return 'redis (unparsable url)';
  }
}

/** Connects, waits until Redis answers, and wraps the client; throws a message naming the target on failure. */
export async function connectRedisStore(options: RedisConnectionOptions): Promise<RedisStore> {
  const client = createRedisClient(options);
  const waitMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  let lastError: Error | undefined;
  const remember = (error: Error) => {
    lastError = error;
  };
  client.on('error', remember);
  client.on('node error', remember);
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('timed out')), waitMs);
      client.once('ready', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  } catch {
    client.disconnect();
    const reason = lastError === undefined ? 'no answer' : lastError.message;
    throw new Error(`Redis at ${describeRedisTarget(options)} is not reachable after ${waitMs} ms: ${reason}`);
  } finally {
    client.off('error', remember);
    client.off('node error', remember);
  }
  return new RedisStore({
    client,
    keyPrefix: options.keyPrefix,
    pingTimeoutMs: options.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS,
  });
}

export interface RedisStoreOptions {
  /**
   * A client built without ioredis' own `keyPrefix` (this store prefixes keys itself). A Cluster client from
   * createRedisClient refuses commands until it is ready: use connectRedisStore, which waits.
   */
  readonly client: RedisClient;
  readonly keyPrefix: string;
  /** `ping()` fails after this long even where ioredis would keep queueing (Cluster). Default 2000. */
  readonly pingTimeoutMs?: number;
  /** Connection-level errors (each failed reconnect). Commands fail on their own; this is for logging. */
  readonly onConnectionError?: (error: Error) => void;
}

/*
 * Lua keeps each multi-step operation atomic on the server. The one-key scripts are valid under Redis Cluster
 * whatever the key; the multi-key ones (storeTakeTokens, storeWriteThenRead) run only on a single server or
 * Sentinel's master, and their callers take another path on Cluster.
 */
const scripts = {
  storeConsume: {
    numberOfKeys: 1,
    lua: `
      local value = redis.call('GET', KEYS[1])
      if value then redis.call('DEL', KEYS[1]) end
      return value`,
  },
  storeCompareAndSet: {
    // ARGV: hasExpected ('1' | '0'), expected, next, ttlMs ('' = none)
    numberOfKeys: 1,
    lua: `
      local current = redis.call('GET', KEYS[1])
      if ARGV[1] == '1' then
        if current ~= ARGV[2] then return 0 end
      elseif current then
        return 0
      end
      if ARGV[4] == '' then
        redis.call('SET', KEYS[1], ARGV[3])
      else
        redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
      end
      return 1`,
  },
  storeTakeTokens: {
    // KEYS: the buckets in order; ARGV: nowMs, then burst and perSecond per key. The arithmetic of tokenBucketStep
    // (token-bucket.ts) on each bucket until one refuses: that wait in ms is returned and the buckets after it are
    // not touched (0 = all taken). A bucket's hash expires once it would be full again, when forgetting it is
    // harmless. Several keys: not for Cluster (they lie in different hash slots); one key works everywhere. No
    // numberOfKeys: the caller passes the count first.
    lua: `
      local now = tonumber(ARGV[1])
      for i, key in ipairs(KEYS) do
        local burst = tonumber(ARGV[2 * i])
        local rate = tonumber(ARGV[2 * i + 1])
        local state = redis.call('HMGET', key, 'tokens', 'ts')
        local tokens = tonumber(state[1]) or burst
        local ts = tonumber(state[2]) or now
        if now > ts then
          tokens = math.min(burst, tokens + (now - ts) * rate / 1000)
          ts = now
        end
        local retry = 0
        if tokens >= 1 then
          tokens = tokens - 1
        else
          retry = math.ceil((1 - tokens) * 1000 / rate)
        end
        local refill = math.max(1, math.ceil((burst - tokens) * 1000 / rate))
        redis.call('HSET', key, 'tokens', string.format('%.17g', tokens), 'ts', string.format('%.17g', ts))
        redis.call('PEXPIRE', key, refill)
        if retry > 0 then return retry end
      end
      return 0`,
  },
  storeAddWord: {
    // ARGV[1] = the word (no whitespace, checked by the caller). 1 = added, 0 = already there. SET clears any expiry.
    numberOfKeys: 1,
    lua: `
      local current = redis.call('GET', KEYS[1])
      if not current or current == '' then
        redis.call('SET', KEYS[1], ARGV[1])
        return 1
      end
      for word in string.gmatch(current, '%S+') do
        if word == ARGV[1] then return 0 end
      end
      redis.call('SET', KEYS[1], current .. ' ' .. ARGV[1])
      return 1`,
  },
  storeRemoveWord: {
    // ARGV[1] = the word, ARGV[2] = the expiry (ms) of the "" the last word leaves. 1 = removed, 0 = not there.
    numberOfKeys: 1,
    lua: `
      local current = redis.call('GET', KEYS[1])
      if not current then return 0 end
      local rest = {}
      local found = false
      for word in string.gmatch(current, '%S+') do
        if word == ARGV[1] then found = true else rest[#rest + 1] = word end
      end
      if not found then return 0 end
      if #rest == 0 then
        redis.call('SET', KEYS[1], '', 'PX', ARGV[2])
      else
        redis.call('SET', KEYS[1], table.concat(rest, ' '))
      end
      return 1`,
  },
  storeWriteThenRead: {
    // KEYS: the written keys, then the read keys; ARGV: the number of writes, then op and value per write. Every
    // type is checked before the first write, so a wrong one changes nothing (a script stops at an error, keeping
    // what it wrote). addWord as storeAddWord; the reads as MGET (a key of another type reads as absent). Several
    // keys: not for Cluster (different hash slots). No numberOfKeys: the caller passes the count first.
    lua: `
      local n = tonumber(ARGV[1])
      for i = 1, n do
        local op = ARGV[2 * i]
        if op ~= 'set' then
          local found = redis.call('TYPE', KEYS[i]).ok
          local wanted = 'string'
          if op == 'addToSet' then wanted = 'set' end
          if found ~= 'none' and found ~= wanted then
            return redis.error_reply('WRONGTYPE Operation against a key holding the wrong kind of value')
          end
        end
      end
      for i = 1, n do
        local op, key, value = ARGV[2 * i], KEYS[i], ARGV[2 * i + 1]
        if op == 'set' then
          redis.call('SET', key, value)
        elseif op == 'addToSet' then
          redis.call('SADD', key, value)
        else
          local current = redis.call('GET', key)
          if not current or current == '' then
            redis.call('SET', key, value)
          else
            local present = false
            for word in string.gmatch(current, '%S+') do
              if word == value then present = true end
            end
            if not present then redis.call('SET', key, current .. ' ' .. value) end
          end
        end
      end
      if #KEYS == n then return {} end
      return redis.call('MGET', unpack(KEYS, n + 1))`,
  },
  storeReleaseLock: {
    // ARGV[1] = owner token; a lock that expired and was taken by someone else is left alone.
    numberOfKeys: 1,
    lua: `
      if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
      return 0`,
  },
} as const;

interface ScriptCommands {
  storeConsume(key: string): Promise<string | null>;
  storeCompareAndSet(key: string, hasExpected: string, expected: string, next: string, ttlMs: string): Promise<number>;
  storeReleaseLock(key: string, owner: string): Promise<number>;
  storeAddWord(key: string, word: string): Promise<number>;
  storeRemoveWord(key: string, word: string, emptyTtlMs: string): Promise<number>;
  storeTakeTokens(keyCount: number, ...keysThenArgs: string[]): Promise<number>;
  storeWriteThenRead(keyCount: number, ...keysThenArgs: string[]): Promise<(string | null)[]>;
}

export class RedisStore implements Store {
  readonly kind = 'redis' as const;
  private readonly client: RedisClient;
  private readonly run: ScriptCommands;
  private readonly prefix: string;
  private readonly pingTimeoutMs: number;
  private closed = false;

  constructor(options: RedisStoreOptions) {
    const clientPrefix = (options.client.options as { keyPrefix?: string }).keyPrefix;
    if (clientPrefix !== undefined && clientPrefix !== '') {
      throw new Error('RedisStore: build the client without keyPrefix; pass keyPrefix to RedisStore instead');
    }
    if (options.keyPrefix.includes('{')) throw new Error('RedisStore: keyPrefix must not contain "{"');
    this.client = options.client;
    this.prefix = options.keyPrefix;
    this.pingTimeoutMs = options.pingTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
    for (const [name, definition] of Object.entries(scripts)) this.client.defineCommand(name, definition);
    this.run = this.client as unknown as ScriptCommands;
    // ioredis prints unhandled 'error' events to stderr on every reconnect attempt; failures reach callers through
    // rejected commands and ping() instead.
    const onConnectionError = options.onConnectionError;
    this.client.on('error', (error: Error) => onConnectionError?.(error));
  }

  async get(key: string): Promise<string | undefined> {
    this.assertOpen();
    return orUndefined(await this.client.get(this.key(key)));
  }

  async getMany(keys: readonly string[]): Promise<(string | undefined)[]> {
    this.assertOpen();
    if (keys.length === 0) return [];
    if (this.client instanceof Cluster) {
      // MGET across hash slots is refused by Cluster; single GETs are routed per slot and pipelined by ioredis.
      return Promise.all(keys.map((key) => this.getIgnoringType(key)));
    }
    const values = await this.client.mget(keys.map((key) => this.key(key)));
    return values.map(orUndefined);
  }

  async set(key: string, value: string, options: SetOptions = {}): Promise<boolean> {
    this.assertOpen();
    const ttlMs = checkTtlMs(options.ttlMs);
    const prefixed = this.key(key);
    const onlyIfAbsent = options.onlyIfAbsent === true;
    let reply: string | null;
    if (ttlMs === undefined) {
      reply = onlyIfAbsent ? await this.client.set(prefixed, value, 'NX') : await this.client.set(prefixed, value);
    } else {
      reply = onlyIfAbsent
        ? await this.client.set(prefixed, value, 'PX', ttlMs, 'NX')
        : await this.client.set(prefixed, value, 'PX', ttlMs);
    }
    return reply === 'OK';
  }

  async delete(...keys: string[]): Promise<number> {
    this.assertOpen();
    if (keys.length === 0) return 0;
    if (this.client instanceof Cluster) {
      const counts = await Promise.all([...new Set(keys)].map((key) => this.client.del(this.key(key))));
      return counts.reduce((sum, count) => sum + count, 0);
    }
    return this.client.del(...keys.map((key) => this.key(key)));
  }

  async consume(key: string): Promise<string | undefined> {
    this.assertOpen();
    return orUndefined(await this.run.storeConsume(this.key(key)));
  }

  async compareAndSet(key: string, expected: string | undefined, next: string, options: SetOptions = {}): Promise<boolean> {
    this.assertOpen();
    const ttlMs = checkTtlMs(options.ttlMs);
    const wrote = await this.run.storeCompareAndSet(
      this.key(key),
      expected === undefined ? '0' : '1',
      expected ?? '',
      next,
      ttlMs === undefined ? '' : String(ttlMs),
    );
    return wrote === 1;
  }

  async addToSet(key: string, member: string, ttlMs?: number): Promise<void> {
    this.assertOpen();
    const checkedTtl = checkTtlMs(ttlMs);
    const prefixed = this.key(key);
    if (checkedTtl === undefined) {
      await this.client.sadd(prefixed, member);
      return;
    }
    await execOrThrow(this.client.multi().sadd(prefixed, member).pexpire(prefixed, checkedTtl));
  }

  async removeFromSet(key: string, member: string): Promise<void> {
    this.assertOpen();
    await this.client.srem(this.key(key), member);
  }

  async setMembers(key: string): Promise<string[]> {
    this.assertOpen();
    return this.client.smembers(this.key(key));
  }

  async takeToken(key: string, bucket: TokenBucket, nowMs: number): Promise<TokenBucketResult> {
    this.assertOpen();
    checkTokenBucket(bucket, nowMs);
    const retryAfterMs = await this.run.storeTakeTokens(1, this.key(key), String(nowMs), String(bucket.burst), String(bucket.perSecond));
    return retryAfterMs === 0 ? { allowed: true } : { allowed: false, retryAfterMs };
  }

  async takeTokens(takes: readonly BucketTake[], nowMs: number): Promise<TokenBucketResult> {
    this.assertOpen();
    for (const take of takes) checkTokenBucket(take.bucket, nowMs);
    if (this.client instanceof Cluster || takes.length < 2) {
      // Cluster refuses a script over keys of several hash slots: one bucket after the other.
      return takeTokensInTurn(takes, (key, bucket, now) => this.takeToken(key, bucket, now), nowMs);
    }
    const args = [String(nowMs), ...takes.flatMap((take) => [String(take.bucket.burst), String(take.bucket.perSecond)])];
    const retryAfterMs = await this.run.storeTakeTokens(takes.length, ...takes.map((take) => this.key(take.key)), ...args);
    return retryAfterMs === 0 ? { allowed: true } : { allowed: false, retryAfterMs };
  }

  async addWord(key: string, word: string): Promise<boolean> {
    this.assertOpen();
    return (await this.run.storeAddWord(this.key(key), checkWord(word))) === 1;
  }

  async removeWord(key: string, word: string, emptyTtlMs: number): Promise<boolean> {
    this.assertOpen();
    const ttlMs = checkTtlMs(emptyTtlMs) as number;
    return (await this.run.storeRemoveWord(this.key(key), checkWord(word), String(ttlMs))) === 1;
  }

  async writeThenRead(writes: readonly StoreWrite[], readKeys: readonly string[]): Promise<(string | undefined)[]> {
    this.assertOpen();
    for (const write of writes) if (write.op === 'addWord') checkWord(write.word);
    if (this.client instanceof Cluster) {
      // The keys lie in different hash slots: the writes, then the reads (each read still follows every write). Every
      // write is settled before a failure is reported, so a caller's clean-up cannot race one still under way.
      const settled = await Promise.allSettled(writes.map((write) => applyStoreWrite(this, write)));
      const failed = settled.find((outcome) => outcome.status === 'rejected');
      if (failed !== undefined) throw failed.reason;
      return this.getMany(readKeys);
    }
    const keys = [...writes.map((write) => this.key(write.key)), ...readKeys.map((key) => this.key(key))];
    const args = writes.flatMap((write) => [write.op, write.op === 'set' ? write.value : write.op === 'addToSet' ? write.member : write.word]);
    const values = await this.run.storeWriteThenRead(keys.length, ...keys, String(writes.length), ...args);
    return values.map(orUndefined);
  }

  async tryLock(key: string, ttlMs: number): Promise<(() => Promise<void>) | undefined> {
    this.assertOpen();
    const checkedTtl = checkTtlMs(ttlMs) as number;
    const prefixed = this.key(key);
    const owner = randomBytes(16).toString('hex');
    const reply = await this.client.set(prefixed, owner, 'PX', checkedTtl, 'NX');
    if (reply !== 'OK') return undefined;
    return async () => {
      await this.run.storeReleaseLock(prefixed, owner);
    };
  }

  async hasKeyWithPrefix(prefix: string): Promise<boolean> {
    this.assertOpen();
    const pattern = `${globEscape(this.key(prefix))}*`;
    // SCAN visits one node's keys: a Cluster's keys are spread over its masters, each scanned in turn.
    const nodes: Redis[] = this.client instanceof Cluster ? this.client.nodes('master') : [this.client];
    for (const node of nodes) {
      let cursor = '0';
      do {
        const [next, keys] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
        if (keys.length > 0) return true;
        cursor = next;
      } while (cursor !== '0');
    }
    return false;
  }

  async ping(): Promise<void> {
    this.assertOpen();
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      const error = new Error(`Redis did not answer PING within ${this.pingTimeoutMs} ms`);
      timer = setTimeout(() => reject(error), this.pingTimeoutMs);
    });
    try {
      await Promise.race([this.client.ping(), deadline]);
    } finally {
      clearTimeout(timer);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.client.status === 'end') return;
    if (this.client.status !== 'ready') {
      // QUIT would wait in the offline queue for a connection that may never come.
      this.client.disconnect();
      return;
    }
    try {
      await this.client.quit();
    } catch {
      this.client.disconnect();
    }
  }

  private assertOpen(): void {
    // Without this, a closed Cluster client answers "None of startup nodes is available", which misleads.
    if (this.closed) throw new Error('RedisStore is closed');
  }

  private key(key: string): string {
    return this.prefix + key;
  }

  private async getIgnoringType(key: string): Promise<string | undefined> {
    try {
      return orUndefined(await this.client.get(this.key(key)));
    } catch (error) {
      // Match MGET, which reads a key of another type as absent.
      if (error instanceof Error && error.message.startsWith('WRONGTYPE')) return undefined;
      throw error;
    }
  }
}

/** `text` as a SCAN MATCH pattern that matches only itself (glob metacharacters escaped). */
function globEscape(text: string): string {
  return text.replace(/[\\*?[\]]/g, (char) => `\\${char}`);
}

function orUndefined(value: string | null): string | undefined {
  return value ?? undefined;
}

async function execOrThrow(transaction: ChainableCommander): Promise<void> {
  const results = await transaction.exec();
  if (results === null) throw new Error('Redis transaction aborted');
  for (const [error] of results) if (error !== null) throw error;
}

interface ParsedRedisUrl {
  host?: string;
  port?: number;
  username?: string;
  password?: string;
  db?: number;
  tls?: boolean;
}

function parseRedisUrl(raw: string): ParsedRedisUrl {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new Error('Redis url is not a valid URL');
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') {
    throw new Error(`Redis url must start with redis:// or rediss://, got ${url.protocol}//`);
  }
  const dbPath = url.pathname.replace(/^\//, '');
  if (dbPath !== '' && !/^\d+$/.test(dbPath)) {
    throw new Error(`Redis url path must be a database number, got /${dbPath}`);
  }
  return {
    // URL keeps IPv6 literals bracketed; sockets want them bare.
    ...(url.hostname === '' ? {} : { host: url.hostname.replace(/^\[(.*)\]$/, '$1') }),
    ...(url.port === '' ? {} : { port: Number(url.port) }),
    ...(url.username === '' ? {} : { username: decodeURIComponent(url.username) }),
    ...(url.password === '' ? {} : { password: decodeURIComponent(url.password) }),
    ...(dbPath === '' ? {} : { db: Number(dbPath) }),
    tls: url.protocol === 'rediss:',
  };
}

function credentialsOf(parsed: ParsedRedisUrl): Pick<RedisOptions, 'username' | 'password'> {
  return {
    ...(parsed.username === undefined ? {} : { username: parsed.username }),
    ...(parsed.password === undefined ? {} : { password: parsed.password }),
  };
}

function hostPort({ host, port }: { readonly host: string; readonly port: number }): string {
  return `${host}:${port}`;
}

/**
 * The HTTP API of a Node peer (README "HTTP API"): `GET/PUT/DELETE /kv/:key`, `GET /status`,
 * `GET /metrics` (Prometheus text, prom-client), on node:http without a framework. The
 * process shell (peer.node.ts) mounts it; the CLI and the cluster benchmark talk to it.
 *
 * Contract:
 *
 *   const api = createHttpApi({ node, token, requireTokenForLoopback?, limits?, onError?, metrics? });
 *   const address = await api.listen({ host: '127.0.0.1', port: 0 });
 *   ...
 *   await api.close();
 *
 * - `node` is anything with the MeshNode's KV methods and status (`KvNode`); the API never
 *   ticks it, closes it or keeps a reference past `close()`. The shell closes the API
 *   before the node, so no request reaches a closed node except those already in flight
 *   (they get 503 CLOSED).
 * - `metrics` (metrics.node.ts) is the node's metrics, fed by the shell's storage and transport
 *   wrappers and observer; /metrics sets its status gauges from one `node.status()` and
 *   serves its registry, with the API's own request metrics added to it (one API per
 *   NodeMetrics: a second would register them twice). Without it the API makes its own.
 * - `api.server` is the node:http Server, configured with the limits below; `listen`
 *   resolves with its address once it listens, or rejects with the listen error.
 *   `close()` stops accepting, closes idle keep-alive connections, lets requests in flight
 *   finish (each is bounded by its deadline) and resolves when the server is closed;
 *   connections still open after `limits.closeGraceMs` are destroyed.
 * - Auth: a request from a non-loopback address (or from any address with
 *   `requireTokenForLoopback`) must carry `Authorization: Bearer <token>`, else 401 with
 *   no data. The comparison is in constant time (SHA-256 digests of both, timingSafeEqual).
 * - Every refusal is JSON `{code, message, details?}`; codes are the MeshKvError codes and
 *   the API's own (`HttpCode`). Bad input never throws out of the handler: an unexpected
 *   error answers 500 INTERNAL and is passed to `onError` (the shell logs it).
 * - Bounds: bodies over limits.maxValueBytes are refused with 413 before they are read
 *   whole (Content-Length first, then counting while streaming), headers over
 *   `maxHeaderBytes` get node's 431, at most `maxConcurrentRequests` are served at once
 *   (past it 503 OVERLOADED; so too past `maxPipelinedRequests` on one connection),
 *   `maxConnections` sockets, and slow clients are cut by
 *   `headersTimeoutMs` / `requestTimeoutMs`. Keep-alive: a connection is only closed when a
 *   refused request's body cannot be skipped cheaply (unknown or over-limit length).
 * - Pipelining: requests of one connection run one after another, except that GETs run
 *   side by side (RFC 9112 §9.3.2), so a GET pipelined behind a PUT reads it; node:http
 *   sends the answers in request order.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { type AddressInfo, isIPv4, type Socket } from 'node:net';
import { limits as storageLimits } from '@meshkv/storage';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { ErrorCode, isMeshKvError } from './errors.ts';
import type { DeleteOptions, GetOptions, MeshNode, PutOptions } from './mesh-node.ts';
import { NodeMetrics } from './metrics.node.ts';

/** What the API needs of a node: MeshNode's KV methods and status. */
export type KvNode = Pick<MeshNode, 'put' | 'get' | 'delete' | 'status'>;

/** The API's own codes, beside the MeshKvError codes. */
export const HttpCode = {
  /** GET or DELETE of a key that holds no value (the library's null / false). */
  KEY_NOT_FOUND: 'KEY_NOT_FOUND',
  /** A path that is not a route. */
  ROUTE_NOT_FOUND: 'ROUTE_NOT_FOUND',
  /** A route called with a method it does not serve (the `Allow` header lists them). */
  METHOD_NOT_ALLOWED: 'METHOD_NOT_ALLOWED',
  /** A query parameter that is unknown, repeated, or holds a value it cannot take. */
  QUERY_INVALID: 'QUERY_INVALID',
  /** The request needs `Authorization: Bearer <cluster token>` and lacked a right one. */
  UNAUTHORIZED: 'UNAUTHORIZED',
  /** The request failed in a way the API did not expect (a bug: see the peer's log). */
  INTERNAL: 'INTERNAL',
} as const;
export type HttpCode = (typeof HttpCode)[keyof typeof HttpCode];

export interface HttpApiLimits {
  /** Request header bytes (node's maxHeaderSize; past it node answers 431). */
  readonly maxHeaderBytes: number;
  /** Requests served at once; one more gets 503 OVERLOADED. */
  readonly maxConcurrentRequests: number;
  /** Requests of one connection running or waiting (pipelined); one more gets 503 OVERLOADED. */
  readonly maxPipelinedRequests: number;
  /** Open sockets; past it node drops new connections. */
  readonly maxConnections: number;
  /** A client must send its whole header within this (node answers 408). */
  readonly headersTimeoutMs: number;
  /** A client must send its whole request, body included, within this (node answers 408). */
  readonly requestTimeoutMs: number;
  /** An idle keep-alive connection is closed after this. */
  readonly keepAliveTimeoutMs: number;
  /** close() destroys the connections still open this long after it was called. */
  readonly closeGraceMs: number;
}

export const httpApiDefaults: HttpApiLimits = Object.freeze({
  maxHeaderBytes: 16 * 1024,
  maxConcurrentRequests: 1024,
  maxPipelinedRequests: 64,
  maxConnections: 4096,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  keepAliveTimeoutMs: 5_000,
  closeGraceMs: 65_000,
});

export interface HttpApiOptions {
  readonly node: KvNode;
  /** The cluster token: non-loopback requests must carry it as a Bearer token. */
  readonly token: string;
  /** Loopback requests need the token too (default false: local tools skip it). */
  readonly requireTokenForLoopback?: boolean;
  readonly limits?: Partial<HttpApiLimits>;
  /** An unexpected error while serving (answered 500 INTERNAL). */
  readonly onError?: (error: unknown) => void;
  /**
   * The node's metrics (metrics.node.ts), fed by the shell's storage, transport and observer
   * wrappers; /metrics serves its registry. Default: one of its own (status gauges only).
   */
  readonly metrics?: NodeMetrics;
}

export interface HttpApi {
  readonly server: Server;
  /** The metrics registry /metrics serves (the shell may register its own metrics). */
  readonly metrics: Registry;
  listen(address: { host: string; port: number }): Promise<AddressInfo>;
  close(): Promise<void>;
}

/** The largest token accepted in options (the header itself is bounded by maxHeaderBytes). */
const MAX_TOKEN_BYTES = 4096;
/** `?timeout=` digits: more would pass any deadline bound anyway. */
const MAX_TIMEOUT_DIGITS = 9;
const KV_PREFIX = '/kv/';
const KV_METHODS = 'GET, PUT, DELETE';

type Op = 'get' | 'put' | 'delete' | 'status' | 'metrics' | 'other';

/** HTTP status of each MeshKvError code (README "HTTP API" says why ACK_INCOMPLETE is 500). */
const statusOfCode: Readonly<Record<ErrorCode, number>> = {
  [ErrorCode.KEY_INVALID]: 400,
  [ErrorCode.VALUE_INVALID]: 400,
  [ErrorCode.VALUE_TOO_LARGE]: 413,
  [ErrorCode.UNAVAILABLE]: 503,
  [ErrorCode.OVERLOADED]: 503,
  [ErrorCode.CLOSED]: 503,
  [ErrorCode.TIMEOUT]: 504,
  [ErrorCode.OUTCOME_UNKNOWN]: 504,
  [ErrorCode.ACK_INCOMPLETE]: 500,
};

/** `http://` origins of this machine: 127.x.x.x, localhost, [::1], any port. */
const LOOPBACK_ORIGIN =
  /^http:\/\/(?:127\.\d{1,3}\.\d{1,3}\.\d{1,3}|localhost|\[::1\])(?::\d{1,5})?$/;

/** 127.0.0.0/8 and ::1, also as IPv4-mapped IPv6 (a dual-stack listener's view). */
export function isLoopbackAddress(address: string | undefined): boolean {
  if (address === undefined) return false;
  if (address === '::1') return true;
  const v4 = address.startsWith('::ffff:') ? address.slice('::ffff:'.length) : address;
  return v4.startsWith('127.') && isIPv4(v4);
}

/** The `{op}` label object of each operation, made once (prom-client keeps no reference). */
const opLabels: Readonly<Record<Op, { readonly op: Op }>> = {
  get: { op: 'get' },
  put: { op: 'put' },
  delete: { op: 'delete' },
  status: { op: 'status' },
  metrics: { op: 'metrics' },
  other: { op: 'other' },
};

/**
 * The API's own request metrics, in the registry of the node's metrics (metrics.node.ts).
 * The request counts and the in-flight gauge are plain numbers handed to prom-client when
 * it is scraped (`collect`): a prom-client `inc` hashes and checks its labels on every call.
 */
class HttpMetrics {
  readonly requests: Counter;
  readonly durationSeconds: Histogram;
  readonly inFlight: Gauge;
  /** Answered requests by operation, then by code (OK or the error code). */
  private readonly answered = new Map<Op, Map<string, number>>();

  constructor(registry: Registry, inFlight: () => number) {
    const answered = this.answered;
    this.requests = new Counter({
      name: 'meshkv_http_requests_total',
      help: 'HTTP requests answered, by operation and outcome code (OK or the error code)',
      labelNames: ['op', 'code'] as const,
      registers: [registry],
      collect() {
        this.reset();
        for (const [op, codes] of answered) {
          for (const [code, count] of codes) this.inc({ op, code }, count);
        }
      },
    });
    this.durationSeconds = new Histogram({
      name: 'meshkv_http_request_duration_seconds',
      help: 'Time from a request to its answer, by operation',
      labelNames: ['op'] as const,
      buckets: [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
      ],
      registers: [registry],
    });
    this.inFlight = new Gauge({
      name: 'meshkv_http_requests_in_flight',
      help: 'HTTP requests being served',
      registers: [registry],
      collect() {
        this.set(inFlight());
      },
    });
  }

  /** One answer of `op` with `code`, `seconds` after the request came. */
  count(op: Op, code: string, seconds: number): void {
    let codes = this.answered.get(op);
    if (codes === undefined) {
      codes = new Map();
      this.answered.set(op, codes);
    }
    codes.set(code, (codes.get(code) ?? 0) + 1);
    this.durationSeconds.observe(opLabels[op], seconds);
  }
}

/** The headers of an answer without a body (node only reads them). */
const noBodyHeaders: readonly string[] = Object.freeze(['Content-Length', '0']);

/** Where a response keeps its Exchange, for the shared 'close' listener. */
const kExchange = Symbol('meshkv.exchange');
type AnsweringResponse = ServerResponse & { [kExchange]: Exchange };

/** One request's bookkeeping: its connection's queue, what /metrics counts once answered. */
interface Exchange {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  /** performance.now() when it came. */
  readonly startedMs: number;
  /** GET: may run beside other safe requests of its connection. */
  readonly safe: boolean;
  readonly connection: ConnectionRequests;
  op: Op;
  state: 'waiting' | 'running' | 'done';
  answered: boolean;
  /** No longer counted in flight (its response closed, or its connection did first). */
  gone: boolean;
}

/**
 * The requests of one connection (RFC 9112 §9.3.2: pipelined requests may be processed in
 * parallel only if they are all safe; answers go out in request order, which node:http
 * does). A request starts when nothing runs on its connection, or when it is safe, only
 * safe ones run and none waits before it; else it waits for those before it, so a GET
 * pipelined behind a PUT of its key reads that PUT.
 */
interface ConnectionRequests {
  readonly socket: Socket;
  /** From a loopback address (auth: loopback requests may skip the token). */
  readonly loopback: boolean;
  running: number;
  runningUnsafe: number;
  readonly waiting: Exchange[];
}

class HttpApiServer implements HttpApi {
  readonly server: Server;
  readonly metrics: Registry;
  private readonly node: KvNode;
  private readonly tokenDigest: Buffer;
  private readonly requireTokenForLoopback: boolean;
  private readonly limits: HttpApiLimits;
  private readonly onError: (error: unknown) => void;
  private readonly nodeMetrics: NodeMetrics;
  private readonly httpMetrics: HttpMetrics;
  private inFlight = 0;
  private readonly connections = new WeakMap<Socket, ConnectionRequests>();
  private closing: Promise<void> | null = null;

  constructor(options: HttpApiOptions) {
    const token: unknown = options.token;
    if (
      typeof token !== 'string' ||
      token.length === 0 ||
      Buffer.byteLength(token) > MAX_TOKEN_BYTES
    ) {
      throw new RangeError(
        `the token must be a non-empty string of at most ${MAX_TOKEN_BYTES} bytes`,
      );
    }
    const limits: HttpApiLimits = Object.assign({}, httpApiDefaults, options.limits);
    for (const [name, value] of Object.entries(limits)) {
      if (!Number.isSafeInteger(value) || value < 1) {
        throw new RangeError(`limits.${name} must be a positive integer, got ${String(value)}`);
      }
    }
    this.node = options.node;
    this.tokenDigest = sha256(options.token);
    this.requireTokenForLoopback = options.requireTokenForLoopback ?? false;
    this.limits = limits;
    this.onError = options.onError ?? (() => {});
    this.nodeMetrics = options.metrics ?? new NodeMetrics();
    this.metrics = this.nodeMetrics.registry;
    this.httpMetrics = new HttpMetrics(this.metrics, () => this.inFlight);
    this.server = createHttpServer(
      { maxHeaderSize: limits.maxHeaderBytes, requestTimeout: limits.requestTimeoutMs },
      (req, res) => this.serve(req, res),
    );
    this.server.headersTimeout = limits.headersTimeoutMs;
    this.server.keepAliveTimeout = limits.keepAliveTimeoutMs;
    this.server.maxConnections = limits.maxConnections;
    // `Expect: 100-continue`: refuse an oversized body before the client sends it.
    this.server.on('checkContinue', (req, res) => {
      if (declaredLength(req) > storageLimits.maxValueBytes) this.serve(req, res);
      else {
        res.writeContinue();
        this.serve(req, res);
      }
    });
  }

  listen(address: { host: string; port: number }): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      const onError = (error: Error) => reject(error);
      this.server.once('error', onError);
      this.server.listen(address.port, address.host, () => {
        this.server.off('error', onError);
        resolve(this.server.address() as AddressInfo);
      });
    });
  }

  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      if (!this.server.listening) return resolve();
      const grace = setTimeout(() => this.server.closeAllConnections(), this.limits.closeGraceMs);
      grace.unref();
      this.server.close(() => {
        clearTimeout(grace);
        resolve();
      });
      this.server.closeIdleConnections();
    });
    return this.closing;
  }

  // ---- Serving ----------------------------------------------------------------------------

  private serve(req: IncomingMessage, res: ServerResponse): void {
    let connection = this.connections.get(req.socket);
    if (connection === undefined) {
      connection = {
        socket: req.socket,
        loopback: isLoopbackAddress(req.socket.remoteAddress),
        running: 0,
        runningUnsafe: 0,
        waiting: [],
      };
      this.connections.set(req.socket, connection);
    }
    const x: Exchange = {
      req,
      res,
      startedMs: performance.now(),
      safe: req.method === 'GET',
      connection,
      op: 'other',
      state: 'waiting',
      answered: false,
      gone: false,
    };
    this.inFlight++;
    (res as AnsweringResponse)[kExchange] = x;
    res.on('close', this.onResponseClose);
    if (this.inFlight > this.limits.maxConcurrentRequests) {
      this.overloaded(x, 'maxConcurrentRequests', 'HTTP requests are being served');
    } else if (connection.running + connection.waiting.length >= this.limits.maxPipelinedRequests) {
      this.overloaded(x, 'maxPipelinedRequests', 'requests of this connection are pending');
    } else if (
      connection.running === 0 ||
      (x.safe && connection.runningUnsafe === 0 && connection.waiting.length === 0)
    ) {
      this.start(x);
    } else {
      connection.waiting.push(x);
    }
  }

  private overloaded(
    x: Exchange,
    bound: 'maxConcurrentRequests' | 'maxPipelinedRequests',
    what: string,
  ): void {
    const limit = this.limits[bound];
    const message = `the node is overloaded: ${bound} (${limit}) ${what}; nothing was done, retry later`;
    this.error(x, 503, ErrorCode.OVERLOADED, message, { bound, limit, mayHaveApplied: false });
  }

  private start(x: Exchange): void {
    x.state = 'running';
    x.connection.running++;
    if (!x.safe) x.connection.runningUnsafe++;
    // route() is async: whatever it throws arrives here as a rejection.
    this.route(x).catch((error: unknown) => this.fail(x, error));
  }

  /** A response's 'close' (it fires once): one listener for all, no closure per request. */
  private readonly onResponseClose: (this: AnsweringResponse) => void = (() => {
    const api = this;
    return function onResponseClose(this: AnsweringResponse) {
      api.gone(this[kExchange]);
    };
  })();

  private gone(x: Exchange): void {
    if (x.gone) return;
    x.gone = true;
    this.inFlight--;
    this.finished(x);
  }

  private dropWaiting(connection: ConnectionRequests): void {
    for (const x of connection.waiting.splice(0)) this.gone(x);
  }

  /** `x` was answered or its client went away: the requests waiting behind it may start. */
  private finished(x: Exchange): void {
    const connection = x.connection;
    if (x.state === 'waiting') {
      const at = connection.waiting.indexOf(x);
      if (at >= 0) connection.waiting.splice(at, 1);
      x.state = 'done';
      return;
    }
    if (x.state === 'done') return;
    x.state = 'done';
    connection.running--;
    if (!x.safe) connection.runningUnsafe--;
    // Responses of requests still waiting are not attached to the socket yet, so node never
    // closes them: the end of the last running one (its close comes with the socket's) does.
    if (connection.socket.destroyed) {
      this.dropWaiting(connection);
      return;
    }
    for (;;) {
      const next = connection.waiting[0];
      if (next === undefined) break;
      if (connection.running > 0 && !(next.safe && connection.runningUnsafe === 0)) break;
      connection.waiting.shift();
      this.start(next);
    }
  }

  private async route(x: Exchange): Promise<void> {
    if (!this.authorized(x)) {
      x.res.setHeader('WWW-Authenticate', 'Bearer');
      return this.error(
        x,
        401,
        HttpCode.UNAUTHORIZED,
        'this request needs the header "Authorization: Bearer <cluster token>" with the right token',
      );
    }
    const url = x.req.url ?? '';
    const queryAt = url.indexOf('?');
    const path = queryAt < 0 ? url : url.slice(0, queryAt);
    const query = queryAt < 0 ? '' : url.slice(queryAt + 1);
    const method = x.req.method ?? '';
    if (path.startsWith(KV_PREFIX)) {
      x.op =
        method === 'GET'
          ? 'get'
          : method === 'PUT'
            ? 'put'
            : method === 'DELETE'
              ? 'delete'
              : 'other';
      if (x.op === 'other') return this.methodNotAllowed(x, KV_METHODS);
      return this.kv(x, path.slice(KV_PREFIX.length), query);
    }
    if (path === '/status' || path === '/metrics') {
      x.op = path === '/status' ? 'status' : 'metrics';
      if (method !== 'GET') return this.methodNotAllowed(x, 'GET');
      if (query !== '')
        return this.error(x, 400, HttpCode.QUERY_INVALID, `${path} takes no query parameters`);
      if (x.op === 'status') {
        // A page served from this machine (the demo, on the signaling server's origin)
        // reads the peers' statuses for its cluster view; pages of other sites may not.
        const origin = x.req.headers.origin;
        if (origin !== undefined && LOOPBACK_ORIGIN.test(origin)) {
          x.res.setHeader('access-control-allow-origin', origin);
        }
        x.res.setHeader('vary', 'origin');
        return this.send(x, 200, 'application/json', JSON.stringify(this.node.status()));
      }
      this.nodeMetrics.observe(this.node.status());
      const text = await this.metrics.metrics();
      return this.send(x, 200, this.metrics.contentType, text);
    }
    return this.error(
      x,
      404,
      HttpCode.ROUTE_NOT_FOUND,
      `no route ${JSON.stringify(path.slice(0, 200))}: the routes are /kv/:key (GET, PUT, DELETE), /status and /metrics (GET)`,
    );
  }

  private async kv(x: Exchange, encodedKey: string, query: string): Promise<void> {
    if (encodedKey.includes('/')) {
      return this.error(
        x,
        400,
        ErrorCode.KEY_INVALID,
        'the key is one path segment: a "/" in a key is written %2F',
        { reason: 'slash' },
      );
    }
    let key: string;
    try {
      key = encodedKey.includes('%') ? decodeURIComponent(encodedKey) : encodedKey;
    } catch {
      return this.error(
        x,
        400,
        ErrorCode.KEY_INVALID,
        'the key is not a well-formed percent-encoding of UTF-8',
        { reason: 'percent_encoding' },
      );
    }
    const params = parseQuery(query, x.op);
    if (typeof params === 'string') return this.error(x, 400, HttpCode.QUERY_INVALID, params);
    if (x.op === 'get') {
      const value = await this.node.get(key, params as GetOptions);
      if (value === null)
        return this.error(x, 404, HttpCode.KEY_NOT_FOUND, 'the key holds no value');
      return this.send(x, 200, 'application/octet-stream', value);
    }
    if (x.op === 'delete') {
      const removed = await this.node.delete(key, params as DeleteOptions);
      if (!removed)
        return this.error(
          x,
          404,
          HttpCode.KEY_NOT_FOUND,
          'the key held no value: nothing was deleted',
        );
      return this.send(x, 200, null, null);
    }
    const value = await this.readBody(x);
    if (value === null) return;
    await this.node.put(key, value, params as PutOptions);
    return this.send(x, 200, null, null);
  }

  /** The whole body, or null once it answered 413 (or the client went away). */
  private readBody(x: Exchange): Promise<Uint8Array | null> {
    const maxBytes = storageLimits.maxValueBytes;
    const declared = declaredLength(x.req);
    if (declared > maxBytes) {
      this.tooLarge(x, declared, true);
      return Promise.resolve(null);
    }
    // The handlers are unnamed: tsx (esbuild keepNames) names every named closure with an
    // Object.defineProperty call, per request here.
    return new Promise((resolve) => {
      const chunks: Buffer[] = [];
      let sizeBytes = 0;
      x.req.on('data', (chunk: Buffer) => {
        if (sizeBytes > maxBytes) return;
        sizeBytes += chunk.byteLength;
        if (sizeBytes <= maxBytes) {
          chunks.push(chunk);
          return;
        }
        // Stop reading: no more data events, the connection closes after the answer.
        x.req.pause();
        chunks.length = 0;
        this.tooLarge(x, sizeBytes, false);
        resolve(null);
      });
      x.req.once('end', () => {
        if (sizeBytes > maxBytes) return;
        resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, sizeBytes));
      });
      // The client went away mid-body ('error': aborted, then 'close'): nothing to answer,
      // and nothing for onError, which hears of the peer's failures, not the clients'.
      x.req.once('error', () => resolve(null));
      x.req.once('close', () => resolve(null));
    });
  }

  /** 413: `sizeBytes` is the declared length, or what was read when the count passed the limit. */
  private tooLarge(x: Exchange, sizeBytes: number, declared: boolean): void {
    const maxBytes = storageLimits.maxValueBytes;
    const size = declared
      ? `declared as ${sizeBytes} bytes`
      : `over ${maxBytes} bytes (reading stopped at ${sizeBytes})`;
    this.error(
      x,
      413,
      ErrorCode.VALUE_TOO_LARGE,
      `the value is ${size}, the limit is ${maxBytes}`,
      { sizeBytes, maxBytes },
    );
  }

  private authorized(x: Exchange): boolean {
    if (!this.requireTokenForLoopback && x.connection.loopback) return true;
    const header = x.req.headers.authorization;
    if (
      header === undefined ||
      header.length < 7 ||
      header.slice(0, 7).toLowerCase() !== 'bearer '
    ) {
      return false;
    }
    return timingSafeEqual(sha256(header.slice(7).trim()), this.tokenDigest);
  }

  private methodNotAllowed(x: Exchange, allow: string): void {
    x.res.setHeader('Allow', allow);
    this.error(
      x,
      405,
      HttpCode.METHOD_NOT_ALLOWED,
      `${String(x.req.method)} is not allowed here; allowed: ${allow}`,
    );
  }

  private fail(x: Exchange, error: unknown): void {
    if (isMeshKvError(error)) {
      this.error(x, statusOfCode[error.code], error.code, error.message, error.details);
      return;
    }
    this.onError(error);
    this.error(
      x,
      500,
      HttpCode.INTERNAL,
      'the peer failed to serve this request (its log has the error)',
    );
  }

  private error(
    x: Exchange,
    status: number,
    code: ErrorCode | HttpCode,
    message: string,
    details?: object,
  ): void {
    const body = JSON.stringify(
      details === undefined ? { code, message } : { code, message, details },
    );
    this.answer(x, status, code, 'application/json', body);
  }

  private send(
    x: Exchange,
    status: number,
    contentType: string | null,
    body: string | Uint8Array | null,
  ): void {
    this.answer(x, status, 'OK', contentType, body);
  }

  private answer(
    x: Exchange,
    status: number,
    code: string,
    contentType: string | null,
    body: string | Uint8Array | null,
  ): void {
    if (x.answered || x.res.headersSent || x.res.destroyed) return;
    x.answered = true;
    const { req, res } = x;
    // A refused request whose body is still coming: skip a short one (node reads and drops
    // it, keeping the connection); close rather than read an unknown or oversized one.
    if (
      !req.complete &&
      (req.headers['transfer-encoding'] !== undefined ||
        declaredLength(req) > storageLimits.maxValueBytes ||
        status === 413)
    ) {
      res.setHeader('Connection', 'close');
    }
    if (status === 503 && code === ErrorCode.OVERLOADED) res.setHeader('Retry-After', '1');
    const length =
      body === null ? 0 : typeof body === 'string' ? Buffer.byteLength(body) : body.byteLength;
    // A flat header array goes straight into the response head (each setHeader validates,
    // lowercases and stores in a header object); node merges headers set before (Allow,
    // vary, Connection: close) into it.
    res.writeHead(
      status,
      contentType === null
        ? length === 0
          ? (noBodyHeaders as string[])
          : ['Content-Length', String(length)]
        : ['Content-Type', contentType, 'Content-Length', String(length)],
    );
    res.end(body ?? undefined);
    this.httpMetrics.count(x.op, code, (performance.now() - x.startedMs) / 1000);
    this.finished(x);
  }
}

/** The request's Content-Length (0 if absent; Infinity if unparsable, which node refuses). */
function declaredLength(req: IncomingMessage): number {
  const header = req.headers['content-length'];
  if (header === undefined) return 0;
  return /^\d{1,15}$/.test(header) ? Number(header) : Number.POSITIVE_INFINITY;
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

/**
 * The options of a KV request from its query, or a message saying what is wrong.
 * `timeout` (ms) is range-checked by the node (1 … maxDeadlineMs: 400 VALUE_INVALID).
 */
function parseQuery(query: string, op: Op): PutOptions | GetOptions | DeleteOptions | string {
  const options: {
    consistency?: 'linearizable' | 'local';
    ack?: 'majority' | 'all';
    deadlineMs?: number;
  } = {};
  if (query === '') return options;
  // Without '%' or '+' nothing decodes: split it here (what URLSearchParams would give).
  const pairs =
    query.includes('%') || query.includes('+') ? new URLSearchParams(query) : plainPairs(query);
  for (const [name, value] of pairs) {
    // Only the known names get this far twice (an unknown one is refused at once).
    const given =
      name === 'timeout'
        ? options.deadlineMs !== undefined
        : name === 'consistency'
          ? options.consistency !== undefined
          : name === 'ack' && options.ack !== undefined;
    if (given) return `the query parameter ${JSON.stringify(name)} is given twice`;
    if (name === 'timeout') {
      if (value.length > MAX_TIMEOUT_DIGITS || !/^\d+$/.test(value)) {
        return `timeout must be a whole number of milliseconds, got ${JSON.stringify(value.slice(0, 32))}`;
      }
      options.deadlineMs = Number(value);
    } else if (name === 'consistency' && op === 'get') {
      if (value !== 'local' && value !== 'linearizable') {
        return `consistency must be "local" or "linearizable", got ${JSON.stringify(value.slice(0, 32))}`;
      }
      options.consistency = value;
    } else if (name === 'ack' && op === 'put') {
      if (value !== 'all' && value !== 'majority') {
        return `ack must be "all" or "majority", got ${JSON.stringify(value.slice(0, 32))}`;
      }
      options.ack = value;
    } else {
      const known =
        op === 'get' ? 'consistency, timeout' : op === 'put' ? 'ack, timeout' : 'timeout';
      return `unknown query parameter ${JSON.stringify(name.slice(0, 32))} for ${op.toUpperCase()} /kv/:key (known: ${known})`;
    }
  }
  return options;
}

/** The name=value pairs of a query holding no '%' or '+', as URLSearchParams splits them. */
function plainPairs(query: string): [string, string][] {
  const pairs: [string, string][] = [];
  // The next '=' at or after `start` (-1: none), found again only once passed: linear.
  let equals = -2;
  for (let start = 0; start <= query.length; ) {
    let end = query.indexOf('&', start);
    if (end < 0) end = query.length;
    if (end > start) {
      if (equals !== -1 && equals < start) equals = query.indexOf('=', start);
      pairs.push(
        equals < 0 || equals > end
          ? [query.slice(start, end), '']
          : [query.slice(start, equals), query.slice(equals + 1, end)],
      );
    }
    start = end + 1;
  }
  return pairs;
}

/** The HTTP API in front of `options.node` (see the contract at the top of this file). */
export function createHttpApi(options: HttpApiOptions): HttpApi {
  return new HttpApiServer(options);
}

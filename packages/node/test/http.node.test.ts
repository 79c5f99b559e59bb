/**
 * The HTTP API (src/http.node.ts) on a real node:http server on 127.0.0.1:0: in front of a
 * real MeshNode of the deterministic TestCluster (whose virtual time the test drives while
 * a request is in flight), and in front of a stub node for the error codes a healthy
 * one-node cluster cannot produce on demand (UNAVAILABLE, TIMEOUT, ...) and for the
 * concurrency bound.
 */
import { Agent, type IncomingHttpHeaders, type OutgoingHttpHeaders, request } from 'node:http';
import { connect } from 'node:net';
import { limits } from '@meshkv/storage';
import { expect } from 'chai';
import {
  ackIncomplete,
  closed,
  MeshKvError,
  outcomeUnknown,
  overloaded,
  timeout,
  unavailable,
} from '../src/errors.ts';
import { createHttpApi, type HttpApi, isLoopbackAddress, type KvNode } from '../src/http.node.ts';
import type { NodeStatus } from '../src/mesh-node.ts';
import { NodeMetrics } from '../src/metrics.node.ts';
import { TestCluster, TICK_MS } from './support/cluster.ts';
import { idleNodeStatus } from './support/node-status.ts';

const MiB = 1024 * 1024;
const TOKEN = 'cluster-token-for-tests';
/** Wall-clock bound of one request (the loopback round trip takes milliseconds). */
const REQUEST_WALL_MS = 20_000;

interface Reply {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
  readonly reusedSocket: boolean;
}

interface RequestOptions {
  readonly body?: Uint8Array | string;
  readonly headers?: OutgoingHttpHeaders;
  readonly agent?: Agent;
}

function send(
  port: number,
  method: string,
  path: string,
  options: RequestOptions = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        method,
        path,
        headers: options.headers,
        agent: options.agent ?? false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks),
            reusedSocket: req.reusedSocket,
          }),
        );
        res.on('error', reject);
      },
    );
    req.setTimeout(REQUEST_WALL_MS, () => req.destroy(new Error(`${method} ${path}: no answer`)));
    req.on('error', reject);
    req.end(options.body);
  });
}

function json(reply: Reply): { code: string; message: string; details?: Record<string, unknown> } {
  expect(reply.headers['content-type']).to.equal('application/json');
  return JSON.parse(reply.body.toString('utf8'));
}

/** Writes `parts` to a raw connection (stopping once an answer arrives) and reads until the server closes it. */
function rawExchange(
  port: number,
  parts: readonly (string | Buffer)[],
): Promise<{ text: string; sentBytes: number }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const received: Buffer[] = [];
    let sentBytes = 0;
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('the server neither answered nor closed the connection'));
    }, REQUEST_WALL_MS);
    socket.on('data', (chunk: Buffer) => received.push(chunk));
    // A reset after the answer (writes the server no longer reads) is not a failure here.
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ text: Buffer.concat(received).toString('latin1'), sentBytes });
    });
    socket.on('connect', async () => {
      for (const part of parts) {
        if (received.length > 0 || socket.destroyed) break;
        await new Promise<void>((done) => socket.write(part, () => done()));
        sentBytes += Buffer.byteLength(part);
      }
    });
  });
}

/** Splits raw HTTP/1.1 answers (each with a Content-Length) into statuses and bodies. */
function parseResponses(text: string): { status: number; body: string }[] {
  const responses: { status: number; body: string }[] = [];
  let at = 0;
  while (at < text.length) {
    const headEnd = text.indexOf('\r\n\r\n', at);
    expect(headEnd, `a header from ${at}`).to.be.above(at);
    const head = text.slice(at, headEnd);
    const status = /^HTTP\/1\.1 (\d{3}) /.exec(head);
    const length = /\r\ncontent-length: (\d+)/i.exec(head);
    expect(status, head).not.to.equal(null);
    expect(length, head).not.to.equal(null);
    const bodyAt = headEnd + 4;
    const bodyEnd = bodyAt + Number(length![1]);
    responses.push({ status: Number(status![1]), body: text.slice(bodyAt, bodyEnd) });
    at = bodyEnd;
  }
  return responses;
}

/** Runs the cluster's virtual time until `promise` (HTTP exchanges) settles. */
async function driven<T>(cluster: TestCluster, promise: Promise<T>): Promise<T> {
  let done = false;
  const watched = promise.finally(() => {
    done = true;
  });
  watched.catch(() => {});
  const wallDeadline = Date.now() + REQUEST_WALL_MS;
  while (!done) {
    if (Date.now() > wallDeadline) throw new Error('the request did not settle');
    // One turn of the event loop for the sockets, one tick of virtual time for the node.
    await new Promise((resolve) => setImmediate(resolve));
    await cluster.run(TICK_MS);
  }
  return watched;
}

const stubStatus = (): NodeStatus => idleNodeStatus();

describe('HTTP API (http.node.ts)', function () {
  this.timeout(60_000);

  describe('in front of a MeshNode of the test cluster', () => {
    let cluster: TestCluster;
    let api: HttpApi;
    let port: number;
    const agent = new Agent({ keepAlive: true });

    const call = (method: string, path: string, options: RequestOptions = {}) =>
      driven(cluster, send(port, method, path, { agent, ...options }));

    before(async () => {
      cluster = new TestCluster({ partitions: 4, trace: !!process.env.TRACE });
      const node = await cluster.start('a');
      await cluster.until(
        () => node.status().groups.filter((g) => g.role === 'leader').length === 4,
        'a leads every partition',
      );
      api = createHttpApi({ node, token: TOKEN });
      port = (await api.listen({ host: '127.0.0.1', port: 0 })).port;
    });

    after(async () => {
      agent.destroy();
      await api?.close();
      await cluster?.close();
    });

    it('PUT, GET and DELETE /kv/:key: binary values round-trip, 404 for a missing key', async () => {
      const value = new Uint8Array(512);
      for (let i = 0; i < value.length; i++) value[i] = i % 256;
      const put = await call('PUT', '/kv/bin', { body: value });
      expect(put.status).to.equal(200);
      expect(put.body.byteLength).to.equal(0);

      const got = await call('GET', '/kv/bin');
      expect(got.status).to.equal(200);
      expect(got.headers['content-type']).to.equal('application/octet-stream');
      expect(new Uint8Array(got.body)).to.deep.equal(value);
      const local = await call('GET', '/kv/bin?consistency=local&timeout=2000');
      expect(new Uint8Array(local.body)).to.deep.equal(value);

      expect((await call('PUT', '/kv/bin?ack=all', { body: 'text' })).status).to.equal(200);
      expect((await call('GET', '/kv/bin')).body.toString()).to.equal('text');
      // An empty body is an empty value, not a missing one.
      expect((await call('PUT', '/kv/empty', { body: '' })).status).to.equal(200);
      const empty = await call('GET', '/kv/empty');
      expect([empty.status, empty.body.byteLength]).to.deep.equal([200, 0]);

      expect((await call('DELETE', '/kv/bin')).status).to.equal(200);
      const again = await call('DELETE', '/kv/bin');
      expect(again.status).to.equal(404);
      expect(json(again).code).to.equal('KEY_NOT_FOUND');
      const missing = await call('GET', '/kv/bin');
      expect(missing.status).to.equal(404);
      expect(json(missing).code).to.equal('KEY_NOT_FOUND');
    });

    it('the key is the percent-decoded UTF-8 path segment (a "/" is %2F)', async () => {
      const key = 'dir/ünï cödé ✓ 🙂?&=';
      const path = `/kv/${encodeURIComponent(key)}`;
      expect((await call('PUT', path, { body: 'v' })).status).to.equal(200);
      const stored = await driven(cluster, cluster.node('a').get(key));
      expect(Buffer.from(stored!).toString()).to.equal('v');
      expect((await call('GET', path)).body.toString()).to.equal('v');
    });

    it('400 KEY_INVALID: ill-formed percent-encodings, a raw "/", an empty or oversized key', async () => {
      const cases: [string, string][] = [
        ['/kv/%E0%A4%A', 'percent_encoding'], // truncated sequence
        ['/kv/%FF', 'percent_encoding'], // not UTF-8
        ['/kv/%ED%A0%80', 'percent_encoding'], // an encoded lone surrogate
        ['/kv/%zz', 'percent_encoding'],
        ['/kv/a/b', 'slash'],
        ['/kv/', 'empty'],
        [`/kv/${'k'.repeat(limits.maxKeyBytes + 1)}`, 'too_large'],
      ];
      for (const [path, reason] of cases) {
        for (const method of ['GET', 'PUT', 'DELETE']) {
          const reply = await call(method, path, method === 'PUT' ? { body: 'v' } : {});
          expect(reply.status, `${method} ${path}`).to.equal(400);
          const error = json(reply);
          expect(error.code, `${method} ${path}`).to.equal('KEY_INVALID');
          expect(error.details?.reason, `${method} ${path}`).to.equal(reason);
        }
      }
      // The connection survived every refusal (the agent reused it).
      expect((await call('GET', '/kv/still-served')).status).to.equal(404);
    });

    it('400 for bad query values, 404 for unknown routes, 405 with Allow for wrong methods', async () => {
      const queryCases: [string, string, string][] = [
        ['GET', '/kv/k?timeout=abc', 'QUERY_INVALID'],
        ['GET', '/kv/k?timeout=-5', 'QUERY_INVALID'],
        ['GET', '/kv/k?timeout=1&timeout=2', 'QUERY_INVALID'],
        ['GET', '/kv/k?consistency=strong', 'QUERY_INVALID'],
        ['GET', '/kv/k?ack=all', 'QUERY_INVALID'], // ack is for writes
        ['PUT', '/kv/k?consistency=local', 'QUERY_INVALID'],
        ['PUT', '/kv/k?ack=some', 'QUERY_INVALID'],
        ['DELETE', '/kv/k?colour=red', 'QUERY_INVALID'],
        ['GET', '/status?verbose=1', 'QUERY_INVALID'],
        // In range is the node's to say (1 … maxDeadlineMs).
        ['GET', '/kv/k?timeout=0', 'VALUE_INVALID'],
        ['PUT', '/kv/k?timeout=600000', 'VALUE_INVALID'],
      ];
      for (const [method, path, code] of queryCases) {
        const reply = await call(method, path, method === 'PUT' ? { body: 'v' } : {});
        expect(reply.status, `${method} ${path}`).to.equal(400);
        expect(json(reply).code, `${method} ${path}`).to.equal(code);
      }
      for (const path of ['/', '/kv', '/kvx/a', '/status/x', '/metrics2']) {
        const reply = await call('GET', path);
        expect(reply.status, path).to.equal(404);
        expect(json(reply).code, path).to.equal('ROUTE_NOT_FOUND');
      }
      const methodCases: [string, string, string][] = [
        ['POST', '/kv/k', 'GET, PUT, DELETE'],
        ['PATCH', '/kv/k', 'GET, PUT, DELETE'],
        ['PUT', '/status', 'GET'],
        ['DELETE', '/metrics', 'GET'],
      ];
      for (const [method, path, allow] of methodCases) {
        const reply = await call(method, path);
        expect(reply.status, `${method} ${path}`).to.equal(405);
        expect(reply.headers.allow, `${method} ${path}`).to.equal(allow);
        expect(json(reply).code).to.equal('METHOD_NOT_ALLOWED');
      }
    });

    it('a 1 MiB value is stored; a 1 MiB + 1 body is refused with 413 before it is read whole', async () => {
      const big = new Uint8Array(MiB).fill(7);
      expect((await call('PUT', '/kv/big', { body: big })).status).to.equal(200);
      expect((await call('GET', '/kv/big')).body.equals(Buffer.from(big))).to.equal(true);

      // Declared: refused on the header; only 1 KiB of the body was ever sent.
      const declared = await driven(
        cluster,
        rawExchange(port, [
          `PUT /kv/big HTTP/1.1\r\nHost: x\r\nContent-Length: ${MiB + 1}\r\n\r\n`,
          Buffer.alloc(1024, 1),
        ]),
      );
      expect(declared.text).to.match(/^HTTP\/1\.1 413 /);
      expect(declared.text).to.match(/\r\nconnection: close\r\n/i);
      expect(declared.text).to.include('"code":"VALUE_TOO_LARGE"');
      expect(declared.sentBytes).to.be.below(MiB);

      // `Expect: 100-continue`: refused before the client sends any of it.
      const expecting = await driven(
        cluster,
        rawExchange(port, [
          `PUT /kv/big HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: ${MiB + 1}\r\n\r\n`,
        ]),
      );
      expect(expecting.text).to.match(/^HTTP\/1\.1 413 /);

      // Chunked: counted while streaming, reading stops past the limit.
      const chunk = Buffer.alloc(64 * 1024, 2);
      const parts: (string | Buffer)[] = [
        'PUT /kv/big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n',
      ];
      for (let i = 0; i < 16; i++)
        parts.push(`${chunk.byteLength.toString(16)}\r\n`, chunk, '\r\n');
      parts.push('1\r\nx\r\n');
      const chunked = await driven(cluster, rawExchange(port, parts));
      expect(chunked.text).to.match(/^HTTP\/1\.1 413 /);
      expect(chunked.text).to.include('"code":"VALUE_TOO_LARGE"');
      // Nothing of the refused bodies was stored.
      expect((await call('GET', '/kv/big')).body.equals(Buffer.from(big))).to.equal(true);
    });

    it('headers over maxHeaderBytes get 431; the server goes on serving', async () => {
      const reply = await driven(
        cluster,
        send(port, 'GET', '/kv/k', { headers: { 'x-padding': 'p'.repeat(20 * 1024) } }),
      );
      expect(reply.status).to.equal(431);
      expect((await call('GET', '/kv/k')).status).to.equal(404);
    });

    it('keep-alive: one connection carries many requests', async () => {
      const single = new Agent({ keepAlive: true, maxSockets: 1 });
      let connections = 0;
      const count = () => connections++;
      api.server.on('connection', count);
      try {
        const replies: Reply[] = [];
        for (let i = 0; i < 5; i++) {
          replies.push(await call('PUT', `/kv/ka${i}`, { body: `v${i}`, agent: single }));
          replies.push(await call('GET', `/kv/ka${i}`, { agent: single }));
        }
        expect(replies.map((r) => r.status)).to.deep.equal(Array(10).fill(200));
        expect(replies.map((r) => r.reusedSocket)).to.deep.equal([false, ...Array(9).fill(true)]);
        expect(replies.every((r) => r.headers.connection !== 'close')).to.equal(true);
        expect(connections).to.equal(1);
      } finally {
        api.server.off('connection', count);
        single.destroy();
      }
    });

    it('pipelining: requests written back to back on one connection are answered in order', async () => {
      expect((await call('PUT', '/kv/p1', { body: 'one' })).status).to.equal(200);
      const pipelined = await driven(
        cluster,
        rawExchange(port, [
          'GET /kv/p1 HTTP/1.1\r\nHost: x\r\n\r\n' +
            'PUT /kv/p2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\ntwo' +
            'GET /kv/p2 HTTP/1.1\r\nHost: x\r\n\r\n' +
            'GET /kv/p3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
        ]),
      );
      expect(parseResponses(pipelined.text)).to.deep.equal([
        { status: 200, body: 'one' },
        { status: 200, body: '' },
        { status: 200, body: 'two' },
        { status: 404, body: '{"code":"KEY_NOT_FOUND","message":"the key holds no value"}' },
      ]);
    });

    it('hundreds of concurrent connections are all served', async () => {
      const connections = 300;
      const puts = [];
      for (let i = 0; i < connections; i++) {
        puts.push(send(port, 'PUT', `/kv/c${i}`, { body: `v${i}` }));
      }
      const replies = await driven(cluster, Promise.all(puts));
      expect(replies.map((r) => r.status)).to.deep.equal(Array(connections).fill(200));
      const gets = [];
      for (let i = 0; i < connections; i++) gets.push(send(port, 'GET', `/kv/c${i}`));
      const values = (await driven(cluster, Promise.all(gets))).map((r) => r.body.toString());
      expect(values).to.deep.equal(Array.from({ length: connections }, (_, i) => `v${i}`));
    });

    it('GET /status is node.status() as JSON; GET /metrics is Prometheus text', async () => {
      const reply = await call('GET', '/status');
      expect(reply.status).to.equal(200);
      expect(reply.headers['content-type']).to.equal('application/json');
      const status = JSON.parse(reply.body.toString()) as NodeStatus;
      const expected = cluster.node('a').status();
      expect(status.nodeId).to.equal('a');
      expect(status.groups.map((g) => [g.partition, g.role, g.voters])).to.deep.equal(
        expected.groups.map((g) => [g.partition, g.role, g.voters]),
      );
      expect(status.epoch).to.equal(expected.epoch);
      // CORS for pages of loopback origins (the demo) only.
      expect(reply.headers['access-control-allow-origin']).to.equal(undefined);
      const demo = await call('GET', '/status', { headers: { origin: 'http://127.0.0.1:7700' } });
      expect(demo.headers['access-control-allow-origin']).to.equal('http://127.0.0.1:7700');
      const other = await call('GET', '/status', { headers: { origin: 'http://evil.example' } });
      expect(other.status).to.equal(200);
      expect(other.headers['access-control-allow-origin']).to.equal(undefined);

      const metrics = await call('GET', '/metrics');
      expect(metrics.status).to.equal(200);
      expect(metrics.headers['content-type']).to.match(/^text\/plain; version=0\.0\.4/);
      const text = metrics.body.toString();
      expect(text).to.match(/^meshkv_http_requests_total\{op="put",code="OK"\} [1-9]\d*$/m);
      expect(text).to.match(/^meshkv_http_requests_total\{op="get",code="KEY_NOT_FOUND"\} [1-9]/m);
      expect(text).to.match(
        /^meshkv_http_request_duration_seconds_bucket\{le="\+Inf",op="get"\} [1-9]/m,
      );
      expect(text).to.match(/^meshkv_leaders_held 4$/m);
      expect(text).to.match(/^meshkv_groups_hosted 4$/m);
      for (const g of expected.groups) {
        expect(text).to.match(
          new RegExp(`^meshkv_raft_term\\{partition="${g.partition}"\\} ${g.term}$`, 'm'),
        );
      }
      const batches = Number(/^meshkv_storage_batches_written_total (\d+)$/m.exec(text)?.[1]);
      expect(batches).to.be.at.least(1).and.at.most(cluster.node('a').status().batchesWritten);
    });

    it('503 CLOSED once the node is closed', async () => {
      await cluster.node('a').close();
      const reply = await call('GET', '/kv/k');
      expect(reply.status).to.equal(503);
      expect(json(reply).code).to.equal('CLOSED');
    });
  });

  describe('node metrics (metrics.node.ts): a three-node cluster, scraped on a', () => {
    let cluster: TestCluster;
    let api: HttpApi;
    let port: number;
    const agent = new Agent({ keepAlive: true });
    const metricsOf = new Map<string, NodeMetrics>();
    /** A value whose second copy overflows the uncommitted log (maxUncommittedEntriesBytes). */
    const bigValue = new Uint8Array(3_000);

    const call = (method: string, path: string, options: RequestOptions = {}) =>
      driven(cluster, send(port, method, path, { agent, ...options }));
    async function scrape(): Promise<string> {
      const reply = await call('GET', '/metrics');
      expect(reply.status).to.equal(200);
      return reply.body.toString();
    }
    /** The sample of `series` (name and labels as printed) in `text`; fails if absent. */
    function sample(text: string, series: string): number {
      const line = text.split('\n').find((l) => l.startsWith(`${series} `));
      expect(line, `${series} in /metrics`).to.not.equal(undefined);
      return Number(line!.slice(series.length + 1));
    }
    /** `name`'s samples summed over every node's registry (for what the leaders count). */
    async function summed(name: string, labels: Record<string, string> = {}): Promise<number> {
      let total = 0;
      for (const metrics of metricsOf.values()) {
        for (const value of (await metrics.registry.getSingleMetric(name)!.get()).values) {
          if (Object.entries(labels).every(([k, v]) => value.labels[k] === v)) total += value.value;
        }
      }
      return total;
    }

    before(async () => {
      cluster = new TestCluster({
        partitions: 4,
        trace: !!process.env.TRACE,
        settings: { maxUncommittedEntriesBytes: 4096 },
        instrument: (id, transport) => {
          const metrics = new NodeMetrics();
          metrics.meterLinks(transport);
          metricsOf.set(id, metrics);
          return {
            storage: (storage) => metrics.meterStorage(storage),
            observer: metrics.observer,
          };
        },
      });
      const a = await cluster.start('a');
      await cluster.start('b');
      await cluster.start('c');
      await cluster.until(
        () =>
          a.status().groups.length === 4 &&
          a.status().groups.every((g) => g.voters.length === 3 && g.leader !== null),
        'every partition has three voters and a leader',
      );
      api = createHttpApi({ node: a, token: TOKEN, metrics: metricsOf.get('a') });
      port = (await api.listen({ host: '127.0.0.1', port: 0 })).port;
      const value = new Uint8Array(1_000);
      for (let i = 0; i < 20; i++) {
        expect((await call('PUT', `/kv/k${i}`, { body: value })).status).to.equal(200);
      }
    });

    after(async () => {
      agent.destroy();
      await api?.close();
      await cluster?.close();
    });

    it('storage batches: duration, groups, entries and entry bytes per batch', async () => {
      const text = await scrape();
      const batches = sample(text, 'meshkv_storage_batch_duration_seconds_count');
      expect(batches).to.be.at.least(1);
      expect(sample(text, 'meshkv_storage_batch_groups_count')).to.equal(batches);
      expect(sample(text, 'meshkv_storage_batch_entries_count')).to.equal(batches);
      expect(sample(text, 'meshkv_storage_batch_duration_seconds_sum')).to.be.at.least(0);
      expect(sample(text, 'meshkv_storage_batch_groups_sum')).to.be.at.least(batches);
      // a replicates every partition: each of the 20 puts is an entry of its log.
      expect(sample(text, 'meshkv_storage_batch_entries_sum')).to.be.at.least(20);
      expect(sample(text, 'meshkv_storage_batch_entry_bytes_sum')).to.be.at.least(20 * 1_000);
      expect(sample(text, 'meshkv_storage_batch_entry_bytes_bucket{le="+Inf"}')).to.equal(batches);
      expect(sample(text, 'meshkv_storage_batch_failures_total')).to.equal(0);
    });

    it('frames and bytes per peer, as the transport counts them', async () => {
      const text = await scrape();
      const transport = cluster.running.get('a')!.transport;
      for (const peer of ['b', 'c']) {
        const stats = transport.stats(peer);
        const frames = sample(text, `meshkv_peer_frames_sent_total{peer="${peer}"}`);
        const bytes = sample(text, `meshkv_peer_bytes_sent_total{peer="${peer}"}`);
        expect(frames).to.be.at.least(1).and.at.most(stats.framesSent);
        expect(bytes).to.be.above(frames).and.at.most(stats.bytesSent);
        const received = sample(text, `meshkv_peer_frames_received_total{peer="${peer}"}`);
        expect(received).to.be.at.least(1).and.at.most(stats.framesReceived);
        expect(sample(text, `meshkv_peer_bytes_received_total{peer="${peer}"}`)).to.be.above(
          received,
        );
        expect(sample(text, `meshkv_peer_frames_dropped_total{peer="${peer}"}`)).to.equal(0);
      }
      expect(text).to.not.match(/\{peer="a"\}/);
      expect(sample(text, 'meshkv_peers_connected')).to.equal(2);
      expect(sample(text, 'meshkv_frames_sent_total')).to.be.at.least(2);
      // Every link is up: nothing went through a relay.
      expect(sample(text, 'meshkv_records_relayed_total')).to.equal(0);
      expect(sample(text, 'meshkv_records_forwarded_total')).to.equal(0);
    });

    it('raft: terms, commit and apply lag per partition, leaders held, leaderships won', async () => {
      const text = await scrape();
      const status = cluster.node('a').status();
      for (const g of status.groups) {
        const partition = `{partition="${g.partition}"}`;
        expect(sample(text, `meshkv_raft_term${partition}`)).to.be.at.least(1);
        expect(sample(text, `meshkv_raft_commit_lag_entries${partition}`)).to.be.at.least(0);
        expect(sample(text, `meshkv_raft_apply_lag_entries${partition}`)).to.be.at.least(0);
      }
      const led = status.groups.filter((g) => g.role === 'leader').length;
      expect(sample(text, 'meshkv_leaders_held')).to.equal(led);
      // Every partition had a leader elected at least once (a's bootstrap).
      expect(await summed('meshkv_raft_leaderships_total')).to.be.at.least(4);
      expect(sample(text, 'meshkv_raft_leaderships_total')).to.be.at.least(1);
    });

    it('proposals dropped: writes past maxUncommittedEntriesBytes are counted and answered 503', async () => {
      // Concurrent puts of one partition: while the first is uncommitted the others overflow
      // the leader's uncommitted log. Bursts until one is refused (bounded).
      let refused = 0;
      for (let burst = 0; burst < 20 && refused === 0; burst++) {
        const puts = Array.from({ length: 8 }, () =>
          send(port, 'PUT', '/kv/big', { body: bigValue, agent }),
        );
        for (const reply of await driven(cluster, Promise.all(puts))) {
          if (reply.status === 200) continue;
          expect(reply.status, reply.body.toString()).to.equal(503);
          const error = json(reply);
          expect(error.code).to.equal('OVERLOADED');
          expect(error.message).to.include('maxUncommittedEntriesBytes');
          refused++;
        }
      }
      expect(refused, 'puts refused').to.be.at.least(1);
      expect(
        await summed('meshkv_raft_proposals_dropped_total', { reason: 'full' }),
      ).to.be.at.least(refused);
      const text = await scrape();
      expect(sample(text, 'meshkv_http_requests_total{op="put",code="OVERLOADED"}')).to.equal(
        refused,
      );
    });
  });

  describe('auth', () => {
    const apis: HttpApi[] = [];
    afterEach(async () => {
      for (const api of apis.splice(0)) await api.close();
    });

    const stub: KvNode = {
      put: async () => true,
      get: async () => new TextEncoder().encode('secret value'),
      delete: async () => true,
      status: stubStatus,
    };

    async function serve(requireTokenForLoopback: boolean): Promise<number> {
      const api = createHttpApi({ node: stub, token: TOKEN, requireTokenForLoopback });
      apis.push(api);
      return (await api.listen({ host: '127.0.0.1', port: 0 })).port;
    }

    it('loopback as remote: a missing or wrong token gets 401 and no data; the right one is served', async () => {
      const port = await serve(true);
      const refused: OutgoingHttpHeaders[] = [
        {},
        { authorization: 'Bearer' },
        { authorization: `Bearer ${TOKEN}x` },
        { authorization: `Bearer ${TOKEN.slice(1)}` },
        { authorization: 'Bearer wrong-token-of-another-length' },
        { authorization: `Basic ${TOKEN}` },
        { authorization: TOKEN },
      ];
      for (const path of ['/kv/k', '/status', '/metrics', '/nowhere']) {
        for (const headers of refused) {
          const reply = await send(port, 'GET', path, { headers, agent: undefined });
          expect(reply.status, `${path} ${JSON.stringify(headers)}`).to.equal(401);
          expect(reply.headers['www-authenticate']).to.equal('Bearer');
          expect(json(reply).code).to.equal('UNAUTHORIZED');
          expect(reply.body.toString()).not.to.include('secret');
        }
      }
      const ok = await send(port, 'GET', '/kv/k', {
        headers: { authorization: `Bearer ${TOKEN}` },
      });
      expect([ok.status, ok.body.toString()]).to.deep.equal([200, 'secret value']);
      const lowerScheme = await send(port, 'GET', '/kv/k', {
        headers: { authorization: `bearer ${TOKEN}` },
      });
      expect(lowerScheme.status).to.equal(200);
    });

    it('loopback skips the token by default', async () => {
      const port = await serve(false);
      const reply = await send(port, 'GET', '/kv/k');
      expect([reply.status, reply.body.toString()]).to.deep.equal([200, 'secret value']);
    });

    it('isLoopbackAddress: 127.0.0.0/8 and ::1 (also IPv4-mapped), nothing else', () => {
      for (const address of ['127.0.0.1', '127.255.1.2', '::1', '::ffff:127.0.0.1']) {
        expect(isLoopbackAddress(address), address).to.equal(true);
      }
      for (const address of [
        undefined,
        '',
        '10.0.0.1',
        '128.0.0.1',
        '::ffff:10.0.0.1',
        '::2',
        '127.evil',
        '1127.0.0.1',
        'fe80::1',
      ]) {
        expect(isLoopbackAddress(address), String(address)).to.equal(false);
      }
    });

    it('refuses an empty token', () => {
      expect(() => createHttpApi({ node: stub, token: '' })).to.throw(RangeError);
    });
  });

  describe('error codes and bounds (stub node)', () => {
    let api: HttpApi;
    let port: number;
    let failWith: unknown;
    let held: (() => void)[] = [];
    const unexpected: unknown[] = [];

    const stub: KvNode = {
      put: async () => {
        throw failWith;
      },
      get: async () => {
        throw failWith;
      },
      delete: async () => {
        await new Promise<void>((resolve) => held.push(resolve));
        return true;
      },
      status: stubStatus,
    };

    const inFlight = async () =>
      (await api.metrics.getSingleMetric('meshkv_http_requests_in_flight')!.get()).values[0]
        ?.value ?? 0;
    /** Waits (bounded, turning the event loop) until `condition` holds. */
    async function waitFor(condition: () => Promise<boolean>, what: string): Promise<void> {
      const wallDeadline = Date.now() + REQUEST_WALL_MS;
      while (!(await condition())) {
        if (Date.now() > wallDeadline) throw new Error(what);
        await new Promise((resolve) => setImmediate(resolve));
      }
    }

    before(async () => {
      api = createHttpApi({
        node: stub,
        token: TOKEN,
        limits: { maxConcurrentRequests: 3, maxPipelinedRequests: 2 },
        onError: (error) => unexpected.push(error),
      });
      port = (await api.listen({ host: '127.0.0.1', port: 0 })).port;
    });

    after(async () => {
      for (const release of held) release();
      await api.close();
    });

    it('each MeshKvError code has its HTTP status and JSON {code, message, details}', async () => {
      const cases: [MeshKvError, number][] = [
        [unavailable(3, ['a', 'b', 'c'], ['b', 'c'], 'a'), 503],
        [overloaded('maxPendingRequests', 10_000), 503],
        [closed('was closed'), 503],
        [timeout(5000, 'write', true, 3), 504],
        [outcomeUnknown(3), 504],
        [ackIncomplete(3, ['a', 'b', 'c'], ['c']), 500],
        [new MeshKvError('VALUE_INVALID', 'bad option'), 400],
      ];
      for (const [error, status] of cases) {
        failWith = error;
        for (const method of ['GET', 'PUT']) {
          const reply = await send(port, method, '/kv/k', {
            body: method === 'PUT' ? 'v' : undefined,
          });
          expect(reply.status, `${error.code} ${method}`).to.equal(status);
          expect(json(reply)).to.deep.equal({
            code: error.code,
            message: error.message,
            details: JSON.parse(JSON.stringify(error.details)),
          });
          if (error.code === 'OVERLOADED') expect(reply.headers['retry-after']).to.equal('1');
        }
      }
      expect(unexpected).to.deep.equal([]);
    });

    it('an unexpected error answers 500 INTERNAL without its message and goes to onError', async () => {
      failWith = new Error('internal detail');
      const reply = await send(port, 'GET', '/kv/k');
      expect(reply.status).to.equal(500);
      expect(json(reply).code).to.equal('INTERNAL');
      expect(reply.body.toString()).not.to.include('internal detail');
      expect(unexpected).to.deep.equal([failWith]);
    });

    it('a client leaving mid-body is no error: nothing is answered or reported', async () => {
      unexpected.length = 0;
      const socket = connect(port, '127.0.0.1');
      socket.on('error', () => {});
      socket.write('PUT /kv/k HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789');
      await waitFor(async () => (await inFlight()) === 1, 'the request did not arrive');
      socket.destroy();
      await waitFor(async () => (await inFlight()) === 0, 'the request was not given up');
      expect(unexpected).to.deep.equal([]);
      failWith = closed('was closed');
      expect((await send(port, 'GET', '/kv/k')).status).to.equal(503);
    });

    it('a client leaving with pipelined requests queued behind a running one frees them all', async () => {
      const socket = connect(port, '127.0.0.1');
      socket.on('error', () => {});
      // The DELETE is held by the stub; the GET waits behind it (it may not pass a write).
      socket.write('DELETE /kv/a HTTP/1.1\r\nHost: x\r\n\r\nGET /kv/b HTTP/1.1\r\nHost: x\r\n\r\n');
      await waitFor(
        async () => held.length === 1 && (await inFlight()) === 2,
        'the requests did not arrive',
      );
      socket.destroy();
      await waitFor(async () => (await inFlight()) === 0, 'the requests were not given up');
      for (const release of held.splice(0)) release();
      failWith = closed('was closed');
      expect((await send(port, 'GET', '/kv/k')).status).to.equal(503);
    });

    it('past maxPipelinedRequests on one connection a request gets 503 OVERLOADED', async () => {
      failWith = closed('was closed');
      const exchange = rawExchange(port, [
        'DELETE /kv/a HTTP/1.1\r\nHost: x\r\n\r\n' +
          'GET /kv/b HTTP/1.1\r\nHost: x\r\n\r\n' +
          'GET /kv/c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
      ]);
      await waitFor(
        async () => held.length === 1 && (await inFlight()) === 3,
        'the requests did not arrive',
      );
      for (const release of held.splice(0)) release();
      const replies = parseResponses((await exchange).text);
      expect(replies.map((r) => r.status)).to.deep.equal([200, 503, 503]);
      expect(JSON.parse(replies[1]!.body).code).to.equal('CLOSED');
      expect(JSON.parse(replies[2]!.body)).to.deep.include({
        code: 'OVERLOADED',
        details: { bound: 'maxPipelinedRequests', limit: 2, mayHaveApplied: false },
      });
    });

    it('past maxConcurrentRequests a request gets 503 OVERLOADED; the held ones then complete', async () => {
      const first = send(port, 'DELETE', '/kv/a');
      const second = send(port, 'DELETE', '/kv/b');
      const third = send(port, 'DELETE', '/kv/c');
      const wallDeadline = Date.now() + REQUEST_WALL_MS;
      while (held.length < 3) {
        if (Date.now() > wallDeadline) throw new Error('the three requests did not reach the node');
        await new Promise((resolve) => setImmediate(resolve));
      }
      const fourth = await send(port, 'DELETE', '/kv/d');
      expect(fourth.status).to.equal(503);
      const error = json(fourth);
      expect(error.code).to.equal('OVERLOADED');
      expect(error.details).to.include({ bound: 'maxConcurrentRequests', limit: 3 });
      for (const release of held) release();
      held = [];
      expect((await first).status).to.equal(200);
      expect((await second).status).to.equal(200);
      expect((await third).status).to.equal(200);
      // Answered requests no longer count.
      failWith = closed('was closed');
      expect((await send(port, 'GET', '/kv/k')).status).to.equal(503);
      expect(json(await send(port, 'GET', '/kv/k')).code).to.equal('CLOSED');
    });
  });
});

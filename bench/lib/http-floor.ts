/**
 * `pnpm bench cluster --http-floor`'s servers: a bare node:http server that answers the
 * meshkv HTTP API's `PUT /kv/:key` (200 `true`) and `GET /kv/:key` (200 with the last
 * value put, 404 for none) from a Map in its own memory — no replication, no disk, no
 * Raft. Three of them under the same client workload give the ceiling of any server
 * behind node:http on this machine: what the HTTP exchange alone costs per request.
 *
 * Run as `node --import tsx bench/lib/http-floor.ts`: it listens on 127.0.0.1 (an
 * ephemeral port) and prints `HTTP API on http://127.0.0.1:PORT`, as a `meshkv node` does
 * (so the bench waits for it with the same helper).
 */
import { createServer } from 'node:http';

/** Bodies above this are refused (the bench's largest value is 1 MiB). */
const MAX_BODY_BYTES = 2 * 1024 * 1024;
const KEY_PREFIX = '/kv/';

const values = new Map<string, Buffer>();

const server = createServer((request, response) => {
  const url = request.url ?? '';
  const end = url.indexOf('?');
  const path = end < 0 ? url : url.slice(0, end);
  if (!path.startsWith(KEY_PREFIX) || path.length === KEY_PREFIX.length) {
    response.writeHead(404).end();
    return;
  }
  const key = path.slice(KEY_PREFIX.length);
  if (request.method === 'GET') {
    const value = values.get(key);
    if (value === undefined) response.writeHead(404).end();
    else response.writeHead(200, { 'content-length': value.length }).end(value);
    return;
  }
  if (request.method !== 'PUT') {
    response.writeHead(405).end();
    return;
  }
  const chunks: Buffer[] = [];
  let bytes = 0;
  request.on('data', (chunk: Buffer) => {
    bytes += chunk.length;
    if (bytes > MAX_BODY_BYTES) {
      response.writeHead(413).end();
      request.destroy();
      return;
    }
    chunks.push(chunk);
  });
  request.on('end', () => {
    values.set(key, chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks));
    response.writeHead(200, { 'content-type': 'text/plain', 'content-length': 4 }).end('true');
  });
});

server.listen(0, '127.0.0.1', () => {
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no TCP address');
  console.log(`HTTP API on http://127.0.0.1:${address.port}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));

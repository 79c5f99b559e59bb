/**
 * The HTTP side of the signaling server: `GET /health`, `GET /status` and a static folder
 * (the demo build). Socket.IO takes `/socket.io/` before these handlers see it.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { extname, join, normalize, sep } from 'node:path';

const CONTENT_TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.wasm': 'application/wasm',
  '.txt': 'text/plain; charset=utf-8',
};

export interface HttpRoutes {
  /** The `/status` document. */
  status(): unknown;
  /** Folder served for every other GET path; undefined serves nothing (404). */
  readonly staticDir: string | undefined;
}

export function createRequestHandler(
  routes: HttpRoutes,
): (request: IncomingMessage, response: ServerResponse) => void {
  return (request, response) => {
    handle(routes, request, response).catch((error: unknown) => {
      // Never let a request take the server down; answer if nothing was sent yet.
      if (!response.headersSent) sendJson(response, 500, { error: String(error) });
      else response.destroy();
    });
  };
}

async function handle(
  routes: HttpRoutes,
  request: IncomingMessage,
  response: ServerResponse,
): Promise<void> {
  if (request.method !== 'GET' && request.method !== 'HEAD') {
    response.setHeader('allow', 'GET, HEAD');
    sendJson(response, 405, { error: 'method not allowed' });
    return;
  }
  const path = (request.url ?? '/').split('?')[0]!;
  if (path === '/health') {
    sendJson(response, 200, { status: 'ok' });
    return;
  }
  if (path === '/status') {
    sendJson(response, 200, routes.status());
    return;
  }
  if (routes.staticDir === undefined) {
    sendJson(response, 404, { error: 'not found' });
    return;
  }
  await sendStatic(routes.staticDir, path, request.method === 'HEAD', response);
}

async function sendStatic(
  root: string,
  urlPath: string,
  headOnly: boolean,
  response: ServerResponse,
): Promise<void> {
  let decoded: string;
  try {
    decoded = decodeURIComponent(urlPath);
  } catch {
    sendJson(response, 400, { error: 'malformed path' });
    return;
  }
  const rootDir = normalize(root);
  let file = normalize(join(rootDir, decoded));
  // `normalize` resolves `..`; anything that ends up outside the root is refused.
  if (decoded.includes('\0') || (file !== rootDir && !file.startsWith(rootDir + sep))) {
    sendJson(response, 404, { error: 'not found' });
    return;
  }
  let info = await stat(file).catch(() => undefined);
  if (info?.isDirectory()) {
    file = join(file, 'index.html');
    info = await stat(file).catch(() => undefined);
  }
  if (!info?.isFile()) {
    sendJson(response, 404, { error: 'not found' });
    return;
  }
  response.writeHead(200, {
    'content-type': CONTENT_TYPES[extname(file).toLowerCase()] ?? 'application/octet-stream',
    'content-length': info.size,
  });
  if (headOnly) {
    response.end();
    return;
  }
  const stream = createReadStream(file);
  stream.on('error', () => response.destroy());
  stream.pipe(response);
}

function sendJson(response: ServerResponse, statusCode: number, body: unknown): void {
  const text = `${JSON.stringify(body, null, 2)}\n`;
  response.writeHead(statusCode, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    // Read-only and credential-free: a demo served from a dev server may poll /status.
    'access-control-allow-origin': '*',
  });
  response.end(text);
}

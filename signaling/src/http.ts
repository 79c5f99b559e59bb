/**
 * The HTTP side of the signaling server: `GET /health`, `GET /status`, `GET
 * /demo-config.json` (loopback only) and a static folder (the demo build). Socket.IO takes
 * `/socket.io/` before these handlers see it.
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

/** Longer request targets get 414: no route or demo file needs more. */
export const MAX_URL_BYTES = 2048;
/** Where a page served by this server (the demo) reads how to join the cluster. */
export const DEMO_CONFIG_PATH = '/demo-config.json';

export interface HttpRoutes {
  /** The `/status` document. */
  status(): unknown;
  /**
   * The `/demo-config.json` document (it holds the cluster token), answered only to a
   * loopback client that names a loopback host (isLoopbackRequest); undefined: 404.
   */
  readonly demoConfig: (() => unknown) | undefined;
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
  const url = request.url ?? '/';
  if (url.length > MAX_URL_BYTES) {
    sendJson(response, 414, { error: `request target longer than ${MAX_URL_BYTES} bytes` });
    return;
  }
  const path = url.split('?')[0]!;
  if (path === DEMO_CONFIG_PATH && routes.demoConfig !== undefined) {
    if (!isLoopbackRequest(request)) {
      sendJson(response, 403, {
        error: 'the demo configuration is served to loopback clients only',
      });
      return;
    }
    // Never cached, and no CORS header: only a page of this origin may read the token.
    sendJson(response, 200, routes.demoConfig(), { cors: false });
    return;
  }
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
    // A rebuilt demo must show at once: the browser revalidates (the build is small).
    'cache-control': 'no-cache',
    'x-content-type-options': 'nosniff',
  });
  if (headOnly) {
    response.end();
    return;
  }
  const stream = createReadStream(file);
  stream.on('error', () => response.destroy());
  stream.pipe(response);
}

/**
 * Whether a request comes from this machine (a loopback peer address) and names a loopback
 * host (`127.x.x.x`, `localhost`, `[::1]`, any port): the Host check keeps a page of another
 * site whose name was made to resolve to 127.0.0.1 (DNS rebinding) from reading the answer.
 */
export function isLoopbackRequest(request: IncomingMessage): boolean {
  const address = request.socket.remoteAddress ?? '';
  const fromLoopback =
    address === '::1' || /^(?:::ffff:)?127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(address);
  const host = request.headers.host ?? '';
  return (
    fromLoopback &&
    /^(?:127\.\d{1,3}\.\d{1,3}\.\d{1,3}|localhost|\[::1\])(?::\d{1,5})?$/i.test(host)
  );
}

function sendJson(
  response: ServerResponse,
  statusCode: number,
  body: unknown,
  { cors }: { cors: boolean } = { cors: true },
): void {
  const text = `${JSON.stringify(body, null, 2)}\n`;
  response.writeHead(statusCode, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    // Read-only and credential-free: a demo served from a dev server may poll /status.
    ...(cors ? { 'access-control-allow-origin': '*' } : {}),
  });
  response.end(text);
}

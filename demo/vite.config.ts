// The demo app (README.md): `meshkv start` runs `vite build` here when the sources changed
// (packages/node/src/demo-build.node.ts) and the signaling server serves demo/dist at `/`.
import { defineConfig } from 'vite';

// `pnpm --filter @meshkv/demo dev`: Vite's dev server (hot reload) in front of a running
// `meshkv start` at MESHKV_SIGNALING_URL (default its port 7700): the registry, the config
// and Socket.IO go through to it, so the page works as when the signaling server serves it.
const signalingUrl = process.env.MESHKV_SIGNALING_URL ?? 'http://127.0.0.1:7700';

export default defineConfig({
  server: {
    host: '127.0.0.1',
    proxy: {
      '/status': signalingUrl,
      // The signaling server answers it only for a loopback Host: Vite's is rewritten to its own.
      '/demo-config.json': { target: signalingUrl, changeOrigin: true },
      '/socket.io': { target: signalingUrl, ws: true },
    },
  },
  // Relative asset URLs: the build works wherever the server mounts it.
  base: './',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    // The bundle holds the whole node runtime (raft, storage, transport): ~0.5 MB is expected.
    chunkSizeWarningLimit: 2048,
    reportCompressedSize: false,
    // Its timing report is noise on a loaded machine (every callback looks slow).
    rolldownOptions: { checks: { bundlerTimings: false } },
  },
  logLevel: 'warn',
});

// The demo app (README.md): `meshkv start` runs `vite build` here when the sources changed
// (packages/node/src/demo-build.node.ts) and the signaling server serves demo/dist at `/`.
import { defineConfig } from 'vite';

export default defineConfig({
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

import { readFileSync } from 'node:fs';
import { defineConfig, type ProxyOptions } from 'vite';
import react from '@vitejs/plugin-react';

// `npm run dev` proxies the API to a running `ferrovirt serve` (FERROVIRT_URL, default
// http://127.0.0.1:8080), so the UI is always same-origin, as it is when `serve` embeds ui/dist/.
// An https server with its own CA: FERROVIRT_CA=<data-dir>/ca.crt (or whatever serve printed).
const target = process.env.FERROVIRT_URL ?? 'http://127.0.0.1:8080';
const ca = process.env.FERROVIRT_CA ? readFileSync(process.env.FERROVIRT_CA) : undefined;

const proxy: ProxyOptions = {
  target,
  ws: true,
  changeOrigin: true, // Host: the server's own name (it answers 421 to other hosts)
  ca,
  // The server checks a WebSocket's Origin against its own origin; the dev page's origin is this
  // dev server, so the proxy presents the server's.
  configure: (p) => p.on('proxyReqWs', (req) => req.setHeader('Origin', new URL(target).origin)),
};

export default defineConfig({
  plugins: [react()],
  base: './',
  build: { outDir: 'dist', chunkSizeWarningLimit: 1200 },
  server: { proxy: { '/api': proxy, '/apis': proxy } },
  test: { include: ['src/**/*.test.ts'], environment: 'node' },
});

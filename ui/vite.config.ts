import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

// `npm run dev` proxies the API to a running `ferrovirt serve` (FERROVIRT_URL, default
// http://127.0.0.1:8080), so the UI is always same-origin, as it is when `serve` embeds ui/dist/.
const target = process.env.FERROVIRT_URL ?? 'http://127.0.0.1:8080';

export default defineConfig({
  plugins: [react()],
  base: './',
  build: { outDir: 'dist', chunkSizeWarningLimit: 1200 },
  server: {
    proxy: {
      '/api': { target, ws: true, changeOrigin: true },
      '/apis': { target, ws: true, changeOrigin: true },
    },
  },
  test: { include: ['src/**/*.test.ts'], environment: 'node' },
});

// Runs the browser tests (`node --test e2e/`), trusting FERROVIRT_E2E_CA for https servers:
// node reads extra CAs (NODE_EXTRA_CA_CERTS) only at start-up, so the test runner is started here
// with it. Chromium gets `ignoreHTTPSErrors` instead (it takes no CA file; the test CA is a
// throwaway), kubectl gets --certificate-authority.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

const base = process.env.FERROVIRT_URL ?? '';
const ca = process.env.FERROVIRT_E2E_CA;
if (base.startsWith('https:') && !ca) {
  console.error(`FERROVIRT_URL is https (${base}): set FERROVIRT_E2E_CA to the server's CA certificate (PEM).`);
  process.exit(2);
}
if (ca && !existsSync(ca)) {
  console.error(`FERROVIRT_E2E_CA=${ca}: no such file.`);
  process.exit(2);
}
const env = ca ? { ...process.env, NODE_EXTRA_CA_CERTS: ca } : process.env;
const run = spawnSync(process.execPath, ['--test', 'e2e/'], { stdio: 'inherit', env });
process.exit(run.status ?? 1);

// Browser end-to-end tests of the web UI against a REAL `ferrovirt serve` (no mock server).
// Needs FERROVIRT_URL (e.g. http://127.0.0.1:8080 or https://127.0.0.1:8443), FERROVIRT_E2E_TOKEN
// (a bearer token the server accepts: the admin token), and Debian's chromium (/usr/bin/chromium,
// or CHROMIUM=path); uses playwright-core only, no browser download. For an https server,
// FERROVIRT_E2E_CA is its CA certificate (see scripts/e2e.mjs). Optional: FERROVIRT_E2E_USER (the
// username the server reports for the token), FERROVIRT_E2E_VIEWER_TOKEN (a token that may read
// but not create VMs: the 403 test). Without FERROVIRT_URL every test is skipped. Screenshots go to
// FERROVIRT_UI_ARTIFACTS (default ../target/ui-artifacts).
// Run: FERROVIRT_URL=http://127.0.0.1:8080 FERROVIRT_E2E_TOKEN=... npm run e2e
import { after, before, beforeEach, afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium } from 'playwright-core';

const BASE = process.env.FERROVIRT_URL;
const TOKEN = process.env.FERROVIRT_E2E_TOKEN;
const CA = process.env.FERROVIRT_E2E_CA;
const EXPECTED_USER = process.env.FERROVIRT_E2E_USER;
const VIEWER_TOKEN = process.env.FERROVIRT_E2E_VIEWER_TOKEN;
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const KUBECTL = process.env.KUBECTL ?? '/usr/bin/kubectl';
const NS = process.env.FERROVIRT_E2E_NAMESPACE ?? 'default';
const ARTIFACTS = resolve(process.env.FERROVIRT_UI_ARTIFACTS ?? new URL('../../target/ui-artifacts', import.meta.url).pathname);
const skip = !BASE ? 'FERROVIRT_URL is not set (needs a running ferrovirt serve)'
  : !TOKEN ? 'FERROVIRT_E2E_TOKEN is not set (the bearer token to log in with)'
  : !existsSync(CHROMIUM) ? `no chromium at ${CHROMIUM}` : false;
const suffix = Date.now().toString(36);
// Flags that work on a headless Debian machine without GPU, network or a user profile.
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync'];
const REFUSED = 'Your token was refused (401 Unauthorized). Log in again.';
/**
 * The Content-Security-Policy the UI is built to run under (what `serve` should send with the UI).
 * Inline styles are needed by Mantine's CSS variables, CodeMirror and xterm.js (they inject
 * <style> elements); scripts are the bundle's files only.
 */
const RECOMMENDED_CSP = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; " +
  "font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/** A request as a client outside the browser sends it (https trusts FERROVIRT_E2E_CA through scripts/e2e.mjs). */
async function apiJson(method, path, body, contentType = 'application/json', token = TOKEN) {
  const headers = { ...(token ? { Authorization: `Bearer ${token}` } : {}), ...(body ? { 'Content-Type': contentType } : {}) };
  const res = await fetch(new URL(path, BASE), { method, headers, body: body ? JSON.stringify(body) : undefined });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : null };
}
const vmPath = (name) => `/apis/kubevirt.io/v1/namespaces/${NS}/virtualmachines/${name}`;
const HV = `/apis/harvesterhci.io/v1beta1/namespaces/${NS}`;

/** The real kubectl against the server, with a private HOME (no kubeconfig, no cache shared). */
function kubectl(...args) {
  const home = mkdtempSync(join(tmpdir(), 'fv-kubectl-'));
  try {
    const tls = CA ? ['--certificate-authority', CA] : [];
    return execFileSync(KUBECTL, ['--server', BASE, '--token', TOKEN, ...tls, ...args], { env: { ...process.env, HOME: home, KUBECONFIG: join(home, 'none') }, encoding: 'utf8' });
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
}

/** A VM manifest as the API takes it (EFI without Secure Boot, no disk: OVMF boots fast). */
function vmManifest(name, runStrategy = 'Halted') {
  return {
    apiVersion: 'kubevirt.io/v1', kind: 'VirtualMachine', metadata: { name, namespace: NS },
    spec: { runStrategy, template: { spec: { terminationGracePeriodSeconds: 0, domain: {
      memory: { guest: '256Mi' },
      firmware: { bootloader: { efi: { secureBoot: false } } },
      devices: {},
    } } } },
  };
}

/** Whether the server checks tokens: a made-up one gets 401 (with auth off, it is ignored). */
const BOGUS_TOKEN = `ferrovirt-e2e-not-a-token-${suffix}`;
const authEnforced = skip ? false
  : (await apiJson('GET', '/apis/kubevirt.io/v1/virtualmachines', undefined, undefined, BOGUS_TOKEN).catch(() => ({ status: 0 }))).status === 401;
if (!skip) console.log(`server ${BASE}: ${authEnforced ? 'refuses' : 'does NOT check'} bearer tokens`);

/** A kubeconfig as `serve` writes one (`<data-dir>/admin.kubeconfig`), with the given user entry. */
function kubeconfigText(user) {
  return `apiVersion: v1
kind: Config
clusters:
- name: ferrovirt
  cluster:
    server: ${BASE}
contexts:
- name: someone-else
  context: {cluster: ferrovirt, user: other}
- name: ferrovirt-admin
  context: {cluster: ferrovirt, user: admin}
current-context: ferrovirt-admin
users:
- name: other
  user: {token: not-this-one}
- name: admin
  user:
${Object.entries(user).map(([k, v]) => `    ${k}: ${v}`).join('\n')}
`;
}

/** base64url without padding, as the WebSocket bearer subprotocol carries a token. */
const base64url = (text) => Buffer.from(text, 'utf8').toString('base64url');

/**
 * How long a started (stopped) VM may take to show Running (Stopped). Under TCG on a loaded 2-core
 * machine (the browser, the server and other tests' guests at once) a start takes seconds, but can
 * take tens: the server tests give a VM 60-120 s to run (tests/kubectl_vm.rs,
 * tests/state_restore_serve.rs). The wait ends as soon as the state shows.
 */
const VM_STATE_TIMEOUT_MS = 120000;

/** What the server says about VM `name`: its status, its VMI's status and the events of both. */
async function vmDiagnosis(name) {
  const lines = [];
  const vm = await apiJson('GET', vmPath(name)).catch((e) => ({ status: 0, json: String(e) }));
  lines.push(`VM ${NS}/${name} (GET ${vm.status}): spec.runStrategy=${vm.json?.spec?.runStrategy} status=${JSON.stringify(vm.json?.status ?? vm.json)}`);
  const vmi = await apiJson('GET', `/apis/kubevirt.io/v1/namespaces/${NS}/virtualmachineinstances/${name}`).catch((e) => ({ status: 0, json: String(e) }));
  lines.push(`VMI (GET ${vmi.status}): status=${JSON.stringify(vmi.json?.status ?? vmi.json)}`);
  const events = await apiJson('GET', `/api/v1/namespaces/${NS}/events?fieldSelector=${encodeURIComponent(`involvedObject.name=${name}`)}`).catch(() => ({ json: null }));
  for (const e of events.json?.items ?? []) {
    lines.push(`event ${e.lastTimestamp ?? e.eventTime ?? ''} ${e.involvedObject?.kind} ${e.type} ${e.reason}: ${e.message}`);
  }
  return lines.join('\n');
}

async function waitFor(fn, what, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await fn();
    if (last) return last;
    await new Promise((r) => setTimeout(r, 250));
  }
  assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

describe('ferrovirt web UI', { skip }, () => {
  let browser;
  let context;
  let page;
  const created = new Set();
  before(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    // playwright-core gives every launch a fresh temporary profile (its own --user-data-dir).
    // The UI must run under a strict CSP: the server's own, or else the recommended one added to
    // the page's response here. (A response fulfilled by Playwright has no address, so Chromium's
    // local-network-access check would take the page for a public one and block its loopback
    // WebSocket: that check is off only when the test rewrites responses.)
    const index = await fetch(new URL('/', BASE));
    serverCsp = index.headers.get('content-security-policy');
    console.log(`server CSP: ${serverCsp ?? 'none (the test adds the recommended one)'}; X-Frame-Options: ${index.headers.get('x-frame-options') ?? 'none'}`);
    const args = serverCsp ? CHROMIUM_ARGS : [...CHROMIUM_ARGS, '--disable-features=LocalNetworkAccessChecks'];
    browser = await chromium.launch({ executablePath: CHROMIUM, args });
  });
  let serverCsp;
  let apiRequests; // every API request the page made in this test
  let cspViolations;
  let tokensUsed; // the tokens this test logged in with
  beforeEach(async () => {
    // A fresh page per test: no state (open tabs, hash route, session) leaks from one test into the next.
    // An https test server's CA is a throwaway: Chromium skips verification instead of taking a CA file.
    context = await browser.newContext({
      viewport: { width: 1400, height: 1000 }, reducedMotion: 'reduce', ignoreHTTPSErrors: BASE.startsWith('https:'),
    });
    context.setDefaultTimeout(20000);
    const origin = new URL(BASE).origin;
    if (!serverCsp) {
      await context.route((url) => url.origin === origin && url.pathname === '/', async (route) => {
        const response = await route.fetch();
        await route.fulfill({ response, headers: { ...response.headers(), 'content-security-policy': RECOMMENDED_CSP } });
      });
    }
    page = await context.newPage();
    page.on('pageerror', (e) => console.error('page error:', e.message));
    cspViolations = [];
    page.on('console', (m) => /Content Security Policy/i.test(m.text()) && cspViolations.push(m.text()));
    apiRequests = [];
    page.on('request', (r) => {
      const url = new URL(r.url());
      if (url.origin === origin && /^\/apis?(\/|$)/.test(url.pathname)) apiRequests.push(r);
    });
    tokensUsed = [];
    await logInThroughTheScreen(TOKEN);
    await page.getByRole('button', { name: 'Log out' }).waitFor();
  });
  afterEach(async () => {
    try {
      assert.deepEqual(cspViolations, [], 'the UI broke the Content-Security-Policy');
      // Every API request carried a token this test logged in with, and no cookie.
      assert.ok(apiRequests.length > 0, 'the page made no API request');
      for (const r of apiRequests) {
        const headers = await r.allHeaders();
        assert.ok(tokensUsed.map((t) => `Bearer ${t}`).includes(headers.authorization), `${r.method()} ${r.url()} without the bearer token`);
        assert.equal(headers.cookie, undefined, `${r.method()} ${r.url()} sent a cookie`);
      }
      assert.deepEqual(await context.cookies(), []);
    } finally {
      await context?.close();
    }
  });
  after(async () => {
    for (const n of created) await apiJson('DELETE', vmPath(n)).catch(() => {});
    await browser?.close();
  });

  /** Logs in through the login screen, as a user does (pasting the token). */
  async function logInThroughTheScreen(token) {
    tokensUsed.push(token);
    if (!page.url().startsWith(BASE)) await page.goto(`${BASE}/#/vms`);
    const form = page.getByRole('form', { name: 'Log in' });
    await form.getByRole('tab', { name: 'Token' }).click();
    await form.getByLabel('Bearer token').fill(token);
    await form.getByRole('button', { name: 'Log in' }).click();
  }
  async function logOut() {
    await page.getByRole('button', { name: 'Log out' }).click();
    await page.getByRole('form', { name: 'Log in' }).waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  }

  const shot = (name) => page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });

  /** Clicks (`click`) a VM action in the list and checks that the server accepted its request. */
  async function vmActionThroughTheRow(row, name, action, click) {
    const path = `/virtualmachines/${name}/${action}`;
    const response = page.waitForResponse((r) => r.request().method() === 'PUT' && new URL(r.url()).pathname.endsWith(path));
    await click();
    const answer = await response;
    assert.ok(answer.ok(), `PUT ...${path} answered ${answer.status()}: ${await answer.text().catch(() => '')}\nrow: ${await row.innerText().catch(() => '?')}`);
  }

  /**
   * Waits until the VM's row in the list shows `want`. On timeout it fails with what the row, the
   * page's alerts and the server (VM, VMI, events) say, so that a failure tells why.
   */
  async function waitForRowStatus(row, name, want) {
    const since = Date.now();
    try {
      await row.getByText(want, { exact: true }).waitFor({ timeout: VM_STATE_TIMEOUT_MS });
    } catch (error) {
      const alerts = await page.getByRole('alert').allInnerTexts().catch(() => []);
      await page.screenshot({ path: join(ARTIFACTS, `timeout-${name}-${want}.png`), fullPage: true }).catch(() => {});
      assert.fail(`VM ${name} did not show ${want} in the list within ${VM_STATE_TIMEOUT_MS} ms (${String(error.message).split('\n')[0]})\n` +
        `row: ${await row.innerText().catch(() => '?')}\nalerts on the page: ${JSON.stringify(alerts)}\n${await vmDiagnosis(name)}`);
    }
    console.log(`VM ${name} shows ${want} in the list ${Date.now() - since} ms after the request was accepted`);
  }
  const yamlText = () => page.locator('.cm-content').innerText();

  it('TPM persistent state appears only once TPM is enabled, and the YAML follows', async () => {
    await page.goto(`${BASE}/#/vms/new`);
    await page.getByRole('textbox', { name: 'Name', exact: true }).waitFor();
    assert.equal(await page.getByLabel('TPM persistent state').count(), 0);
    await page.getByLabel('Enable TPM').check();
    await page.getByLabel('TPM persistent state').check();
    await page.getByLabel('Enable TPM').uncheck();
    await page.getByLabel('TPM persistent state').waitFor({ state: 'detached' });
    assert.equal(await page.getByLabel('TPM persistent state').count(), 0);
    await page.getByRole('tab', { name: 'YAML' }).click();
    assert.doesNotMatch(await yamlText(), /tpm:/);
    await page.getByRole('tab', { name: 'Form' }).click();
    await page.getByLabel('Enable TPM').check();
    await page.getByLabel('TPM persistent state').check();
    await page.getByRole('tab', { name: 'YAML' }).click();
    assert.match(await yamlText(), /tpm:\s*\n\s*persistent: true/);
  });

  it('typing persistent: true in the YAML turns the checkbox on; unknown keys survive form edits', async () => {
    const name = `e2e-yaml-${suffix}`;
    await page.goto(`${BASE}/#/vms/new`);
    await page.getByRole('tab', { name: 'YAML' }).click();
    await page.locator('.cm-content').click();
    await page.keyboard.press('Control+A');
    await page.keyboard.insertText(`apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: ${name}
  namespace: ${NS}
  annotations: {e2e.ferrovirt.io/note: kept}
spec:
  runStrategy: Halted
  template:
    spec:
      terminationGracePeriodSeconds: 7
      domain:
        memory: {guest: 256Mi}
        firmware: {bootloader: {efi: {persistent: true}}}
        features: {smm: {enabled: true}}
        devices:
          tpm: {}
`);
    await page.getByRole('tab', { name: 'Form' }).click();
    assert.equal(await page.getByLabel('Secure Boot').isChecked(), true);
    assert.equal(await page.getByLabel('EFI persistent state').isChecked(), true);
    assert.equal(await page.getByLabel('Enable TPM').isChecked(), true);
    assert.equal(await page.getByLabel('TPM persistent state').isChecked(), false);
    // Now type the key itself, as a user does, below `tpm:`.
    await page.getByRole('tab', { name: 'YAML' }).click();
    const line = page.locator('.cm-line', { hasText: 'tpm: {}' });
    await line.click();
    await page.keyboard.press('End');
    for (let i = 0; i < 3; i++) await page.keyboard.press('Backspace');
    await page.keyboard.press('Enter');
    await page.keyboard.insertText('  persistent: true');
    assert.match(await yamlText(), /tpm:\s*\n\s*persistent: true/);
    await page.getByRole('tab', { name: 'Form' }).click();
    assert.equal(await page.getByLabel('TPM persistent state').isChecked(), true);
    // A form edit elsewhere keeps the keys the form does not know.
    await page.getByLabel('CPU cores').fill('2');
    await page.getByRole('tab', { name: 'YAML' }).click();
    const yaml = await yamlText();
    assert.match(yaml, /terminationGracePeriodSeconds: 7/);
    assert.match(yaml, /e2e.ferrovirt.io\/note: kept/);
    assert.match(yaml, /cores: 2/);
    await page.getByRole('button', { name: 'Create', exact: true }).click();
    created.add(name);
    await page.waitForURL(new RegExp(`#/vms/${NS}/${name}$`));
    const { json } = await apiJson('GET', vmPath(name));
    assert.equal(json.spec.template.spec.terminationGracePeriodSeconds, 7);
    assert.equal(json.metadata.annotations['e2e.ferrovirt.io/note'], 'kept');
    assert.deepEqual(json.spec.template.spec.domain.devices.tpm, { persistent: true });
  });

  it('creates a VM with persistent TPM and EFI in the form: the YAML tab and kubectl show persistent: true', async () => {
    const name = `e2e-tpm-${suffix}`;
    await page.goto(`${BASE}/#/vms/new`);
    await page.getByRole('textbox', { name: 'Name', exact: true }).fill(name);
    await page.getByLabel('Namespace').fill(NS);
    await page.getByLabel('Memory').fill('256Mi');
    await page.getByLabel('EFI', { exact: true }).check();
    await page.getByLabel('EFI persistent state').check();
    await page.getByLabel('Enable TPM').check();
    await page.getByLabel('TPM persistent state').check();
    await page.waitForTimeout(300);
    await shot('form-tpm-persistent');
    await page.getByRole('button', { name: 'Create', exact: true }).click();
    created.add(name);
    await page.waitForURL(new RegExp(`#/vms/${NS}/${name}$`));
    const { json } = await apiJson('GET', vmPath(name));
    assert.deepEqual(json.spec.template.spec.domain.devices.tpm, { persistent: true });
    assert.equal(json.spec.template.spec.domain.firmware.bootloader.efi.persistent, true);
    assert.equal(json.spec.template.spec.domain.features.smm.enabled, true);
    // kubectl sees what the form wrote.
    const yaml = kubectl('get', 'vm', name, '-n', NS, '-o', 'yaml');
    assert.match(yaml, /tpm:\n\s+persistent: true/);
    assert.match(yaml, /efi:\n(\s+\w+: .*\n)*?\s+persistent: true/);
    // The stored VM in the editor's YAML tab.
    await page.goto(`${BASE}/#/vms/${NS}/${name}/edit`);
    await page.getByRole('tab', { name: 'YAML' }).click();
    await page.locator('.cm-content').waitFor();
    assert.match(await yamlText(), /tpm:\s*\n\s*persistent: true/);
    await shot('yaml-tab');
    // The list.
    await page.goto(`${BASE}/#/vms`);
    const row = page.locator(`tr[data-vm="${name}"]`);
    await row.waitFor();
    assert.match(await row.innerText(), /persistent/);
    assert.match(await row.innerText(), /EFI\+Secure Boot \(persistent\)/);
    await shot('vm-list');
  });

  it('choosing Windows 11 sets spec.preference: the form shows what it brings, the YAML and kubectl show the reference', async () => {
    const name = `e2e-win11-${suffix}`;
    await page.goto(`${BASE}/#/vms/new`);
    await page.getByRole('textbox', { name: 'Name', exact: true }).fill(name);
    await page.getByLabel('Namespace').fill(NS);
    await page.getByRole('combobox', { name: 'Operating system' }).click();
    await page.getByRole('option', { name: 'Windows 11', exact: true }).click();
    const brings = page.getByTestId('preference-brings');
    for (const item of ['EFI', 'Secure Boot', 'persistent EFI', 'persistent TPM', 'SMM', 'Hyper-V enlightenments']) {
      await brings.getByText(item, { exact: true }).waitFor();
    }
    assert.match(await page.getByTestId('firmware-from-preference').innerText(), /EFI, Secure Boot, persistent EFI variables/);
    assert.match(await page.getByTestId('tpm-from-preference').innerText(), /persistent state/);
    await shot('form-windows-11');
    await page.getByRole('tab', { name: 'YAML' }).click();
    const yaml = await yamlText();
    assert.match(yaml, /preference:\s*\n\s*kind: VirtualMachineClusterPreference\s*\n\s*name: windows.11/);
    assert.doesNotMatch(yaml, /bootloader|tpm:|preferredEfi/, 'the YAML holds the reference, not an expanded copy');
    await page.getByRole('button', { name: 'Create', exact: true }).click();
    created.add(name);
    await page.waitForURL(new RegExp(`#/vms/${NS}/${name}$`));
    const { json } = await apiJson('GET', vmPath(name));
    assert.deepEqual(json.spec.preference, { kind: 'VirtualMachineClusterPreference', name: 'windows.11' });
    assert.equal(json.spec.template.spec.domain.firmware?.bootloader, undefined);
    assert.equal(json.spec.template.spec.domain.devices.tpm, undefined);
    assert.match(kubectl('get', 'vm', name, '-n', NS, '-o', 'yaml'), /preference:\n\s+kind: VirtualMachineClusterPreference\n\s+name: windows.11/);
    // Editing it again: the form reads the choice back from the stored VM.
    await page.goto(`${BASE}/#/vms/${NS}/${name}/edit`);
    await page.getByTestId('preference-brings').getByText('persistent TPM', { exact: true }).waitFor();
  });

  it('shows a server cause inline at "TPM persistent state" when the feature gate is off', async () => {
    const kv = '/apis/kubevirt.io/v1/namespaces/kubevirt/kubevirts/kubevirt';
    const before = (await apiJson('GET', kv)).json;
    const gates = before.spec?.configuration?.developerConfiguration?.featureGates ?? [];
    await apiJson('PATCH', kv, { spec: { configuration: { developerConfiguration: { featureGates: gates.filter((g) => g !== 'VMPersistentState') } } } }, 'application/merge-patch+json');
    try {
      await page.goto(`${BASE}/#/vms/new`);
      await page.getByRole('textbox', { name: 'Name', exact: true }).fill(`e2e-gate-${suffix}`);
      await page.getByLabel('Enable TPM').check();
      await page.getByLabel('TPM persistent state').check();
      await page.getByRole('button', { name: 'Create', exact: true }).click();
      const box = page.getByLabel('TPM persistent state');
      await page.getByText(/VMPersistentState feature gate is not enabled/).first().waitFor();
      assert.equal(await box.getAttribute('aria-invalid'), 'true');
      // The message is the checkbox's own description (inline, not only in a banner).
      const ids = ((await box.getAttribute('aria-describedby')) ?? '').split(/\s+/).filter(Boolean);
      const texts = await Promise.all(ids.map((id) => page.locator(`[id="${id}"]`).innerText()));
      assert.ok(texts.some((t) => /VMPersistentState feature gate is not enabled/.test(t)), texts.join(' | '));
    } finally {
      await apiJson('PATCH', kv, { spec: { configuration: { developerConfiguration: { featureGates: gates } } } }, 'application/merge-patch+json');
    }
  });

  it('saves a VM as template versions, picks the default, and creates 3 VMs from a version', async () => {
    const source = `e2e-src-${suffix}`;
    const template = `e2e-tmpl-${suffix}`;
    assert.equal((await apiJson('POST', `/apis/kubevirt.io/v1/namespaces/${NS}/virtualmachines`, {
      ...vmManifest(source),
      spec: { runStrategy: 'Halted', template: { spec: { domain: { memory: { guest: '256Mi' }, devices: { tpm: { persistent: true } } } } } },
    })).status, 201);
    created.add(source);
    await page.goto(`${BASE}/#/vms/${NS}/${source}/edit`);
    for (const description of ['first', 'second']) {
      await page.getByRole('button', { name: 'Save as template' }).click();
      const dialog = page.getByRole('dialog');
      await dialog.getByLabel('Template', { exact: true }).fill(template);
      await dialog.getByLabel('Version description').fill(description);
      const makeDefault = dialog.getByLabel('Make it the default version');
      if (await makeDefault.isChecked()) await makeDefault.uncheck();
      await dialog.getByRole('button', { name: 'Save version' }).click();
      await dialog.getByRole('status').filter({ hasText: /Saved as/ }).waitFor();
      await page.keyboard.press('Escape');
      await dialog.waitFor({ state: 'detached' });
    }
    const versions = (await apiJson('GET', `${HV}/virtualmachinetemplateversions`)).json.items
      .filter((v) => v.spec.templateId === `${NS}/${template}`)
      .sort((a, b) => a.status.version - b.status.version);
    assert.deepEqual(versions.map((v) => v.status.version), [1, 2]);
    assert.deepEqual(versions[0].spec.vm.spec.template.spec.domain.devices.tpm, { persistent: true });
    assert.equal(versions[0].spec.vm.spec.template.spec.domain.firmware?.uuid, undefined);
    // kubectl knows Harvester's kinds and short names.
    assert.match(kubectl('get', 'vmtemplateversions', '-n', NS), new RegExp(`${NS}/${template}\\s+2`));

    await page.goto(`${BASE}/#/templates`);
    const card = page.locator(`[data-template="${template}"]`);
    await card.waitFor();
    const v2row = card.getByRole('row').filter({ hasText: versions[1].metadata.name });
    await v2row.getByRole('button', { name: 'Set default' }).click();
    await waitFor(async () => (await apiJson('GET', `${HV}/virtualmachinetemplates/${template}`)).json.spec.defaultVersionId === `${NS}/${versions[1].metadata.name}`, 'the default version to change');
    await v2row.getByText('default', { exact: true }).waitFor();

    await v2row.getByRole('button', { name: 'Create VMs' }).click();
    const dialog = page.getByRole('dialog');
    await dialog.getByLabel('Count').fill('3');
    await dialog.getByLabel('Name prefix').fill(`e2e-many-${suffix}`);
    await dialog.getByRole('button', { name: 'Create', exact: true }).click();
    await dialog.getByRole('status').filter({ hasText: /Created:/ }).waitFor();
    for (let i = 1; i <= 3; i++) {
      const name = `e2e-many-${suffix}-${i}`;
      created.add(name);
      const { status, json } = await apiJson('GET', vmPath(name));
      assert.equal(status, 200, name);
      assert.equal(json.metadata.annotations['harvesterhci.io/vmTemplateVersion'], `${NS}/${versions[1].metadata.name}`);
      assert.deepEqual(json.spec.template.spec.domain.devices.tpm, { persistent: true });
    }
    await shot('templates-create-vms');
    await page.keyboard.press('Escape');
    await dialog.waitFor({ state: 'detached' });
    await shot('templates');
  });

  it('starts a persistent-TPM VM: Running, its backend-storage volume, OVMF output in the serial console and its screen in the VNC console', async () => {
    const name = `e2e-run-${suffix}`;
    const manifest = vmManifest(name);
    manifest.spec.template.spec.domain.devices.tpm = { persistent: true };
    manifest.spec.template.spec.domain.firmware.bootloader.efi.persistent = true;
    assert.equal((await apiJson('POST', `/apis/kubevirt.io/v1/namespaces/${NS}/virtualmachines`, manifest)).status, 201);
    created.add(name);
    await page.goto(`${BASE}/#/vms`);
    const row = page.locator(`tr[data-vm="${name}"]`);
    await vmActionThroughTheRow(row, name, 'start', () => row.getByRole('button', { name: `Start ${name}`, exact: true }).click());
    await waitForRowStatus(row, name, 'Running');
    // The detail page: status, the backend-storage PVC (live), conditions.
    await page.goto(`${BASE}/#/vms/${NS}/${name}`);
    const volume = page.getByRole('table', { name: 'Backend-storage volume' });
    await volume.getByText(`persistent-state-for-${name}-`, { exact: false }).waitFor();
    assert.match(await volume.innerText(), /Bound/);
    await page.getByRole('table', { name: 'Conditions' }).getByText('Ready', { exact: false }).first().waitFor();
    await shot('vm-detail');
    // The WebSocket handshake as Chromium sends it (page JavaScript cannot see these headers).
    const cdp = await context.newCDPSession(page);
    const handshakes = [];
    const accepted = [];
    const header = (headers, name) => Object.entries(headers).find(([k]) => k.toLowerCase() === name)?.[1];
    cdp.on('Network.webSocketWillSendHandshakeRequest', (e) => handshakes.push(e.request.headers));
    cdp.on('Network.webSocketHandshakeResponseReceived', (e) => accepted.push(e.response.headers));
    await cdp.send('Network.enable');
    await page.getByRole('tab', { name: 'Serial console' }).click();
    const terminal = page.locator('[data-testid="serial-console"] .xterm-rows');
    await terminal.waitFor();
    await page.getByText('open', { exact: true }).waitFor();
    // OVMF without a boot disk ends in its boot manager / UEFI shell; Enter wakes a prompt.
    const text = await waitFor(async () => {
      await page.locator('[data-testid="serial-console"]').click();
      await page.keyboard.press('Enter');
      const t = await terminal.innerText();
      return /\S{3,}/.test(t) ? t : null;
    }, 'output of the VM in the serial console', 60000);
    await page.waitForTimeout(1500);
    await shot('console');
    // The token rides in a subprotocol after the real one; the server chose plain.kubevirt.io.
    assert.ok(handshakes.length >= 1, 'no WebSocket handshake seen');
    for (const h of handshakes) {
      assert.equal(header(h, 'sec-websocket-protocol'), `plain.kubevirt.io, base64url.bearer.authorization.k8s.io.${base64url(TOKEN)}`);
      assert.equal(header(h, 'authorization'), undefined);
      assert.equal(header(h, 'cookie'), undefined);
      assert.equal(header(h, 'origin'), new URL(BASE).origin);
    }
    assert.equal(header(accepted.at(-1), 'sec-websocket-protocol'), 'plain.kubevirt.io');
    console.log(`serial console shows: ${JSON.stringify(text.replace(/\s+/g, ' ').trim().slice(0, 300))}`);
    // The graphical console: noVNC over the vnc WebSocket shows OVMF's screen (the firmware's own
    // video mode, not QEMU's 640x480 "not initialized" placeholder, and not blank).
    await page.getByRole('tab', { name: 'Console', exact: true }).click();
    const vnc = page.locator('[data-testid="vnc-console"]');
    await vnc.locator('canvas').waitFor();
    await page.getByText('open', { exact: true }).waitFor();
    const screen = await waitFor(async () => {
      const s = await vnc.locator('canvas').evaluate((canvas) => {
        const ctx = canvas.getContext('2d');
        const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
        let uniform = true;
        for (let i = 4; i < data.length && uniform; i += 4) {
          if (data[i] !== data[0] || data[i + 1] !== data[1] || data[i + 2] !== data[2]) uniform = false;
        }
        return { width: canvas.width, height: canvas.height, uniform };
      });
      return s.width > 640 && s.height > 480 && !s.uniform ? s : null;
    }, "OVMF's screen in the noVNC console", 90000);
    assert.equal(await page.getByRole('button', { name: 'Ctrl-Alt-Del' }).isEnabled(), true);
    await page.waitForTimeout(1000);
    await shot('vnc-console');
    assert.equal(header(accepted.at(-1), 'sec-websocket-protocol'), 'plain.kubevirt.io');
    console.log(`the VNC console shows a ${screen.width}x${screen.height} screen`);
    // "Migrate to host...": a host added by pasting its kubeconfig. Nothing listens at its address
    // (port 9 of loopback), so this server fails the migration before anything moves (creating the
    // receiver there is its first step) and the VM runs on; the host is known from then on.
    await page.goto(`${BASE}/#/vms/${NS}/${name}`);
    await page.getByRole('button', { name: `Migrate ${name} to another host` }).click();
    const migrate = page.getByRole('dialog');
    const caData = CA ? readFileSync(CA).toString('base64') : Buffer.from('no CA').toString('base64');
    const destination = 'https://127.0.0.1:9';
    await migrate.getByLabel('Kubeconfig of the destination host').fill(`apiVersion: v1
kind: Config
clusters:
- name: elsewhere
  cluster: {server: '${destination}', certificate-authority-data: ${caData}}
users:
- name: admin
  user: {token: not-used-here}
contexts:
- name: elsewhere
  context: {cluster: elsewhere, user: admin}
current-context: elsewhere
`);
    await migrate.getByText(destination, { exact: true }).waitFor();
    await shot('migrate-dialog');
    await migrate.getByRole('button', { name: 'Migrate', exact: true }).click();
    const migrationStatus = migrate.getByRole('status', { name: 'Migration status' });
    const failure = await waitFor(async () => {
      const t = await migrationStatus.innerText().catch(() => '');
      return /^Failed/.test(t) ? t : null;
    }, 'the migration to an unreachable host to fail', 60000);
    assert.match(failure, /cannot reach the destination https:\/\/127\.0\.0\.1:9/);
    assert.match(failure, /keeps running on this host/);
    await shot('migrate-failed');
    const secrets = (await apiJson('GET', `/api/v1/namespaces/${NS}/secrets?labelSelector=${encodeURIComponent('migration.ferrovirt.io/destination=true')}`)).json;
    const secret = (secrets.items ?? []).find((x) => x.metadata?.annotations?.['migration.ferrovirt.io/server'] === destination);
    assert.equal(secret?.metadata?.name, 'migration-destination-127-0-0-1-9');
    const vmims = (await apiJson('GET', `/apis/kubevirt.io/v1/namespaces/${NS}/virtualmachineinstancemigrations`)).json;
    const vmim = (vmims.items ?? []).find((m) => m.spec?.vmiName === name);
    assert.deepEqual(vmim?.metadata?.annotations, {
      'migration.ferrovirt.io/destination-kubeconfig-secret': 'migration-destination-127-0-0-1-9',
      'migration.ferrovirt.io/prepare-destination': 'true',
    });
    assert.equal(vmim?.spec?.sendTo?.connectURL, destination);
    await page.keyboard.press('Escape');
    await migrate.waitFor({ state: 'detached' });
    // Offered next time; the VM runs on.
    await page.getByRole('button', { name: `Migrate ${name} to another host` }).click();
    // The dialog offers "Add a host" until its list of known hosts has loaded.
    const host = page.getByRole('dialog').getByRole('combobox', { name: 'Destination host' });
    const offered = await waitFor(async () => {
      const value = await host.inputValue().catch(() => '');
      return value === destination ? value : null;
    }, `the known host ${destination} to be offered`, 15000);
    assert.equal(offered, destination);
    await page.keyboard.press('Escape');
    await page.getByRole('dialog').waitFor({ state: 'detached' });
    assert.equal((await apiJson('GET', `/apis/kubevirt.io/v1/namespaces/${NS}/virtualmachineinstances/${name}`)).json.status?.phase, 'Running');
    // Stop it again, as a user does (with the confirmation).
    await page.goto(`${BASE}/#/vms`);
    await row.getByRole('button', { name: 'Stop' }).click();
    await vmActionThroughTheRow(row, name, 'stop', () => page.getByRole('dialog').getByRole('button', { name: 'Stop' }).click());
    await waitForRowStatus(row, name, 'Stopped');
  });

  it('snapshots tab: takes an offline snapshot (size, offline), restores it as a new VM, clones with a fresh TPM, deletes it', async () => {
    const name = `e2e-run-${suffix}`;
    await page.goto(`${BASE}/#/vms/${NS}/${name}`);
    await page.getByRole('tab', { name: 'Snapshots' }).click();
    await page.getByRole('button', { name: 'Take snapshot' }).click();
    const table = page.getByRole('table', { name: 'Snapshots' });
    await table.getByText('Succeeded').waitFor({ timeout: 60000 });
    const row = table.locator('tbody tr').first();
    await waitFor(async () => (/KiB/.test(await row.innerText()) ? true : null), 'the snapshot size', 30000);
    assert.match(await row.innerText(), /offline/);
    await shot('snapshots');
    // Restore as a new VM: a new VM with another firmware UUID.
    const copy = `${name}-restored`;
    await row.getByRole('button', { name: 'Restore as new VM' }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Restore' }).click();
    created.add(copy);
    const restored = await waitFor(async () => {
      const r = await apiJson('GET', vmPath(copy));
      return r.status === 200 && !r.json.metadata?.annotations?.['restore.ferrovirt.io/created-by'] ? r.json : null;
    }, 'the restored VM', 60000);
    const original = (await apiJson('GET', vmPath(name))).json;
    assert.notEqual(restored.spec.template.spec.domain.firmware.uuid, original.spec.template.spec.domain.firmware.uuid);
    // Clone, with the two identity choices explained in one line each.
    const clone = `${name}-golden`;
    await page.getByRole('button', { name: `Clone ${name}` }).click();
    const dialog = page.getByRole('dialog');
    await dialog.getByText('BitLocker', { exact: false }).waitFor();
    await dialog.getByText('own EK certificate', { exact: false }).waitFor();
    await dialog.getByLabel('New VM name').fill(clone);
    await dialog.getByText('Fresh:', { exact: false }).click();
    await dialog.getByText('Reset:', { exact: false }).click();
    await shot('clone-dialog');
    await dialog.getByRole('button', { name: 'Clone' }).click();
    created.add(clone);
    const clones = await waitFor(async () => {
      const list = (await apiJson('GET', `/apis/clone.kubevirt.io/v1beta1/namespaces/${NS}/virtualmachineclones`)).json;
      const done = (list.items ?? []).find((c) => c.spec?.target?.name === clone && c.status?.phase === 'Succeeded');
      return done ?? null;
    }, 'the clone to succeed', 60000);
    assert.equal(clones.metadata.annotations['clone.ferrovirt.io/tpm'], 'fresh');
    assert.equal(clones.metadata.annotations['clone.ferrovirt.io/efi'], 'reset');
    assert.equal((await apiJson('GET', vmPath(clone))).status, 200);
    // Delete the snapshot.
    await row.getByRole('button', { name: 'Delete' }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Delete' }).click();
    await page.getByText('No snapshots of this VM.').waitFor({ timeout: 30000 });
  });

  it('settings: the VMPersistentState gate and vmStateStorageClass are written to the KubeVirt CR', async () => {
    const kv = '/apis/kubevirt.io/v1/namespaces/kubevirt/kubevirts/kubevirt';
    const before = (await apiJson('GET', kv)).json;
    const gates = before.spec?.configuration?.developerConfiguration?.featureGates ?? [];
    assert.ok(gates.includes('VMPersistentState'));
    try {
      await page.goto(`${BASE}/#/settings`);
      const gate = page.getByLabel('VMPersistentState feature gate');
      assert.equal(await gate.isChecked(), true);
      await gate.uncheck();
      await page.getByRole('combobox', { name: 'VM state storage class' }).click();
      await page.getByRole('option', { name: 'local-path' }).click();
      await page.getByRole('button', { name: 'Save' }).click();
      await page.getByRole('status').filter({ hasText: 'Saved.' }).waitFor();
      const after = (await apiJson('GET', kv)).json;
      assert.ok(!after.spec.configuration.developerConfiguration.featureGates.includes('VMPersistentState'));
      assert.equal(after.spec.configuration.vmStateStorageClass, 'local-path');
      await shot('settings');
    } finally {
      await apiJson('PATCH', kv, { spec: { configuration: { developerConfiguration: { featureGates: gates }, vmStateStorageClass: before.spec?.configuration?.vmStateStorageClass ?? null } } }, 'application/merge-patch+json');
    }
  });

  it('deletes a VM after confirmation', async () => {
    const name = `e2e-del-${suffix}`;
    assert.equal((await apiJson('POST', `/apis/kubevirt.io/v1/namespaces/${NS}/virtualmachines`, vmManifest(name))).status, 201);
    await page.goto(`${BASE}/#/vms`);
    const row = page.locator(`tr[data-vm="${name}"]`);
    await row.getByRole('button', { name: 'Delete' }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Delete' }).click();
    await row.waitFor({ state: 'detached' });
    assert.equal((await apiJson('GET', vmPath(name))).status, 404);
  });

  it('logs in with a kubeconfig (not with a client certificate), shows who is logged in, keeps no cookie, logs out', async () => {
    await logOut();
    await shot('login');
    const form = page.getByRole('form', { name: 'Log in' });
    await form.getByRole('tab', { name: 'Kubeconfig' }).click();
    const box = form.getByRole('textbox', { name: 'Kubeconfig' });
    await box.fill(kubeconfigText({ 'client-certificate-data': 'LS0tLS1CRUdJTg==', 'client-key-data': 'LS0tLS1CRUdJTg==' }));
    await form.getByText(/user "admin" \(context "ferrovirt-admin"\) logs in with a client certificate, which the browser cannot use\. Log in with a bearer token instead/).waitFor();
    assert.match(await form.innerText(), /<data-dir>\/admin\.kubeconfig/);
    await shot('login-kubeconfig-certificate');
    await form.getByRole('button', { name: 'Log in' }).click();
    assert.equal(await page.getByRole('button', { name: 'Log out' }).count(), 0);

    tokensUsed.push(TOKEN);
    await box.fill(kubeconfigText({ token: TOKEN }));
    await form.getByRole('status').filter({ hasText: 'Token of user admin (context ferrovirt-admin)' }).waitFor();
    await form.getByRole('button', { name: 'Log in' }).click();
    const who = page.getByTestId('current-user').filter({ hasText: 'Logged in as' });
    await who.waitFor();
    const user = (await who.innerText()).replace(/^Logged in as\s*/, '').trim();
    console.log(`the UI shows: logged in as ${JSON.stringify(user)}`);
    if (EXPECTED_USER) assert.equal(user, EXPECTED_USER);
    else if (!authEnforced) assert.equal(user, 'token'); // no SelfSubjectReview without authentication
    await page.locator('tr[data-vm], :text("No virtual machines yet.")').first().waitFor();
    // The session survives a reload of the tab (sessionStorage), and lives nowhere else.
    await page.reload();
    await page.getByRole('button', { name: 'Log out' }).waitFor();
    assert.equal(await page.evaluate(() => document.cookie), '');
    assert.equal(await page.evaluate(() => localStorage.length), 0);
    await logOut();
  });

  it('a token the server refuses returns to the login screen with the reason', { skip: !authEnforced && 'the server does not check tokens yet' }, async () => {
    await logOut();
    await logInThroughTheScreen(BOGUS_TOKEN);
    const form = page.getByRole('form', { name: 'Log in' });
    await form.getByRole('alert').filter({ hasText: REFUSED }).waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.length), 0);
    await shot('login-refused');
  });

  it("a forbidden action shows the server's message where it was tried, without logging out", { skip: !VIEWER_TOKEN && 'FERROVIRT_E2E_VIEWER_TOKEN is not set' }, async () => {
    await logOut();
    await logInThroughTheScreen(VIEWER_TOKEN);
    await page.getByRole('button', { name: 'Log out' }).waitFor();
    await page.goto(`${BASE}/#/vms/new`);
    await page.getByRole('textbox', { name: 'Name', exact: true }).fill(`e2e-forbidden-${suffix}`);
    await page.getByRole('button', { name: 'Create', exact: true }).click();
    await page.getByText(/is forbidden: User ".+" cannot create resource "virtualmachines" in API group "kubevirt.io"/).first().waitFor();
    assert.equal(await page.getByRole('button', { name: 'Log out' }).count(), 1);
    await shot('forbidden');
  });
});

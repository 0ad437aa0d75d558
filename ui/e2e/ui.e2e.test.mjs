// Browser end-to-end tests of the web UI against a REAL `ferrovirt serve` (no mock server).
// Needs FERROVIRT_URL (e.g. http://127.0.0.1:8080) and Debian's chromium (/usr/bin/chromium, or
// CHROMIUM=path); uses playwright-core only, no browser download. Without FERROVIRT_URL every test
// is skipped. Run: FERROVIRT_URL=http://127.0.0.1:8080 npm run e2e
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { chromium } from 'playwright-core';

const BASE = process.env.FERROVIRT_URL;
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const NS = process.env.FERROVIRT_E2E_NAMESPACE ?? 'default';
const skip = !BASE ? 'FERROVIRT_URL is not set (needs a running ferrovirt serve)' : !existsSync(CHROMIUM) ? `no chromium at ${CHROMIUM}` : false;
const suffix = Date.now().toString(36);

async function apiJson(method, path, body, contentType = 'application/json') {
  const res = await fetch(new URL(path, BASE), { method, headers: body ? { 'Content-Type': contentType } : {}, body: body ? JSON.stringify(body) : undefined });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : null };
}
const vmPath = (name) => `/apis/kubevirt.io/v1/namespaces/${NS}/virtualmachines/${name}`;

describe('ferrovirt web UI', { skip }, () => {
  let browser;
  let page;
  const created = [];
  before(async () => {
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    page = await browser.newPage();
  });
  after(async () => {
    for (const n of created) await apiJson('DELETE', vmPath(n)).catch(() => {});
    await browser?.close();
  });

  it('TPM persistent state appears only once TPM is enabled, and the YAML follows', async () => {
    await page.goto(`${BASE}/#/vms/new`);
    await assert.equal(await page.getByLabel('TPM persistent state').count(), 0);
    await page.getByLabel('Enable TPM').check();
    await page.getByLabel('TPM persistent state').check();
    await page.getByRole('tab', { name: 'YAML' }).click();
    const yaml = await page.locator('.cm-content').innerText();
    assert.match(yaml, /tpm:\s*\n\s*persistent: true/);
  });

  it('editing the YAML updates the form and keeps unknown keys', async () => {
    await page.goto(`${BASE}/#/vms/new`);
    await page.getByRole('tab', { name: 'YAML' }).click();
    await page.locator('.cm-content').click();
    await page.keyboard.press('Control+A');
    await page.keyboard.insertText(`apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: e2e-yaml-${suffix}, namespace: ${NS}}
spec:
  runStrategy: Halted
  template:
    spec:
      terminationGracePeriodSeconds: 7
      domain:
        firmware: {bootloader: {efi: {persistent: true}}}
        features: {smm: {enabled: true}}
        devices: {tpm: {}}
`);
    await page.getByRole('tab', { name: 'Form' }).click();
    assert.equal(await page.getByLabel('Secure Boot').isChecked(), true);
    assert.equal(await page.getByLabel('EFI persistent state').isChecked(), true);
    assert.equal(await page.getByLabel('Enable TPM').isChecked(), true);
    assert.equal(await page.getByLabel('TPM persistent state').isChecked(), false);
    await page.getByLabel('TPM persistent state').check();
    await page.getByRole('tab', { name: 'YAML' }).click();
    const yaml = await page.locator('.cm-content').innerText();
    assert.match(yaml, /terminationGracePeriodSeconds: 7/);
    assert.match(yaml, /persistent: true/);
  });

  it('creates a VM with persistent TPM and EFI, shown in the list', async () => {
    const name = `e2e-tpm-${suffix}`;
    await page.goto(`${BASE}/#/vms/new`);
    await page.getByRole('textbox', { name: 'Name', exact: true }).fill(name);
    await page.getByLabel('Namespace').fill(NS);
    await page.getByLabel('EFI', { exact: true }).check();
    await page.getByLabel('EFI persistent state').check();
    await page.getByLabel('Enable TPM').check();
    await page.getByLabel('TPM persistent state').check();
    await page.getByRole('button', { name: 'Create', exact: true }).click();
    created.push(name);
    await page.waitForURL(new RegExp(`#/vms/${NS}/${name}$`));
    const { json } = await apiJson('GET', vmPath(name));
    assert.deepEqual(json.spec.template.spec.domain.devices.tpm, { persistent: true });
    assert.equal(json.spec.template.spec.domain.firmware.bootloader.efi.persistent, true);
    assert.equal(json.spec.template.spec.domain.features.smm.enabled, true);
    await page.goto(`${BASE}/#/vms`);
    const row = page.locator(`tr[data-vm="${name}"]`);
    await row.waitFor();
    assert.match(await row.innerText(), /persistent/);
    assert.match(await row.innerText(), /EFI\+Secure Boot \(persistent\)/);
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

  it('deletes a VM after confirmation', async () => {
    const name = `e2e-del-${suffix}`;
    await apiJson('POST', `/apis/kubevirt.io/v1/namespaces/${NS}/virtualmachines`, {
      apiVersion: 'kubevirt.io/v1', kind: 'VirtualMachine', metadata: { name, namespace: NS },
      spec: { runStrategy: 'Halted', template: { spec: { domain: { devices: {} } } } },
    });
    await page.goto(`${BASE}/#/vms`);
    const row = page.locator(`tr[data-vm="${name}"]`);
    await row.getByRole('button', { name: 'Delete' }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Delete' }).click();
    await row.waitFor({ state: 'detached' });
    assert.equal((await apiJson('GET', vmPath(name))).status, 404);
  });
});

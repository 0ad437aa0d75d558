import { describe, expect, it } from 'vitest';
import { parseDocument } from 'yaml';
import { preferredFirmware, preferredTpm, summarizePreference } from './preferences';
import { applyForm, newVmObject, readForm, TEMPLATE_VERSION_ROOT, VM_ROOT } from './vmForm';
import { objectToYaml } from './yamlDoc';

/** The windows.11 cluster preference `ferrovirt serve` seeds (common-instancetypes' values). */
const WINDOWS_11 = {
  cpu: { preferredCPUTopology: 'cores' },
  devices: { preferredDiskBus: 'sata', preferredInterfaceModel: 'e1000e', preferredTPM: { persistent: true } },
  features: { preferredSmm: {}, preferredHyperv: { relaxed: {} } },
  firmware: { preferredEfi: { persistent: true, secureBoot: true } },
};

describe('the OS choice <-> spec.preference', () => {
  it('choosing Windows 11 writes the reference only, never an expanded copy', () => {
    const doc = parseDocument(objectToYaml(newVmObject()));
    const values = readForm(doc.toJS(), VM_ROOT);
    expect(values.preference).toBe('');
    expect(values.firmwareSet).toBe(false);
    applyForm(doc, VM_ROOT, { ...values, name: 'win', preference: 'windows.11' });
    const vm = doc.toJS();
    expect(vm.spec.preference).toEqual({ kind: 'VirtualMachineClusterPreference', name: 'windows.11' });
    expect(vm.spec.template.spec.domain.firmware).toBeUndefined();
    expect(vm.spec.template.spec.domain.devices.tpm).toBeUndefined();
    expect(String(doc)).toMatch(/preference:\n\s+kind: VirtualMachineClusterPreference\n\s+name: windows.11/);
    // And back: the form reads the reference from the YAML.
    expect(readForm(vm, VM_ROOT).preference).toBe('windows.11');
    // "Other" removes it.
    applyForm(doc, VM_ROOT, { ...readForm(doc.toJS(), VM_ROOT), preference: '' });
    expect(doc.toJS().spec.preference).toBeUndefined();
  });

  it('reads a preference typed in the YAML, and a namespaced one is not an OS choice', () => {
    const yaml = `apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: a}
spec:
  preference: {name: windows.2k22}
  template: {spec: {domain: {devices: {}, firmware: {bootloader: {efi: {}}}}}}
`;
    const values = readForm(parseDocument(yaml).toJS(), VM_ROOT);
    expect(values.preference).toBe('windows.2k22');
    expect(values.firmwareSet).toBe(true);
    const namespaced = yaml.replace('{name: windows.2k22}', '{kind: VirtualMachinePreference, name: mine}');
    expect(readForm(parseDocument(namespaced).toJS(), VM_ROOT).preference).toBe('');
  });

  it('works inside a template version (spec.vm.spec.preference)', () => {
    const doc = parseDocument(objectToYaml({ apiVersion: 'harvesterhci.io/v1beta1', kind: 'VirtualMachineTemplateVersion',
      metadata: { name: 'v' }, spec: { vm: newVmObject() } }));
    const values = readForm(doc.toJS(), TEMPLATE_VERSION_ROOT);
    applyForm(doc, TEMPLATE_VERSION_ROOT, { ...values, preference: 'fedora' }, { identity: false });
    expect(doc.toJS().spec.vm.spec.preference).toEqual({ kind: 'VirtualMachineClusterPreference', name: 'fedora' });
  });

  it('BIOS chosen over a preference is written explicitly', () => {
    const doc = parseDocument(objectToYaml(newVmObject()));
    const values = readForm(doc.toJS(), VM_ROOT);
    applyForm(doc, VM_ROOT, { ...values, preference: 'windows.11', firmware: 'bios', firmwareSet: true });
    expect(doc.toJS().spec.template.spec.domain.firmware.bootloader).toEqual({ bios: {} });
  });
});

describe('what a preference brings', () => {
  it('windows.11: EFI, Secure Boot, persistent EFI and TPM, SMM, Hyper-V', () => {
    expect(summarizePreference(WINDOWS_11)).toEqual([
      'EFI', 'Secure Boot', 'persistent EFI', 'persistent TPM', 'SMM', 'Hyper-V enlightenments', 'sata disks', 'e1000e network',
    ]);
    expect(preferredFirmware(WINDOWS_11)).toEqual({ efi: true, secureBoot: true, persistent: true });
    expect(preferredTpm(WINDOWS_11)).toEqual({ persistent: true });
  });

  it('a Linux preference without firmware or TPM preferences', () => {
    const ubuntu = { devices: { preferredDiskBus: 'virtio', preferredInterfaceModel: 'virtio' } };
    expect(summarizePreference(ubuntu)).toEqual(['virtio disks', 'virtio network']);
    expect(preferredFirmware(ubuntu)).toBeNull();
    expect(preferredTpm(ubuntu)).toBeNull();
  });
});

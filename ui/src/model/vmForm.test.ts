import { describe, expect, it } from 'vitest';
import { parseDocument } from 'yaml';
import {
  addDisk, applyForm, freshDiskName, nameError, newVmObject, readForm, removeDisk, setEfiPersistent, setFirmware,
  setMemory, setSecureBoot, setTpmEnabled, setTpmPersistent, TEMPLATE_VERSION_ROOT, updateDisk, VM_ROOT,
} from './vmForm';
import { objectToYaml } from './yamlDoc';

const VM_YAML = `# my windows vm
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: win11
  namespace: prod
  labels:
    team: blue # owner
spec:
  runStrategy: Always
  template:
    metadata:
      labels: {kubevirt.io/domain: win11}
    spec:
      terminationGracePeriodSeconds: 30
      domain:
        cpu: {cores: 4, model: host-passthrough}
        memory: {guest: 8Gi}
        firmware:
          uuid: 5d307ca9-b3ef-428c-8861-06e72d69f223
          bootloader:
            efi: {persistent: true}
        features:
          smm: {enabled: true}
          acpi: {}
        devices:
          tpm: {persistent: true}
          disks:
            - name: root
              disk: {bus: sata}
              bootOrder: 1
            - name: cloudinitdisk
              disk: {bus: virtio}
          interfaces:
            - name: default
              masquerade: {}
      networks:
        - name: default
          pod: {}
      volumes:
        - name: root
          hostDisk: {path: /var/lib/images/win11.qcow2, type: Disk}
        - name: cloudinitdisk
          cloudInitNoCloud:
            userData: |
              #cloud-config
              password: x
`;

const edit = (text: string, fn: (d: ReturnType<typeof parseDocument>) => void) => {
  const d = parseDocument(text);
  fn(d);
  return { text: d.toString(), obj: d.toJS() };
};

describe('readForm', () => {
  it('reads every form field from a VM', () => {
    const v = readForm(parseDocument(VM_YAML).toJS());
    expect(v).toMatchObject({
      name: 'win11', namespace: 'prod', runStrategy: 'Always', cpuCores: 4, memory: '8Gi', firmware: 'efi',
      secureBoot: true, efiPersistent: true, tpmEnabled: true, tpmPersistent: true,
    });
    expect(v.disks.map((d) => [d.name, d.kind])).toEqual([['root', 'hostDisk'], ['cloudinitdisk', 'cloudInit']]);
    expect(v.disks[0].path).toBe('/var/lib/images/win11.qcow2');
    expect(v.disks[1].userData).toContain('#cloud-config');
  });

  it('secureBoot defaults to true with EFI and is false with BIOS', () => {
    const efi = { spec: { template: { spec: { domain: { firmware: { bootloader: { efi: {} } } } } } } };
    expect(readForm(efi).secureBoot).toBe(true);
    expect(readForm(newVmObject()).firmware).toBe('bios');
    expect(readForm(newVmObject()).secureBoot).toBe(false);
  });

  it('tpm: {enabled: false} reads as no TPM; tpm: {} as ephemeral', () => {
    const mk = (tpm: unknown) => ({ spec: { template: { spec: { domain: { devices: { tpm } } } } } });
    expect(readForm(mk({ enabled: false, persistent: true }))).toMatchObject({ tpmEnabled: false, tpmPersistent: false });
    expect(readForm(mk({}))).toMatchObject({ tpmEnabled: true, tpmPersistent: false });
  });

  it('memory falls back to resources.requests.memory; running:true is Always', () => {
    const o = { spec: { running: true, template: { spec: { domain: { resources: { requests: { memory: '2Gi' } } } } } } };
    expect(readForm(o)).toMatchObject({ memory: '2Gi', runStrategy: 'Always', cpuCores: '' });
  });

  it('reads a template version under spec.vm', () => {
    const tv = { spec: { vm: { spec: { template: { spec: { domain: { devices: { tpm: { persistent: true } } } } } } } } };
    expect(readForm(tv, TEMPLATE_VERSION_ROOT)).toMatchObject({ tpmEnabled: true, tpmPersistent: true });
  });
});

describe('TPM toggles', () => {
  const base = objectToYaml(newVmObject());
  const tpmOf = (o: any) => o.spec.template.spec.domain.devices.tpm;

  it('Enable TPM writes tpm: {}; persistent writes persistent: true; unchecking persistent goes back to {}', () => {
    let r = edit(base, (d) => setTpmEnabled(d, VM_ROOT, true));
    expect(tpmOf(r.obj)).toEqual({});
    r = edit(r.text, (d) => setTpmPersistent(d, VM_ROOT, true));
    expect(tpmOf(r.obj)).toEqual({ persistent: true });
    r = edit(r.text, (d) => setTpmPersistent(d, VM_ROOT, false));
    expect(tpmOf(r.obj)).toEqual({});
    expect(r.text).toContain('tpm: {}');
  });

  it('disabling TPM removes the tpm key entirely', () => {
    const r = edit(VM_YAML, (d) => setTpmEnabled(d, VM_ROOT, false));
    expect('tpm' in r.obj.spec.template.spec.domain.devices).toBe(false);
    expect(r.obj.spec.template.spec.domain.devices.disks).toHaveLength(2);
  });

  it('keeps extra keys under tpm when toggling persistent', () => {
    const y = VM_YAML.replace('tpm: {persistent: true}', 'tpm: {persistent: true, model: crb}');
    let r = edit(y, (d) => setTpmPersistent(d, VM_ROOT, false));
    expect(tpmOf(r.obj)).toEqual({ model: 'crb' });
    r = edit(r.text, (d) => setTpmPersistent(d, VM_ROOT, true));
    expect(tpmOf(r.obj)).toEqual({ model: 'crb', persistent: true });
  });

  it('enabling a TPM that a template switched off drops enabled:false and keeps the rest', () => {
    const y = VM_YAML.replace('tpm: {persistent: true}', 'tpm: {enabled: false, persistent: true}');
    const r = edit(y, (d) => setTpmEnabled(d, VM_ROOT, true));
    expect(tpmOf(r.obj)).toEqual({ persistent: true });
  });
});

describe('firmware toggles', () => {
  const base = objectToYaml(newVmObject());
  const dom = (o: any) => o.spec.template.spec.domain;

  it('EFI with Secure Boot enables SMM', () => {
    const r = edit(base, (d) => setFirmware(d, VM_ROOT, 'efi', true));
    expect(dom(r.obj).firmware.bootloader.efi).toEqual({ secureBoot: true });
    expect(dom(r.obj).features.smm).toEqual({ enabled: true });
  });

  it('EFI without Secure Boot leaves SMM alone', () => {
    const r = edit(base, (d) => setFirmware(d, VM_ROOT, 'efi', false));
    expect(dom(r.obj).firmware.bootloader.efi).toEqual({ secureBoot: false });
    expect(dom(r.obj).features).toBeUndefined();
  });

  it('turning Secure Boot on later sets smm.enabled true, keeping other smm keys', () => {
    const y = VM_YAML.replace('smm: {enabled: true}', 'smm: {enabled: false, x: 1}').replace('efi: {persistent: true}', 'efi: {persistent: true, secureBoot: false}');
    const r = edit(y, (d) => setSecureBoot(d, VM_ROOT, true));
    expect(dom(r.obj).features.smm).toEqual({ enabled: true, x: 1 });
    expect(dom(r.obj).features.acpi).toEqual({});
    expect(dom(r.obj).firmware.bootloader.efi).toEqual({ persistent: true, secureBoot: true });
  });

  it('EFI persistent state toggles efi.persistent only', () => {
    let r = edit(VM_YAML, (d) => setEfiPersistent(d, VM_ROOT, false));
    expect(dom(r.obj).firmware.bootloader.efi).toEqual({});
    r = edit(r.text, (d) => setEfiPersistent(d, VM_ROOT, true));
    expect(dom(r.obj).firmware.bootloader.efi).toEqual({ persistent: true });
  });

  it('switching to BIOS removes efi but keeps firmware.uuid', () => {
    const r = edit(VM_YAML, (d) => setFirmware(d, VM_ROOT, 'bios'));
    expect(dom(r.obj).firmware).toEqual({ uuid: '5d307ca9-b3ef-428c-8861-06e72d69f223' });
    expect(readForm(r.obj).firmware).toBe('bios');
  });

  it('switching a fresh VM to BIOS and back leaves no empty firmware map', () => {
    let r = edit(base, (d) => setFirmware(d, VM_ROOT, 'efi', false));
    r = edit(r.text, (d) => setFirmware(d, VM_ROOT, 'bios'));
    expect(dom(r.obj).firmware).toBeUndefined();
  });
});

describe('unknown keys and comments survive form edits', () => {
  it('applyForm changes only the edited fields', () => {
    const d = parseDocument(VM_YAML);
    const v = readForm(d.toJS());
    applyForm(d, VM_ROOT, { ...v, cpuCores: 2, memory: '4Gi', tpmPersistent: false, name: 'win12' });
    const text = d.toString();
    const o: any = d.toJS();
    expect(text).toContain('# my windows vm');
    expect(text).toContain('team: blue # owner');
    expect(o.spec.template.spec.terminationGracePeriodSeconds).toBe(30);
    expect(o.spec.template.spec.domain.cpu).toEqual({ cores: 2, model: 'host-passthrough' });
    expect(o.spec.template.spec.domain.memory).toEqual({ guest: '4Gi' });
    expect(o.spec.template.spec.domain.devices.tpm).toEqual({});
    expect(o.spec.template.spec.domain.devices.interfaces).toEqual([{ name: 'default', masquerade: {} }]);
    expect(o.spec.template.spec.domain.devices.disks[0]).toEqual({ name: 'root', disk: { bus: 'sata' }, bootOrder: 1 });
    expect(o.spec.template.spec.networks).toEqual([{ name: 'default', pod: {} }]);
    expect(o.metadata.name).toBe('win12');
  });

  it('applyForm with unchanged values is a no-op on the text', () => {
    const d = parseDocument(VM_YAML);
    applyForm(d, VM_ROOT, readForm(d.toJS()));
    expect(d.toString()).toBe(parseDocument(VM_YAML).toString());
  });

  it('round trip: every form value written reads back the same', () => {
    const d = parseDocument(objectToYaml(newVmObject('ns1')));
    const want = {
      ...readForm(d.toJS()), name: 'vm-a', cpuCores: 3 as const, memory: '3Gi', firmware: 'efi' as const, firmwareSet: true, secureBoot: false,
      efiPersistent: true, tpmEnabled: true, tpmPersistent: true, runStrategy: 'Always' as const,
      disks: [
        { name: 'disk-0', kind: 'hostDisk' as const, path: '/img/a.qcow2', capacity: '', userData: '', otherSource: '' },
        { name: 'disk-1', kind: 'emptyDisk' as const, path: '', capacity: '5Gi', userData: '', otherSource: '' },
      ],
    };
    applyForm(d, VM_ROOT, want);
    expect(readForm(parseDocument(d.toString()).toJS())).toEqual(want);
  });

  it('writes readable YAML: block style for new items, no leftover quotes', () => {
    const d = parseDocument(objectToYaml(newVmObject()));
    const v = readForm(d.toJS());
    applyForm(d, VM_ROOT, {
      ...v, name: 'win11', tpmEnabled: true, tpmPersistent: true,
      disks: [{ name: 'disk-0', kind: 'emptyDisk', path: '', capacity: '1Gi', userData: '', otherSource: '' }],
    });
    const text = d.toString();
    expect(text).toContain('name: win11\n');
    expect(text).toMatch(/tpm:\n\s+persistent: true/);
    expect(text).toMatch(/disks:\n\s+- name: disk-0/);
  });

  it('setMemory writes where the object already keeps memory', () => {
    const y = objectToYaml({ spec: { template: { spec: { domain: { resources: { requests: { memory: '1Gi', cpu: '1' } } } } } } });
    const r = edit(y, (d) => setMemory(d, VM_ROOT, '2Gi'));
    expect(r.obj.spec.template.spec.domain.resources.requests).toEqual({ memory: '2Gi', cpu: '1' });
    expect(r.obj.spec.template.spec.domain.memory).toBeUndefined();
  });
});

describe('disks', () => {
  const base = objectToYaml(newVmObject());
  it('adds hostDisk / emptyDisk / cloud-init volumes with matching disks', () => {
    const r = edit(base, (d) => {
      addDisk(d, VM_ROOT, { name: 'disk-0', kind: 'hostDisk', path: '/a.img', capacity: '', userData: '', otherSource: '' });
      addDisk(d, VM_ROOT, { name: 'disk-1', kind: 'emptyDisk', path: '', capacity: '1Gi', userData: '', otherSource: '' });
      addDisk(d, VM_ROOT, { name: 'cloudinitdisk', kind: 'cloudInit', path: '', capacity: '', userData: '#cloud-config\n', otherSource: '' });
    });
    const s = r.obj.spec.template.spec;
    expect(s.volumes).toEqual([
      { name: 'disk-0', hostDisk: { path: '/a.img', type: 'Disk' } },
      { name: 'disk-1', emptyDisk: { capacity: '1Gi' } },
      { name: 'cloudinitdisk', cloudInitNoCloud: { userData: '#cloud-config\n' } },
    ]);
    expect(s.domain.devices.disks.map((x: any) => x.name)).toEqual(['disk-0', 'disk-1', 'cloudinitdisk']);
  });

  it('removing and renaming keep volumes and disks in step, other volumes untouched', () => {
    const y = VM_YAML.replace('      volumes:\n', '      volumes:\n        - name: cd\n          containerDisk: {image: x}\n');
    const r = edit(y, (d) => {
      const v = readForm(d.toJS());
      expect(v.disks[0]).toMatchObject({ kind: 'other', otherSource: 'containerDisk' });
      updateDisk(d, VM_ROOT, 1, { ...v.disks[1], name: 'boot', path: '/new.qcow2' });
      removeDisk(d, VM_ROOT, 2);
    });
    const s = r.obj.spec.template.spec;
    expect(s.volumes).toEqual([{ name: 'cd', containerDisk: { image: 'x' } }, { name: 'boot', hostDisk: { path: '/new.qcow2', type: 'Disk' } }]);
    expect(s.domain.devices.disks).toEqual([{ name: 'boot', disk: { bus: 'sata' }, bootOrder: 1 }]);
  });

  it('applyForm removing the first disk removes exactly that volume and disk', () => {
    const d = parseDocument(VM_YAML);
    const v = readForm(d.toJS());
    applyForm(d, VM_ROOT, { ...v, disks: v.disks.slice(1) });
    const s: any = (d.toJS() as any).spec.template.spec;
    expect(s.volumes.map((x: any) => x.name)).toEqual(['cloudinitdisk']);
    expect(s.domain.devices.disks).toEqual([{ name: 'cloudinitdisk', disk: { bus: 'virtio' } }]);
  });

  it('changing a disk kind replaces the volume source', () => {
    const r = edit(VM_YAML, (d) => {
      const v = readForm(d.toJS());
      updateDisk(d, VM_ROOT, 0, { ...v.disks[0], kind: 'emptyDisk', capacity: '2Gi' });
    });
    expect(r.obj.spec.template.spec.volumes[0]).toEqual({ name: 'root', emptyDisk: { capacity: '2Gi' } });
  });

  it('fresh disk names do not collide', () => {
    expect(freshDiskName(['disk-0', 'disk-2'], 'hostDisk')).toBe('disk-1');
    expect(freshDiskName([], 'cloudInit')).toBe('cloudinitdisk');
    expect(freshDiskName(['cloudinitdisk'], 'cloudInit')).toBe('disk-0');
  });
});

describe('template version root', () => {
  it('edits spec.vm.spec and not the top-level spec', () => {
    const d = parseDocument(objectToYaml({ kind: 'VirtualMachineTemplateVersion', spec: { templateId: 'ns/t', vm: { spec: {} } } }));
    setTpmPersistent(d, TEMPLATE_VERSION_ROOT, true);
    setSecureBoot(d, TEMPLATE_VERSION_ROOT, true);
    const o: any = d.toJS();
    expect(o.spec.templateId).toBe('ns/t');
    expect(o.spec.vm.spec.template.spec.domain.devices.tpm).toEqual({ persistent: true });
    expect(o.spec.vm.spec.template.spec.domain.features.smm).toEqual({ enabled: true });
    expect(o.spec.template).toBeUndefined();
  });
});

describe('nameError', () => {
  it('accepts DNS-1123 labels and rejects others', () => {
    expect(nameError('vm-1')).toBeNull();
    expect(nameError('')).toMatch(/required/);
    expect(nameError('VM')).not.toBeNull();
    expect(nameError('a'.repeat(64))).not.toBeNull();
    expect(nameError('-a')).not.toBeNull();
  });
});

describe('CD-ROM and boot order <-> YAML', () => {
  const vmYaml = `apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: win}
spec:
  template:
    spec:
      domain:
        devices:
          disks:
            - name: root
              disk: {bus: sata}
      volumes:
        - name: root
          persistentVolumeClaim: {claimName: win-root}
`;

  it('attaches a host ISO as a sata cdrom that boots first, and reads it back', () => {
    const d = parseDocument(vmYaml);
    const v = readForm(d.toJS());
    expect(v.cdrom).toBeNull();
    expect(v.bootFrom).toBe('');
    applyForm(d, VM_ROOT, { ...v, cdrom: { name: 'cdrom-0', source: 'hostDisk', path: '/var/lib/ferrovirt/images/win11.iso', claimName: '' }, bootFrom: 'cdrom' });
    const obj = d.toJS();
    const t = obj.spec.template.spec;
    expect(t.domain.devices.disks).toEqual([
      { name: 'root', disk: { bus: 'sata' }, bootOrder: 2 },
      { name: 'cdrom-0', cdrom: { bus: 'sata' }, bootOrder: 1 },
    ]);
    expect(t.volumes[1]).toEqual({ name: 'cdrom-0', hostDisk: { path: '/var/lib/ferrovirt/images/win11.iso', type: 'Disk' } });
    const back = readForm(obj);
    expect(back.cdrom).toEqual({ name: 'cdrom-0', source: 'hostDisk', path: '/var/lib/ferrovirt/images/win11.iso', claimName: '' });
    expect(back.bootFrom).toBe('cdrom');
    // The CD-ROM's volume is not listed among the disks.
    expect(back.disks.map((x) => x.name)).toEqual(['root']);
  });

  it('switches the ISO to a PVC, then disk first, then detaches it', () => {
    const d = parseDocument(vmYaml);
    const v = readForm(d.toJS());
    applyForm(d, VM_ROOT, { ...v, cdrom: { name: 'cdrom-0', source: 'hostDisk', path: '/x.iso', claimName: '' }, bootFrom: 'cdrom' });
    const withIso = readForm(d.toJS());
    applyForm(d, VM_ROOT, { ...withIso, cdrom: { ...withIso.cdrom!, source: 'pvc', claimName: 'win11-iso' }, bootFrom: 'disk' });
    let t = d.toJS().spec.template.spec;
    expect(t.volumes[1]).toEqual({ name: 'cdrom-0', persistentVolumeClaim: { claimName: 'win11-iso' } });
    expect(t.domain.devices.disks[0].bootOrder).toBe(1);
    expect(t.domain.devices.disks[1].bootOrder).toBe(2);
    expect(readForm(d.toJS()).bootFrom).toBe('disk');
    applyForm(d, VM_ROOT, { ...readForm(d.toJS()), cdrom: null, bootFrom: '' });
    t = d.toJS().spec.template.spec;
    expect(t.volumes).toEqual([{ name: 'root', persistentVolumeClaim: { claimName: 'win-root' } }]);
    expect(t.domain.devices.disks).toEqual([{ name: 'root', disk: { bus: 'sata' } }]);
  });

  it('reads a cdrom written in YAML, and edits disks around it by name', () => {
    const d = parseDocument(`apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: x}
spec:
  template:
    spec:
      domain:
        devices:
          disks:
            - {name: install, cdrom: {bus: scsi}, bootOrder: 1}
            - {name: data, disk: {}}
      volumes:
        - {name: install, persistentVolumeClaim: {claimName: iso-pvc}}
        - {name: data, emptyDisk: {capacity: 1Gi}}
`);
    const v = readForm(d.toJS());
    expect(v.cdrom).toEqual({ name: 'install', source: 'pvc', path: '', claimName: 'iso-pvc' });
    expect(v.bootFrom).toBe('cdrom');
    expect(v.disks).toHaveLength(1);
    applyForm(d, VM_ROOT, { ...v, disks: [{ ...v.disks[0], capacity: '2Gi' }] });
    const t = d.toJS().spec.template.spec;
    expect(t.volumes[0]).toEqual({ name: 'install', persistentVolumeClaim: { claimName: 'iso-pvc' } });
    expect(t.volumes[1]).toEqual({ name: 'data', emptyDisk: { capacity: '2Gi' } });
    // The cdrom's own settings (scsi) are kept.
    expect(t.domain.devices.disks[0].cdrom).toEqual({ bus: 'scsi' });
  });
});

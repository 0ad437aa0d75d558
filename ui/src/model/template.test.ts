import { describe, expect, it } from 'vitest';
import { instanceNames, instantiate, newTemplate, parseId, stripInstanceIdentity, TEMPLATE_VERSION_ANNOTATION, versionFromVm } from './template';

const vm = {
  apiVersion: 'kubevirt.io/v1',
  kind: 'VirtualMachine',
  metadata: {
    name: 'win11', namespace: 'prod', uid: 'u1', resourceVersion: '42', labels: { os: 'windows' },
    annotations: { 'kubevirt.io/latest-observed-api-version': 'v1', note: 'keep' },
  },
  spec: {
    runStrategy: 'Always',
    template: {
      spec: {
        domain: {
          firmware: { uuid: 'abc', bootloader: { efi: { persistent: true } } },
          features: { smm: { enabled: true } },
          devices: { tpm: { persistent: true }, interfaces: [{ name: 'default', masquerade: {}, macAddress: '02:00:00:00:00:01' }] },
        },
      },
    },
  },
  status: { printableStatus: 'Running' },
};

describe('instanceNames', () => {
  it('one VM keeps the name, N get prefix-1..N', () => {
    expect(instanceNames('web', 1)).toEqual(['web']);
    expect(instanceNames('web', 3)).toEqual(['web-1', 'web-2', 'web-3']);
    expect(instanceNames('web', 0)).toEqual([]);
    expect(instanceNames('web', 1.5)).toEqual([]);
  });
});

describe('versionFromVm / instantiate', () => {
  it('a version keeps TPM and EFI persistence but not the VM identity', () => {
    const v = versionFromVm(vm, { namespace: 'prod', name: 'win' }, 'golden');
    expect(v.metadata).toEqual({ generateName: 'win-', namespace: 'prod' });
    expect(v.spec.templateId).toBe('prod/win');
    expect(v.spec.description).toBe('golden');
    expect(v.spec.vm.metadata).toEqual({ labels: { os: 'windows' }, annotations: { note: 'keep' } });
    const dom = v.spec.vm.spec.template.spec.domain;
    expect(dom.devices.tpm).toEqual({ persistent: true });
    expect(dom.firmware).toEqual({ bootloader: { efi: { persistent: true } } });
    expect(dom.devices.interfaces[0].macAddress).toBeUndefined();
    expect(v.spec.vm.status).toBeUndefined();
    expect(vm.spec.template.spec.domain.firmware.uuid).toBe('abc'); // source not mutated
  });

  it('instantiate makes N independent VMs carrying the version annotation', () => {
    const version = { metadata: { name: 'win-abcde', namespace: 'prod' }, spec: { vm: { metadata: { labels: { os: 'w' } }, spec: vm.spec } } };
    const vms = instantiate(version, 'team', 'desk', 2);
    expect(vms.map((x) => x.metadata?.name)).toEqual(['desk-1', 'desk-2']);
    expect(vms[0].metadata?.namespace).toBe('team');
    expect(vms[0].metadata?.labels).toEqual({ os: 'w' });
    expect(vms[0].metadata?.annotations?.[TEMPLATE_VERSION_ANNOTATION]).toBe('prod/win-abcde');
    expect(vms[0].spec.template.spec.domain.firmware.uuid).toBeUndefined();
    expect(vms[0].spec.template.spec.domain.devices.tpm).toEqual({ persistent: true });
    vms[0].spec.runStrategy = 'Halted';
    expect(vms[1].spec.runStrategy).toBe('Always'); // deep copies
  });

  it('stripInstanceIdentity drops an emptied firmware map', () => {
    expect(stripInstanceIdentity({ template: { spec: { domain: { firmware: { uuid: 'x' } } } } })).toEqual({ template: { spec: { domain: {} } } });
  });

  it('parseId and newTemplate', () => {
    expect(parseId('ns/v1', 'd')).toEqual({ namespace: 'ns', name: 'v1' });
    expect(parseId('v1', 'd')).toEqual({ namespace: 'd', name: 'v1' });
    expect(parseId('', 'd')).toBeNull();
    expect(newTemplate('ns', 't').spec).toEqual({ defaultVersionId: '' });
  });
});

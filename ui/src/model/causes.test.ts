import { describe, expect, it } from 'vitest';
import { diskNamesOf, fieldForPath, parseFieldPath, splitCauses } from './causes';
import type { K8sStatus } from '../api/types';

describe('parseFieldPath', () => {
  it('handles dots, [i] and quoted keys', () => {
    expect(parseFieldPath('spec.template.spec.volumes[0].hostDisk.path')).toEqual(['spec', 'template', 'spec', 'volumes', 0, 'hostDisk', 'path']);
    expect(parseFieldPath('metadata.labels["a.b"]')).toEqual(['metadata', 'labels', 'a.b']);
    expect(parseFieldPath('spec.template.spec.volumes.1')).toEqual(['spec', 'template', 'spec', 'volumes', 1]);
  });
});

describe('fieldForPath', () => {
  const t = 'spec.template.spec.domain';
  it.each([
    [`${t}.devices.tpm.persistent`, 'tpmPersistent'],
    [`${t}.devices.tpm`, 'tpmEnabled'],
    [`${t}.firmware.bootloader.efi.secureBoot`, 'secureBoot'],
    [`${t}.features.smm.enabled`, 'secureBoot'],
    [`${t}.firmware.bootloader.efi.persistent`, 'efiPersistent'],
    [`${t}.firmware.bootloader`, 'firmware'],
    [`${t}.cpu.cores`, 'cpuCores'],
    [`${t}.memory.guest`, 'memory'],
    [`${t}.resources.requests.memory`, 'memory'],
    ['metadata.name', 'name'],
    ['spec.runStrategy', 'runStrategy'],
    ['spec.template.spec.volumes[1].hostDisk.path', 'disks.1'],
  ])('%s -> %s', (path, key) => {
    expect(fieldForPath(path)).toBe(key);
  });

  it('returns null for paths no form field owns', () => {
    expect(fieldForPath('spec.template.spec.domain')).toBeNull();
    expect(fieldForPath('spec.template.spec.networks[0]')).toBeNull();
    expect(fieldForPath('')).toBeNull();
  });

  it('resolves devices.disks[i] to the volume row by name', () => {
    const names = { volumes: ['root', 'data'], disks: ['data', 'root'] };
    expect(fieldForPath('spec.template.spec.domain.devices.disks[0].disk.bus', [], names)).toBe('disks.1');
    expect(fieldForPath('spec.template.spec.domain.devices.disks[5]', [], names)).toBeNull();
  });

  it('strips the template version root spec.vm', () => {
    expect(fieldForPath('spec.vm.spec.template.spec.domain.devices.tpm.persistent', ['spec', 'vm'])).toBe('tpmPersistent');
    expect(fieldForPath('spec.template.spec.domain.devices.tpm.persistent', ['spec', 'vm'])).toBeNull();
  });
});

describe('splitCauses', () => {
  it('puts field causes inline and the rest in the banner', () => {
    const st: K8sStatus = {
      kind: 'Status', status: 'Failure', reason: 'Invalid', code: 422, message: 'VirtualMachine "a" is invalid',
      details: {
        causes: [
          { reason: 'FieldValueInvalid', message: 'VMPersistentState feature gate is not enabled in kubevirt-config', field: 'spec.template.spec.domain.devices.tpm.persistent' },
          { type: 'FieldValueRequired', message: 'networks are weird', field: 'spec.template.spec.networks[0]' },
          { message: 'no field at all' },
        ],
      },
    };
    const s = splitCauses(st);
    expect(s.fields.tpmPersistent).toEqual(['VMPersistentState feature gate is not enabled in kubevirt-config']);
    expect(s.banner).toEqual(['VirtualMachine "a" is invalid', 'spec.template.spec.networks[0]: networks are weird', 'no field at all']);
  });

  it('shows the message when there are no causes, and not when all causes are inline', () => {
    expect(splitCauses({ kind: 'Status', message: 'boom' }).banner).toEqual(['boom']);
    const s = splitCauses({ kind: 'Status', message: 'x is invalid', details: { causes: [{ message: 'bad', field: 'metadata.name' }] } });
    expect(s.banner).toEqual([]);
    expect(s.fields.name).toEqual(['bad']);
  });

  it('diskNamesOf reads volume and disk names', () => {
    const o = { spec: { template: { spec: { volumes: [{ name: 'a' }], domain: { devices: { disks: [{ name: 'a' }, { name: 'b' }] } } } } } };
    expect(diskNamesOf(o)).toEqual({ volumes: ['a'], disks: ['a', 'b'] });
  });
});

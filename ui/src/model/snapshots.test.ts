import { describe, expect, it } from 'vitest';
import { formatBytes, newClone, newRestore, snapshotRow, snapshotsOf, timestampedName } from './snapshots';

describe('snapshots', () => {
  it('formats sizes in binary units', () => {
    expect(formatBytes(512)).toBe('512 B');
    expect(formatBytes(547124)).toBe('534.3 KiB');
    expect(formatBytes(5 * 1024 ** 3)).toBe('5 GiB');
    expect(formatBytes(undefined)).toBe('');
  });

  it('rows say size, online/offline and the pause', () => {
    const online = snapshotRow({
      metadata: { name: 'b', annotations: { 'snapshot.ferrovirt.io/size-bytes': '2048', 'snapshot.ferrovirt.io/pause-ms': '31' } },
      status: { phase: 'Succeeded', readyToUse: true, indications: ['Online', 'NoGuestAgent'] },
    });
    expect(online).toMatchObject({ name: 'b', ready: true, size: '2 KiB', mode: 'online (paused 31 ms)' });
    const offline = snapshotRow({ metadata: { name: 'a' }, status: { phase: 'Succeeded', readyToUse: true } });
    expect(offline.mode).toBe('offline');
    const failed = snapshotRow({ metadata: { name: 'f' }, status: { phase: 'Failed', error: { message: 'not enough space' } } });
    expect(failed).toMatchObject({ phase: 'Failed', mode: '', error: 'not enough space' });
  });

  it('picks the snapshots of a VM, newest first', () => {
    const s = (name: string, vm: string, t: string) => ({ metadata: { name, creationTimestamp: t }, spec: { source: { kind: 'VirtualMachine', name: vm } } });
    const got = snapshotsOf([s('a', 'vm', '2026-01-01T00:00:00Z'), s('x', 'other', '2026-01-03T00:00:00Z'), s('b', 'vm', '2026-01-02T00:00:00Z')], 'vm');
    expect(got.map((o) => o.metadata?.name)).toEqual(['b', 'a']);
  });

  it('builds KubeVirt objects with the identity policy', () => {
    const clone = newClone('d', 'vm', 'golden-1', 'fresh', 'reset', 'c');
    expect(clone.metadata?.annotations).toEqual({ 'clone.ferrovirt.io/tpm': 'fresh', 'clone.ferrovirt.io/efi': 'reset' });
    expect(clone.spec?.target).toEqual({ apiGroup: 'kubevirt.io', kind: 'VirtualMachine', name: 'golden-1' });
    expect(newRestore('d', 's', 'vm-copy', 'r').spec).toEqual({
      target: { apiGroup: 'kubevirt.io', kind: 'VirtualMachine', name: 'vm-copy' },
      virtualMachineSnapshotName: 's',
    });
    expect(timestampedName('vm-snapshot', new Date('2026-12-02T03:04:05Z'))).toBe('vm-snapshot-20261202030405');
  });
});

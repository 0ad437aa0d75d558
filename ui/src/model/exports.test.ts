import { describe, expect, it } from 'vitest';
import { expiresIn, exportRow, exportsOf, newExport } from './exports';

describe('exports', () => {
  it('creates a VM export with a TTL and no token Secret (the controller makes one)', () => {
    const e = newExport('default', 'vm1', 'vm1-export', '2h');
    expect(e.spec.source).toEqual({ apiGroup: 'kubevirt.io', kind: 'VirtualMachine', name: 'vm1' });
    expect(e.spec.ttlDuration).toBe('2h');
    expect(e.spec.tokenSecretRef).toBeUndefined();
  });

  it('shows the downloadable files as same-origin paths', () => {
    const row = exportRow({
      metadata: { name: 'e' },
      spec: { source: { kind: 'VirtualMachine', name: 'vm1' } },
      status: {
        phase: 'Ready',
        tokenSecretRef: 'export-token-e',
        ttlExpirationTime: '2026-01-01T02:00:00Z',
        conditions: [{ type: 'Ready', status: 'True', reason: 'PodReady' }],
        links: {
          external: {
            cert: 'PEM',
            volumes: [{ name: 'persistent-state-for-vm1-x', formats: [
              { format: 'dir', url: 'https://10.0.0.1:6443/api/export.kubevirt.io/v1beta1/namespaces/default/virtualmachineexports/e/volumes/persistent-state-for-vm1-x/dir/' },
              { format: 'tar.gz', url: 'https://10.0.0.1:6443/api/export.kubevirt.io/v1beta1/namespaces/default/virtualmachineexports/e/volumes/persistent-state-for-vm1-x/disk.tar.gz' },
            ] }],
          },
        },
      },
    });
    expect(row.links).toEqual([{
      volume: 'persistent-state-for-vm1-x',
      format: 'tar.gz',
      path: '/api/export.kubevirt.io/v1beta1/namespaces/default/virtualmachineexports/e/volumes/persistent-state-for-vm1-x/disk.tar.gz',
      file: 'persistent-state-for-vm1-x.tar.gz',
    }]);
    expect(row.tokenSecret).toBe('export-token-e');
  });

  it('says why an export waits and when it expires', () => {
    const row = exportRow({ metadata: { name: 'e' }, status: { phase: 'Pending', conditions: [{ type: 'Ready', status: 'False', reason: 'InUse', message: 'Virtual Machine default/vm1 is running' }] } });
    expect(row.message).toBe('Virtual Machine default/vm1 is running');
    expect(expiresIn('2026-01-01T02:00:00Z', Date.parse('2026-01-01T00:30:00Z'))).toBe('in 1h 30m');
    expect(expiresIn('2026-01-01T02:00:00Z', Date.parse('2026-01-01T03:00:00Z'))).toBe('expired');
    expect(exportsOf([{ spec: { source: { kind: 'VirtualMachine', name: 'vm1' } } }, { spec: { source: { kind: 'PersistentVolumeClaim', name: 'vm1' } } }], 'vm1')).toHaveLength(1);
  });
});

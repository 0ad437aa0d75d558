import { describe, expect, it } from 'vitest';
import { httpDataVolume, imageRow, parseProgress, sizeForFile, uploadDataVolume, uploadTokenRequest } from './images';

describe('images', () => {
  it('reads CDI progress strings', () => {
    expect(parseProgress('45.20%')).toBe(45.2);
    expect(parseProgress('100.0%')).toBe(100);
    expect(parseProgress('N/A')).toBeNull();
    expect(parseProgress(undefined)).toBeNull();
  });

  it('rows show phase, progress, source and the failure message', () => {
    const dv = httpDataVolume('default', 'deb', 'http://h/d.qcow2.gz', '10Gi', 'sha256:ab');
    expect(dv.spec?.source.http.checksum).toBe('sha256:ab');
    const row = imageRow({
      ...dv,
      status: { phase: 'Failed', progress: '12.00%', conditions: [{ type: 'Running', status: 'False', message: 'checksum mismatch' }] },
    });
    expect(row).toMatchObject({ name: 'deb', phase: 'Failed', progress: 12, source: 'http://h/d.qcow2.gz', size: '10Gi', message: 'checksum mismatch' });
  });

  it('builds upload objects', () => {
    expect(uploadDataVolume('default', 'win', '64Gi').spec?.source).toEqual({ upload: {} });
    expect(uploadTokenRequest('default', 'win').spec).toEqual({ pvcName: 'win' });
    expect(sizeForFile(10)).toBe('1Gi');
    expect(sizeForFile(3 * 1024 ** 3 + 1)).toBe('4Gi');
  });
});

describe('the VM form picks an image', () => {
  it('a dataVolume volume round-trips through the form model', async () => {
    const { diskFromVolume } = await import('./vmForm');
    expect(diskFromVolume({ name: 'root', dataVolume: { name: 'debian' } })).toMatchObject({ kind: 'dataVolume', path: 'debian' });
  });
});

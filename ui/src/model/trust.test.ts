import { describe, expect, it } from 'vitest';
import { attributeNames, ekPemBundle, encryptionLabel, fingerprint, sortVariables } from './trust';

describe('trust model', () => {
  it('labels the encryption of the state', () => {
    expect(encryptionLabel(undefined)).toBe('unknown');
    expect(encryptionLabel({ encrypted: false })).toBe('off (plain on disk)');
    expect(encryptionLabel({ encrypted: true, provider: 'local', kekID: 'local-2', dataKeyID: 'ab12' })).toBe(
      'on (AES-256, data key ab12 wrapped by local key local-2)',
    );
    expect(encryptionLabel({ encrypted: true, provider: 'exec', kekID: 'kms-key-1', dataKeyID: 'cd' })).toContain('KMS key kms-key-1');
  });

  it('prints fingerprints and bundles the PEMs, certificates before the chain', () => {
    expect(fingerprint('ab12cd')).toBe('AB:12:CD');
    const bundle = ekPemBundle({
      certificates: [{ type: 'RSA', pem: '-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----', sha256: 'aa' }],
      chain: [{ pem: '-----BEGIN CERTIFICATE-----\nROOT\n-----END CERTIFICATE-----\n', sha256: 'bb', role: 'root' }],
    });
    expect(bundle.indexOf('\nA\n')).toBeLessThan(bundle.indexOf('ROOT'));
    expect(bundle.split('-----BEGIN CERTIFICATE-----').length).toBe(3);
    expect(bundle.endsWith('\n')).toBe(true);
    expect(ekPemBundle({})).toBe('');
  });

  it('names attributes and puts the Secure Boot variables first', () => {
    expect(attributeNames(0x27)).toBe('NV|BS|RT|TIME_AUTH');
    expect(attributeNames(7)).toBe('NV|BS|RT');
    const sorted = sortVariables([
      { id: 'Boot0000-x', name: 'Boot0000', guid: 'x', attributes: 7, size: 1 },
      { id: 'db-y', name: 'db', guid: 'y', attributes: 0x27, size: 2 },
      { id: 'Alpha-x', name: 'Alpha', guid: 'x', attributes: 7, size: 1 },
    ]);
    expect(sorted.map((v) => v.name)).toEqual(['db', 'Alpha', 'Boot0000']);
  });
});

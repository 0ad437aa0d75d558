import { describe, expect, it } from 'vitest';
import { featureGates, settingsPatch } from './settings';

const kv = { spec: { configuration: { developerConfiguration: { featureGates: ['Snapshot', 'VMPersistentState', 'HostDisk'] }, vmStateStorageClass: 'local' } } };

describe('settings', () => {
  it('reads gates', () => {
    expect(featureGates(kv)).toEqual(['Snapshot', 'VMPersistentState', 'HostDisk']);
    expect(featureGates({})).toEqual([]);
  });
  it('turning the gate off keeps the other gates; empty class removes the key', () => {
    expect(settingsPatch(kv, false, null)).toEqual({ spec: { configuration: { developerConfiguration: { featureGates: ['Snapshot', 'HostDisk'] }, vmStateStorageClass: null } } });
  });
  it('turning the gate on adds it once', () => {
    const p: any = settingsPatch(kv, true, 'fast');
    expect(p.spec.configuration.developerConfiguration.featureGates).toEqual(['Snapshot', 'HostDisk', 'VMPersistentState']);
    expect(p.spec.configuration.vmStateStorageClass).toBe('fast');
  });
});

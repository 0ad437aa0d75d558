/** KubeVirt configuration (Settings page): the VMPersistentState gate and vmStateStorageClass. */
import type { K8sObject } from '../api/types';

export const PERSISTENT_STATE_GATE = 'VMPersistentState';

export function featureGates(kubevirt: K8sObject): string[] {
  const g = kubevirt.spec?.configuration?.developerConfiguration?.featureGates;
  return Array.isArray(g) ? g.filter((x): x is string => typeof x === 'string') : [];
}

/**
 * A JSON merge patch for the KubeVirt object. The gate list is sent whole (merge patch replaces
 * lists) with other gates kept in order; an empty storage class removes the key (null).
 */
export function settingsPatch(kubevirt: K8sObject, gateOn: boolean, storageClass: string | null): Record<string, unknown> {
  const gates = featureGates(kubevirt).filter((g) => g !== PERSISTENT_STATE_GATE);
  if (gateOn) gates.push(PERSISTENT_STATE_GATE);
  return {
    spec: {
      configuration: {
        developerConfiguration: { featureGates: gates },
        vmStateStorageClass: storageClass ? storageClass : null,
      },
    },
  };
}

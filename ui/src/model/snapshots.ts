/** VirtualMachineSnapshots, restores and clones as the UI shows and creates them. */
import type { K8sObject } from '../api/types';

export const SIZE_ANNOTATION = 'snapshot.ferrovirt.io/size-bytes';
export const PAUSE_ANNOTATION = 'snapshot.ferrovirt.io/pause-ms';
export const TPM_POLICY_ANNOTATION = 'clone.ferrovirt.io/tpm';
export const EFI_POLICY_ANNOTATION = 'clone.ferrovirt.io/efi';

/** `1536` -> `1.5 KiB`; empty when unknown. */
export function formatBytes(bytes: number | undefined): string {
  if (bytes === undefined || Number.isNaN(bytes)) return '';
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(1).replace(/\.0$/, '')} ${units[unit]}`;
}

export interface SnapshotRow {
  name: string;
  phase: string;
  ready: boolean;
  size: string;
  /** `online (paused 31 ms)`, `offline`, or empty while in progress. */
  mode: string;
  created: string | undefined;
  error: string;
}

/** One table row of a snapshot. */
export function snapshotRow(s: K8sObject): SnapshotRow {
  const annotations: Record<string, string> = s.metadata?.annotations ?? {};
  const size = annotations[SIZE_ANNOTATION];
  const online = (s.status?.indications ?? []).includes('Online');
  const done = s.status?.phase === 'Succeeded';
  const pause = annotations[PAUSE_ANNOTATION];
  return {
    name: s.metadata?.name ?? '',
    phase: s.status?.phase ?? 'Pending',
    ready: s.status?.readyToUse === true,
    size: size ? formatBytes(Number(size)) : '',
    mode: !done ? '' : online ? `online${pause ? ` (paused ${pause} ms)` : ''}` : 'offline',
    created: s.status?.creationTime ?? s.metadata?.creationTimestamp,
    error: s.status?.error?.message ?? '',
  };
}

/** The snapshots of one VM, newest first. */
export function snapshotsOf(items: K8sObject[], vm: string): K8sObject[] {
  return items
    .filter((s) => s.spec?.source?.kind === 'VirtualMachine' && s.spec?.source?.name === vm)
    .sort((a, b) => String(b.metadata?.creationTimestamp ?? '').localeCompare(String(a.metadata?.creationTimestamp ?? '')));
}

const vmRef = (name: string) => ({ apiGroup: 'kubevirt.io', kind: 'VirtualMachine', name });

export function newSnapshot(namespace: string, vm: string, name: string): K8sObject {
  return {
    apiVersion: 'snapshot.kubevirt.io/v1beta1',
    kind: 'VirtualMachineSnapshot',
    metadata: { name, namespace },
    spec: { source: vmRef(vm) },
  };
}

/** A restore of `snapshot` into `target` (the snapshot's VM, or a new VM's name). */
export function newRestore(namespace: string, snapshot: string, target: string, name: string): K8sObject {
  return {
    apiVersion: 'snapshot.kubevirt.io/v1beta1',
    kind: 'VirtualMachineRestore',
    metadata: { name, namespace },
    spec: { target: vmRef(target), virtualMachineSnapshotName: snapshot },
  };
}

export type TpmPolicy = 'copy' | 'fresh';
export type EfiPolicy = 'copy' | 'reset';

export function newClone(namespace: string, source: string, target: string, tpm: TpmPolicy, efi: EfiPolicy, name: string): K8sObject {
  return {
    apiVersion: 'clone.kubevirt.io/v1beta1',
    kind: 'VirtualMachineClone',
    metadata: { name, namespace, annotations: { [TPM_POLICY_ANNOTATION]: tpm, [EFI_POLICY_ANNOTATION]: efi } },
    spec: { source: vmRef(source), target: vmRef(target) },
  };
}

/** A name unique enough for a new object: `<base>-<yyyymmddhhmmss>`. */
export function timestampedName(base: string, now: Date = new Date()): string {
  const stamp = now.toISOString().replace(/[-:T]/g, '').slice(0, 14);
  return `${base}-${stamp}`.slice(0, 253);
}

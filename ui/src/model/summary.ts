/** Read-only summaries of a VirtualMachine for lists: TPM mode, firmware, age, status. */
import type { K8sObject } from '../api/types';

export type TpmMode = 'none' | 'ephemeral' | 'persistent';

function domainOf(vm: K8sObject): Record<string, any> { // eslint-disable-line @typescript-eslint/no-explicit-any
  return vm.spec?.template?.spec?.domain ?? {};
}

export function tpmMode(vm: K8sObject): TpmMode {
  const tpm = domainOf(vm).devices?.tpm;
  if (!tpm || typeof tpm !== 'object' || tpm.enabled === false) return 'none';
  return tpm.persistent === true ? 'persistent' : 'ephemeral';
}

/** "BIOS", "EFI", "EFI+Secure Boot", with " (persistent)" when the EFI VARS are persistent. */
export function firmwareLabel(vm: K8sObject): string {
  const efi = domainOf(vm).firmware?.bootloader?.efi;
  if (!efi || typeof efi !== 'object') return 'BIOS';
  const base = efi.secureBoot === false ? 'EFI' : 'EFI+Secure Boot';
  return efi.persistent === true ? `${base} (persistent)` : base;
}

export function printableStatus(vm: K8sObject): string {
  return vm.status?.printableStatus ?? (vm.status?.ready ? 'Running' : 'Unknown');
}

/** kubectl-style age: 45s, 12m, 3h, 5d. */
export function formatAge(timestamp: string | undefined, now: number = Date.now()): string {
  if (!timestamp) return '-';
  const t = Date.parse(timestamp);
  if (Number.isNaN(t)) return '-';
  const s = Math.max(0, Math.floor((now - t) / 1000));
  if (s < 120) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 120) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h`;
  return `${Math.floor(h / 24)}d`;
}

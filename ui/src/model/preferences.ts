/**
 * The operating-system choice of the create form: each OS names one of the cluster preferences
 * `ferrovirt serve` seeds from KubeVirt's common-instancetypes (`spec.preference` of the VM), and
 * `summarizePreference` says in words what a preference brings to the VM.
 */

export interface OsChoice {
  /** The VirtualMachineClusterPreference's name; '' is "no preference". */
  preference: string;
  label: string;
}

export const OS_CHOICES: readonly OsChoice[] = [
  { preference: 'windows.11', label: 'Windows 11' },
  { preference: 'windows.2k22', label: 'Windows Server 2022' },
  { preference: 'fedora', label: 'Fedora' },
  { preference: 'ubuntu', label: 'Ubuntu' },
  { preference: 'debian', label: 'Debian' },
  { preference: '', label: 'Other (no preference)' },
];

export const CLUSTER_PREFERENCE_KIND = 'VirtualMachineClusterPreference';

type Obj = Record<string, unknown>;
const asObj = (x: unknown): Obj | undefined => (typeof x === 'object' && x !== null && !Array.isArray(x) ? (x as Obj) : undefined);

/** What a preference spec brings, one short phrase each, in the form's order. */
export function summarizePreference(spec: unknown): string[] {
  const s = asObj(spec) ?? {};
  const firmware = asObj(s.firmware) ?? {};
  const devices = asObj(s.devices) ?? {};
  const features = asObj(s.features) ?? {};
  const out: string[] = [];
  const efi = asObj(firmware.preferredEfi);
  if (efi || firmware.preferredUseEfi === true) out.push('EFI');
  if ((efi && efi.secureBoot !== false) || firmware.preferredUseSecureBoot === true) out.push('Secure Boot');
  if (efi?.persistent === true) out.push('persistent EFI');
  if (firmware.preferredUseBios === true) out.push('BIOS');
  const tpm = asObj(devices.preferredTPM);
  if (tpm) out.push(tpm.persistent === true ? 'persistent TPM' : 'TPM');
  if (features.preferredSmm !== undefined) out.push('SMM');
  if (features.preferredHyperv !== undefined) out.push('Hyper-V enlightenments');
  if (typeof devices.preferredDiskBus === 'string') out.push(`${devices.preferredDiskBus} disks`);
  if (typeof devices.preferredInterfaceModel === 'string') out.push(`${devices.preferredInterfaceModel} network`);
  return out;
}

/** The firmware a preference gives a VM that sets none itself. */
export function preferredFirmware(spec: unknown): { efi: boolean; secureBoot: boolean; persistent: boolean } | null {
  const firmware = asObj(asObj(spec)?.firmware);
  if (!firmware) return null;
  const efi = asObj(firmware.preferredEfi);
  if (efi) return { efi: true, secureBoot: efi.secureBoot !== false, persistent: efi.persistent === true };
  if (firmware.preferredUseEfi === true) return { efi: true, secureBoot: firmware.preferredUseSecureBoot !== false, persistent: false };
  if (firmware.preferredUseBios === true) return { efi: false, secureBoot: false, persistent: false };
  return null;
}

/** The TPM a preference gives a VM that sets none itself. */
export function preferredTpm(spec: unknown): { persistent: boolean } | null {
  const tpm = asObj(asObj(asObj(spec)?.devices)?.preferredTPM);
  return tpm ? { persistent: tpm.persistent === true } : null;
}

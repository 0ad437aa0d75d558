/**
 * What the VM page shows about trust: whether the persistent state is encrypted at rest, the TPM's
 * EK certificates (fingerprints, a PEM bundle to download) and the UEFI variables, from the
 * `tpm/ek` and `efivars` subresources.
 */

/** `stateEncryption` of the `tpm/ek` and `efivars` answers. */
export interface StateEncryption {
  encrypted: boolean;
  provider?: string;
  kekID?: string;
  dataKeyID?: string;
}

export interface EkCertificate {
  type: string;
  pem: string;
  sha256: string;
  subject?: string;
  issuer?: string;
  notAfter?: string;
  chainVerified?: boolean;
}

export interface EkAnswer {
  certificates?: EkCertificate[];
  chain?: { pem: string; sha256: string; role?: string }[];
  stateEncryption?: StateEncryption;
}

export interface EfiVariableItem {
  id: string;
  name: string;
  guid: string;
  attributes: number;
  size: number;
}

export interface EfiVariableList {
  items?: EfiVariableItem[];
  stateEncryption?: StateEncryption;
}

/** The text the page shows for the encryption of the state (`undefined`: not known yet). */
export function encryptionLabel(e: StateEncryption | undefined): string {
  if (!e) return 'unknown';
  if (!e.encrypted) return 'off (plain on disk)';
  const by = e.provider === 'exec' ? `KMS key ${e.kekID ?? '?'}` : `local key ${e.kekID ?? '?'}`;
  return `on (AES-256, data key ${e.dataKeyID ?? '?'} wrapped by ${by})`;
}

/** `ab12cd...` -> `AB:12:CD:...` as certificate viewers print SHA-256 fingerprints. */
export function fingerprint(hex: string): string {
  return (hex.toUpperCase().match(/.{1,2}/g) ?? []).join(':');
}

/** The EK certificates, then the chain up to the root: one PEM file to download. */
export function ekPemBundle(ek: EkAnswer): string {
  const pems = [...(ek.certificates ?? []).map((c) => c.pem), ...(ek.chain ?? []).map((c) => c.pem)];
  return pems.map((p) => (p.endsWith('\n') ? p : `${p}\n`)).join('');
}

/** Attribute bits as `efivar` prints them. */
export function attributeNames(attributes: number): string {
  const bits: [number, string][] = [
    [0x1, 'NV'],
    [0x2, 'BS'],
    [0x4, 'RT'],
    [0x20, 'TIME_AUTH'],
  ];
  return bits.filter(([bit]) => (attributes & bit) !== 0).map(([, name]) => name).join('|');
}

/** Secure Boot variables first (they decide PCR7), then by name. */
export function sortVariables(items: EfiVariableItem[]): EfiVariableItem[] {
  const rank = (v: EfiVariableItem) => (['PK', 'KEK', 'db', 'dbx', 'SecureBoot'].includes(v.name) ? 0 : 1);
  return [...items].sort((a, b) => rank(a) - rank(b) || a.name.localeCompare(b.name));
}

/** The warning shown before the Microsoft 2023 certificates are enrolled. */
export const BITLOCKER_WARNING =
  'This changes the Secure Boot keys the firmware measures into PCR7: suspend BitLocker (or any disk encryption sealed to PCR7) before the next start, or the guest asks for its recovery key.';

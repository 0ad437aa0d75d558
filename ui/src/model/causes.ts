/**
 * Maps the `causes` of a Kubernetes `Status` failure to form fields, by the cause's field path
 * (e.g. `spec.template.spec.domain.devices.tpm.persistent` -> the "TPM persistent state" box).
 * Causes no form field owns go to a banner.
 */
import type { K8sStatus, StatusCause } from '../api/types';
import type { Path } from './yamlDoc';

/** Form field keys errors can be attached to. Disks are `disks.<index>`. */
export type FieldKey =
  | 'name'
  | 'namespace'
  | 'runStrategy'
  | 'cpuCores'
  | 'memory'
  | 'firmware'
  | 'secureBoot'
  | 'efiPersistent'
  | 'tpmEnabled'
  | 'tpmPersistent'
  | `disks.${number}`;

/** `a.b[0].c` / `a.b.0.c` / `a.b[name].c` -> ['a','b',0,'c']. */
export function parseFieldPath(field: string): (string | number)[] {
  const out: (string | number)[] = [];
  for (const m of field.matchAll(/([^.[\]]+)|\[([^\]]*)\]/g)) {
    const raw = m[1] ?? m[2] ?? '';
    out.push(/^\d+$/.test(raw) ? Number(raw) : raw.replace(/^["']|["']$/g, ''));
  }
  return out;
}

const startsWith = (p: readonly (string | number)[], prefix: readonly (string | number)[]) =>
  prefix.length <= p.length && prefix.every((x, i) => x === p[i]);

/**
 * The form field a cause path belongs to, or null. `root` is where the VM sits in the object
 * (`[]` for a VM, `['spec','vm']` for a template version); `volumeNames` are the form's disk names
 * in order (to resolve `domain.devices.disks[i]` by name to the volume row).
 */
export function fieldForPath(
  field: string,
  root: Path = [],
  diskNames: { volumes: readonly string[]; disks: readonly string[] } = { volumes: [], disks: [] },
): FieldKey | null {
  let p = parseFieldPath(field);
  if (p.length === 0) return null;
  if (startsWith(p, ['metadata', 'name'])) return 'name';
  if (startsWith(p, ['metadata', 'namespace'])) return 'namespace';
  if (root.length) {
    if (!startsWith(p, root)) return null;
    p = p.slice(root.length);
  }
  if (startsWith(p, ['spec', 'runStrategy']) || startsWith(p, ['spec', 'running'])) return 'runStrategy';
  const t = ['spec', 'template', 'spec'];
  if (!startsWith(p, t)) return null;
  const rest = p.slice(t.length);
  const d = ['domain'];
  const rules: [readonly (string | number)[], FieldKey][] = [
    [[...d, 'devices', 'tpm', 'persistent'], 'tpmPersistent'],
    [[...d, 'devices', 'tpm'], 'tpmEnabled'],
    [[...d, 'firmware', 'bootloader', 'efi', 'secureBoot'], 'secureBoot'],
    [[...d, 'firmware', 'bootloader', 'efi', 'secureboot'], 'secureBoot'],
    [[...d, 'features', 'smm'], 'secureBoot'],
    [[...d, 'firmware', 'bootloader', 'efi', 'persistent'], 'efiPersistent'],
    [[...d, 'firmware', 'bootloader'], 'firmware'],
    [[...d, 'cpu'], 'cpuCores'],
    [[...d, 'memory'], 'memory'],
    [[...d, 'resources', 'requests', 'memory'], 'memory'],
    [[...d, 'resources', 'limits', 'memory'], 'memory'],
  ];
  for (const [prefix, key] of rules) if (startsWith(rest, prefix)) return key;
  if (rest[0] === 'volumes' && typeof rest[1] === 'number') return `disks.${rest[1]}`;
  if (startsWith(rest, [...d, 'devices', 'disks']) && typeof rest[3] === 'number') {
    const name = diskNames.disks[rest[3]];
    const vi = name === undefined ? -1 : diskNames.volumes.indexOf(name);
    return vi >= 0 ? `disks.${vi}` : null;
  }
  return null;
}

export interface SplitCauses {
  /** Messages per form field. */
  fields: Partial<Record<FieldKey, string[]>>;
  /** Everything else, for a banner (the Status message first when there are no causes). */
  banner: string[];
}

function causeText(c: StatusCause): string {
  return c.message ?? c.reason ?? c.type ?? 'invalid';
}

export function splitCauses(
  status: K8sStatus,
  root: Path = [],
  diskNames?: { volumes: readonly string[]; disks: readonly string[] },
): SplitCauses {
  const out: SplitCauses = { fields: {}, banner: [] };
  const causes = status.details?.causes ?? [];
  for (const c of causes) {
    const key = c.field ? fieldForPath(c.field, root, diskNames) : null;
    if (key) (out.fields[key] ??= []).push(causeText(c));
    else out.banner.push(c.field ? `${c.field}: ${causeText(c)}` : causeText(c));
  }
  if (causes.length === 0 || out.banner.length > 0 || Object.keys(out.fields).length === 0) {
    if (status.message && !out.banner.includes(status.message)) out.banner.unshift(status.message);
  }
  return out;
}

/** Volume and disk names (in order) of the VM in an object, for `splitCauses`. */
export function diskNamesOf(obj: unknown, root: Path = []): { volumes: string[]; disks: string[] } {
  const get = (p: Path): unknown =>
    p.reduce<unknown>((o, k) => (o && typeof o === 'object' ? (o as Record<string | number, unknown>)[k] : undefined), obj);
  const names = (x: unknown) => (Array.isArray(x) ? x.map((v) => String((v as { name?: unknown })?.name ?? '')) : []);
  return {
    volumes: names(get([...root, 'spec', 'template', 'spec', 'volumes'])),
    disks: names(get([...root, 'spec', 'template', 'spec', 'domain', 'devices', 'disks'])),
  };
}

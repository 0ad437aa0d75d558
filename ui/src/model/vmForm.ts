/**
 * The VM form <-> object mapping. `readForm` derives the form's values from the whole object;
 * the `set*` / disk operations edit only the nodes the form owns, in place, in a YAML Document.
 *
 * `root` is where the VirtualMachine lives inside the edited object: `[]` for a VirtualMachine,
 * `['spec', 'vm']` for a Harvester VirtualMachineTemplateVersion (whose `spec.vm` = {metadata, spec}).
 */
import type { Document } from 'yaml';
import { isMap } from 'yaml';
import { CLUSTER_PREFERENCE_KIND } from './preferences';
import { deleteIn, ensureSeq, getJs, getSeq, pruneEmptyMap, setJs, type Path } from './yamlDoc';

export type Firmware = 'bios' | 'efi';
export type DiskKind = 'hostDisk' | 'emptyDisk' | 'cloudInit' | 'dataVolume' | 'other';
export type RunStrategy = 'Always' | 'Halted' | 'Manual' | 'RerunOnFailure' | 'Once' | '';

export interface DiskEntry {
  /** Volume name (= disk name in domain.devices.disks). */
  name: string;
  kind: DiskKind;
  /** hostDisk.path; for kind `dataVolume`, the DataVolume's name (an image of the Images page) */
  path: string;
  /** emptyDisk.capacity */
  capacity: string;
  /** cloudInitNoCloud.userData */
  userData: string;
  /** For kind 'other': the volume source key (containerDisk, persistentVolumeClaim, ...). */
  otherSource: string;
}

/** The installer ISO, attached as a CD-ROM (`disks[].cdrom`, bus sata): a host file or a PVC. */
export interface CdromEntry {
  /** Volume name (= disk name). */
  name: string;
  source: 'hostDisk' | 'pvc';
  /** hostDisk.path */
  path: string;
  /** persistentVolumeClaim.claimName */
  claimName: string;
}

/** Which boots first: the CD-ROM (`bootOrder: 1`) or the first disk; '' leaves boot order unset. */
export type BootFrom = 'cdrom' | 'disk' | '';

export interface VmFormValues {
  name: string;
  namespace: string;
  /**
   * `spec.preference.name` when it names a VirtualMachineClusterPreference (the OS choice); ''
   * when the VM has none. The VM keeps the reference; the preference fills what the VM leaves unset.
   */
  preference: string;
  /** Whether the VM sets its own bootloader (EFI or BIOS); otherwise a preference may choose. */
  firmwareSet: boolean;
  runStrategy: RunStrategy;
  /** domain.cpu.cores; '' when unset. */
  cpuCores: number | '';
  /** domain.memory.guest (or resources.requests.memory when that is what the object uses). */
  memory: string;
  firmware: Firmware;
  secureBoot: boolean;
  efiPersistent: boolean;
  tpmEnabled: boolean;
  tpmPersistent: boolean;
  /** Disks other than the CD-ROM below. */
  disks: DiskEntry[];
  /** The first CD-ROM, or null. */
  cdrom: CdromEntry | null;
  bootFrom: BootFrom;
}

export const VM_ROOT: Path = [];
export const TEMPLATE_VERSION_ROOT: Path = ['spec', 'vm'];

const tspec = (root: Path): Path => [...root, 'spec', 'template', 'spec'];
const domain = (root: Path): Path => [...tspec(root), 'domain'];
const devices = (root: Path): Path => [...domain(root), 'devices'];
const bootloader = (root: Path): Path => [...domain(root), 'firmware', 'bootloader'];
const efiPath = (root: Path): Path => [...bootloader(root), 'efi'];
const tpmPath = (root: Path): Path => [...devices(root), 'tpm'];

type Obj = Record<string, unknown>;
const asObj = (x: unknown): Obj | undefined => (typeof x === 'object' && x !== null && !Array.isArray(x) ? (x as Obj) : undefined);

function getPath(obj: unknown, path: Path): unknown {
  let cur: unknown = obj;
  for (const p of path) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string | number, unknown>)[p];
  }
  return cur;
}

const SOURCE_KEYS = [
  'hostDisk', 'emptyDisk', 'cloudInitNoCloud', 'cloudInitConfigDrive', 'containerDisk', 'persistentVolumeClaim',
  'dataVolume', 'ephemeral', 'configMap', 'secret', 'serviceAccount', 'sysprep', 'downwardAPI', 'memoryDump',
];

export function diskFromVolume(volume: unknown): DiskEntry {
  const v = asObj(volume) ?? {};
  const entry: DiskEntry = { name: String(v.name ?? ''), kind: 'other', path: '', capacity: '', userData: '', otherSource: '' };
  const hd = asObj(v.hostDisk);
  const ed = asObj(v.emptyDisk);
  const ci = asObj(v.cloudInitNoCloud);
  if (hd) return { ...entry, kind: 'hostDisk', path: String(hd.path ?? '') };
  if (ed) return { ...entry, kind: 'emptyDisk', capacity: String(ed.capacity ?? '') };
  if (ci) return { ...entry, kind: 'cloudInit', userData: String(ci.userData ?? '') };
  const dv = asObj(v.dataVolume);
  if (dv) return { ...entry, kind: 'dataVolume', path: String(dv.name ?? '') };
  const src = Object.keys(v).find((k) => k !== 'name') ?? '';
  return { ...entry, otherSource: src };
}

/** The first `cdrom` disk of devices.disks: its name and boot order. */
function firstCdromDisk(obj: unknown, root: Path): { name: string; bootOrder?: number } | undefined {
  const disks = getPath(obj, [...devices(root), 'disks']);
  if (!Array.isArray(disks)) return undefined;
  const d = disks.map(asObj).find((x) => x && x.cdrom !== undefined);
  return d ? { name: String(d.name ?? ''), bootOrder: typeof d.bootOrder === 'number' ? d.bootOrder : undefined } : undefined;
}

/** The first disk (not a CD-ROM) of devices.disks. */
function firstHardDisk(obj: unknown, root: Path): { name: string; bootOrder?: number } | undefined {
  const disks = getPath(obj, [...devices(root), 'disks']);
  if (!Array.isArray(disks)) return undefined;
  const d = disks.map(asObj).find((x) => x && x.cdrom === undefined);
  return d ? { name: String(d.name ?? ''), bootOrder: typeof d.bootOrder === 'number' ? d.bootOrder : undefined } : undefined;
}

function cdromFromVolume(volume: unknown): CdromEntry {
  const v = asObj(volume) ?? {};
  const pvc = asObj(v.persistentVolumeClaim);
  return {
    name: String(v.name ?? ''),
    source: pvc ? 'pvc' : 'hostDisk',
    path: String(asObj(v.hostDisk)?.path ?? ''),
    claimName: String(pvc?.claimName ?? ''),
  };
}

/** Reads the form values from a whole object (VM, or template version with root ['spec','vm']). */
export function readForm(obj: unknown, root: Path = VM_ROOT): VmFormValues {
  const meta = asObj(getPath(obj, ['metadata'])) ?? {};
  const dom = asObj(getPath(obj, domain(root))) ?? {};
  const cpu = asObj(dom.cpu) ?? {};
  const mem = asObj(dom.memory) ?? {};
  const res = asObj(dom.resources) ?? {};
  const memory = mem.guest ?? asObj(res.requests)?.memory ?? asObj(res.limits)?.memory ?? '';
  const bl = asObj(getPath(obj, bootloader(root))) ?? {};
  const efi = asObj(bl.efi);
  const tpm = asObj(getPath(obj, tpmPath(root)));
  const tpmEnabled = tpm !== undefined && tpm.enabled !== false;
  const volumes = getPath(obj, [...tspec(root), 'volumes']);
  const vmSpec = asObj(getPath(obj, [...root, 'spec'])) ?? {};
  const cores = cpu.cores;
  const cd = firstCdromDisk(obj, root);
  const hd = firstHardDisk(obj, root);
  const preference = asObj(vmSpec.preference);
  const clusterPreference = preference && (preference.kind === undefined || preference.kind === CLUSTER_PREFERENCE_KIND);
  const allVolumes = Array.isArray(volumes) ? volumes : [];
  const cdVolume = cd ? allVolumes.find((x) => asObj(x)?.name === cd.name) : undefined;
  const bootFrom: BootFrom =
    cd?.bootOrder === undefined && hd?.bootOrder === undefined
      ? ''
      : cd?.bootOrder !== undefined && (hd?.bootOrder === undefined || cd.bootOrder < hd.bootOrder)
        ? 'cdrom'
        : 'disk';
  return {
    name: String(meta.name ?? ''),
    namespace: String(meta.namespace ?? ''),
    preference: clusterPreference ? String(preference.name ?? '') : '',
    firmwareSet: efi !== undefined || bl.bios !== undefined,
    runStrategy: (typeof vmSpec.runStrategy === 'string'
      ? vmSpec.runStrategy
      : vmSpec.running === true
        ? 'Always'
        : vmSpec.running === false
          ? 'Halted'
          : '') as RunStrategy,
    cpuCores: typeof cores === 'number' ? cores : typeof cores === 'string' && cores !== '' ? Number(cores) : '',
    memory: String(memory),
    firmware: efi ? 'efi' : 'bios',
    // KubeVirt: secureBoot defaults to true when efi is present.
    secureBoot: efi ? efi.secureBoot !== false : false,
    efiPersistent: efi ? efi.persistent === true : false,
    tpmEnabled,
    tpmPersistent: tpmEnabled && tpm?.persistent === true,
    disks: allVolumes.filter((x) => !cd || asObj(x)?.name !== cd.name).map(diskFromVolume),
    cdrom: cd ? (cdVolume ? cdromFromVolume(cdVolume) : { name: cd.name, source: 'hostDisk', path: '', claimName: '' }) : null,
    bootFrom,
  };
}

// ---------------------------------------------------------------------------------------------
// In-place edits. Each changes only what it names; everything else in the document is untouched.
// ---------------------------------------------------------------------------------------------

export function setName(doc: Document, name: string): void {
  setJs(doc, ['metadata', 'name'], name);
}

export function setNamespace(doc: Document, ns: string): void {
  if (ns) setJs(doc, ['metadata', 'namespace'], ns);
  else deleteIn(doc, ['metadata', 'namespace']);
}

/** The OS choice: `spec.preference: {kind: VirtualMachineClusterPreference, name}`, or none. */
export function setPreference(doc: Document, root: Path, name: string): void {
  if (name) setJs(doc, [...root, 'spec', 'preference'], { kind: CLUSTER_PREFERENCE_KIND, name });
  else deleteIn(doc, [...root, 'spec', 'preference']);
}

export function setRunStrategy(doc: Document, root: Path, rs: RunStrategy): void {
  deleteIn(doc, [...root, 'spec', 'running']); // mutually exclusive with runStrategy
  if (rs) setJs(doc, [...root, 'spec', 'runStrategy'], rs);
  else deleteIn(doc, [...root, 'spec', 'runStrategy']);
}

export function setCpuCores(doc: Document, root: Path, cores: number | ''): void {
  if (cores === '') {
    deleteIn(doc, [...domain(root), 'cpu', 'cores']);
    pruneEmptyMap(doc, [...domain(root), 'cpu']);
  } else setJs(doc, [...domain(root), 'cpu', 'cores'], cores);
}

export function setMemory(doc: Document, root: Path, memory: string): void {
  const d = domain(root);
  const usesGuest = doc.hasIn([...d, 'memory', 'guest']);
  const usesRequests = doc.hasIn([...d, 'resources', 'requests', 'memory']);
  const target: Path = !usesGuest && usesRequests ? [...d, 'resources', 'requests', 'memory'] : [...d, 'memory', 'guest'];
  if (memory === '') {
    deleteIn(doc, target);
    pruneEmptyMap(doc, target.slice(0, -1));
  } else setJs(doc, target, memory);
}

/** BIOS <-> EFI. EFI is created with the given secure-boot choice (and SMM when on). */
export function setFirmware(doc: Document, root: Path, fw: Firmware, secureBoot = true): void {
  const bl = bootloader(root);
  if (fw === 'efi') {
    if (doc.hasIn([...bl, 'efi'])) return;
    deleteIn(doc, [...bl, 'bios']);
    setJs(doc, [...bl, 'efi'], { secureBoot });
    if (secureBoot) enableSmm(doc, root);
  } else {
    if (!doc.hasIn([...bl, 'efi'])) return;
    deleteIn(doc, [...bl, 'efi']);
    pruneEmptyMap(doc, bl);
    pruneEmptyMap(doc, [...domain(root), 'firmware']);
  }
}

function enableSmm(doc: Document, root: Path): void {
  const smm: Path = [...domain(root), 'features', 'smm'];
  const node = doc.getIn(smm, true);
  if (isMap(node)) setJs(doc, [...smm, 'enabled'], true);
  else setJs(doc, smm, { enabled: true });
}

/** Secure Boot on also enables SMM (`domain.features.smm.enabled: true`), which it requires. */
export function setSecureBoot(doc: Document, root: Path, on: boolean): void {
  if (!doc.hasIn(efiPath(root))) setFirmware(doc, root, 'efi', on);
  setJs(doc, [...efiPath(root), 'secureBoot'], on);
  if (on) enableSmm(doc, root);
}

export function setEfiPersistent(doc: Document, root: Path, on: boolean): void {
  if (!doc.hasIn(efiPath(root))) setFirmware(doc, root, 'efi');
  if (on) setJs(doc, [...efiPath(root), 'persistent'], true);
  else deleteIn(doc, [...efiPath(root), 'persistent']);
}

/** Enable TPM: `tpm: {}` (keeps an existing tpm map, dropping `enabled: false`); off: no tpm key. */
export function setTpmEnabled(doc: Document, root: Path, on: boolean): void {
  const tp = tpmPath(root);
  if (on) {
    const node = doc.getIn(tp, true);
    if (isMap(node)) deleteIn(doc, [...tp, 'enabled']);
    else setJs(doc, tp, {});
  } else {
    deleteIn(doc, tp);
  }
}

/** TPM persistent state: `tpm.persistent: true`, or the key removed (`tpm: {}`); other tpm keys kept. */
export function setTpmPersistent(doc: Document, root: Path, on: boolean): void {
  const tp = tpmPath(root);
  if (on) {
    setTpmEnabled(doc, root, true);
    setJs(doc, [...tp, 'persistent'], true);
  } else if (doc.hasIn(tp)) {
    deleteIn(doc, [...tp, 'persistent']);
  }
}

// ----- disks: volumes[i] in spec.template.spec.volumes, matched by name to domain.devices.disks ----

function volumeSource(d: DiskEntry): Record<string, unknown> | null {
  switch (d.kind) {
    case 'hostDisk':
      return { hostDisk: { path: d.path, type: 'Disk' } };
    case 'emptyDisk':
      return { emptyDisk: { capacity: d.capacity } };
    case 'cloudInit':
      return { cloudInitNoCloud: { userData: d.userData } };
    case 'dataVolume':
      return { dataVolume: { name: d.path } };
    default:
      return null;
  }
}

/** A fresh, unused volume name: disk-0, disk-1, ... (or cloudinitdisk). */
export function freshDiskName(existing: readonly string[], kind: DiskKind): string {
  if (kind === 'cloudInit' && !existing.includes('cloudinitdisk')) return 'cloudinitdisk';
  for (let i = 0; ; i++) if (!existing.includes(`disk-${i}`)) return `disk-${i}`;
}

export function addDisk(doc: Document, root: Path, entry: DiskEntry): void {
  const src = volumeSource(entry);
  if (!src) return;
  ensureSeq(doc, [...tspec(root), 'volumes']).add(doc.createNode({ name: entry.name, ...src }));
  ensureSeq(doc, [...devices(root), 'disks']).add(doc.createNode({ name: entry.name, disk: { bus: 'virtio' } }));
}

function diskIndexByName(doc: Document, root: Path, name: string): number {
  const disks = getSeq(doc, [...devices(root), 'disks']);
  if (!disks) return -1;
  return disks.items.findIndex((n) => isMap(n) && n.get('name') === name);
}

/** The index in `volumes` of the form's disk `i` (the form's disks leave out the CD-ROM's volume). */
function volumeIndex(doc: Document, root: Path, i: number): number {
  const cd = firstCdromDisk(doc.toJS(), root);
  const vols = getPath(doc.toJS(), [...tspec(root), 'volumes']);
  if (!cd || !Array.isArray(vols)) return i;
  let seen = -1;
  for (let j = 0; j < vols.length; j++) {
    if (asObj(vols[j])?.name === cd.name) continue;
    seen++;
    if (seen === i) return j;
  }
  return vols.length;
}

function cdromSource(c: CdromEntry): Record<string, unknown> {
  return c.source === 'pvc' ? { persistentVolumeClaim: { claimName: c.claimName } } : { hostDisk: { path: c.path, type: 'Disk' } };
}

/** Attaches, changes or removes the CD-ROM (a `cdrom` disk on the sata bus and its volume). */
export function setCdrom(doc: Document, root: Path, next: CdromEntry | null): void {
  const cur = readForm(doc.toJS(), root).cdrom;
  const volsPath: Path = [...tspec(root), 'volumes'];
  const volIndex = (name: string) => (getSeq(doc, volsPath)?.items ?? []).findIndex((n) => isMap(n) && n.get('name') === name);
  if (cur && (!next || next.name !== cur.name)) {
    const vi = volIndex(cur.name);
    if (vi >= 0) getSeq(doc, volsPath)?.delete(vi);
    const di = diskIndexByName(doc, root, cur.name);
    if (di >= 0) getSeq(doc, [...devices(root), 'disks'])?.delete(di);
  }
  if (!next) return;
  const vi = cur && cur.name === next.name ? volIndex(next.name) : -1;
  if (vi < 0) {
    ensureSeq(doc, volsPath).add(doc.createNode({ name: next.name, ...cdromSource(next) }));
    if (diskIndexByName(doc, root, next.name) < 0) {
      ensureSeq(doc, [...devices(root), 'disks']).add(doc.createNode({ name: next.name, cdrom: { bus: 'sata' } }));
    }
    return;
  }
  if (JSON.stringify(cur) === JSON.stringify(next)) return;
  if (cur?.source !== next.source) {
    for (const k of SOURCE_KEYS) deleteIn(doc, [...volsPath, vi, k]);
    for (const [k, v] of Object.entries(cdromSource(next))) setJs(doc, [...volsPath, vi, k], v);
  } else if (next.source === 'pvc') {
    setJs(doc, [...volsPath, vi, 'persistentVolumeClaim', 'claimName'], next.claimName);
  } else {
    setJs(doc, [...volsPath, vi, 'hostDisk', 'path'], next.path);
    if (!doc.hasIn([...volsPath, vi, 'hostDisk', 'type'])) setJs(doc, [...volsPath, vi, 'hostDisk', 'type'], 'Disk');
  }
}

/** CD-ROM first: the CD-ROM gets `bootOrder: 1` and the first disk `2`; disk first: the reverse. */
export function setBootFrom(doc: Document, root: Path, from: BootFrom): void {
  const obj = doc.toJS();
  const cd = firstCdromDisk(obj, root);
  const hd = firstHardDisk(obj, root);
  const order = (name: string | undefined, value: number | null) => {
    if (name === undefined) return;
    const di = diskIndexByName(doc, root, name);
    if (di < 0) return;
    const path: Path = [...devices(root), 'disks', di, 'bootOrder'];
    if (value === null) deleteIn(doc, path);
    else setJs(doc, path, value);
  };
  if (from === '') {
    order(cd?.name, null);
    order(hd?.name, null);
  } else {
    order(cd?.name, from === 'cdrom' ? 1 : 2);
    order(hd?.name, from === 'cdrom' ? 2 : 1);
  }
}

export function removeDisk(doc: Document, root: Path, index: number): void {
  const vols = getSeq(doc, [...tspec(root), 'volumes']);
  if (!vols || index < 0 || index >= vols.items.length) return;
  const node = vols.items[index];
  const name = isMap(node) ? node.get('name') : undefined;
  vols.delete(index);
  if (typeof name === 'string') {
    const di = diskIndexByName(doc, root, name);
    if (di >= 0) getSeq(doc, [...devices(root), 'disks'])?.delete(di);
  }
}

/** Updates volume `index` in place from `next` (rename keeps the matching disk in step). */
export function updateDisk(doc: Document, root: Path, index: number, next: DiskEntry): void {
  const volPath: Path = [...tspec(root), 'volumes', index];
  const cur = diskFromVolume(getJs(doc, volPath));
  if (next.name !== cur.name) {
    const di = diskIndexByName(doc, root, cur.name);
    setJs(doc, [...volPath, 'name'], next.name);
    if (di >= 0) setJs(doc, [...devices(root), 'disks', di, 'name'], next.name);
  }
  if (next.kind === 'other') return;
  if (next.kind !== cur.kind) {
    for (const k of SOURCE_KEYS) deleteIn(doc, [...volPath, k]);
    const src = volumeSource(next);
    if (src) for (const [k, v] of Object.entries(src)) setJs(doc, [...volPath, k], v);
    return;
  }
  if (next.kind === 'hostDisk' && next.path !== cur.path) {
    setJs(doc, [...volPath, 'hostDisk', 'path'], next.path);
    if (!doc.hasIn([...volPath, 'hostDisk', 'type'])) setJs(doc, [...volPath, 'hostDisk', 'type'], 'Disk');
  }
  if (next.kind === 'dataVolume' && next.path !== cur.path) setJs(doc, [...volPath, 'dataVolume', 'name'], next.path);
  if (next.kind === 'emptyDisk' && next.capacity !== cur.capacity) setJs(doc, [...volPath, 'emptyDisk', 'capacity'], next.capacity);
  if (next.kind === 'cloudInit' && next.userData !== cur.userData) setJs(doc, [...volPath, 'cloudInitNoCloud', 'userData'], next.userData);
}

/**
 * Applies a whole set of form values: only the fields that differ from what the document holds
 * now are written. Disks are compared by position; extra entries are added, missing ones removed.
 */
export function applyForm(doc: Document, root: Path, next: VmFormValues, opts: { identity?: boolean } = {}): void {
  const cur = readForm(doc.toJS(), root);
  if (opts.identity !== false) {
    if (next.name !== cur.name) setName(doc, next.name);
    if (next.namespace !== cur.namespace) setNamespace(doc, next.namespace);
  }
  if (next.preference !== cur.preference) setPreference(doc, root, next.preference);
  if (next.runStrategy !== cur.runStrategy) setRunStrategy(doc, root, next.runStrategy);
  if (next.cpuCores !== cur.cpuCores) setCpuCores(doc, root, next.cpuCores);
  if (next.memory !== cur.memory) setMemory(doc, root, next.memory);
  if (next.firmware !== cur.firmware) setFirmware(doc, root, next.firmware, next.secureBoot);
  else if (next.firmwareSet && !cur.firmwareSet && next.firmware === 'bios') {
    // BIOS chosen explicitly over a preference's EFI: the VM says so (`bios: {}`).
    setJs(doc, [...bootloader(root), 'bios'], {});
  }
  if (next.firmware === 'efi') {
    const now = readForm(doc.toJS(), root);
    if (next.secureBoot !== now.secureBoot) setSecureBoot(doc, root, next.secureBoot);
    if (next.efiPersistent !== now.efiPersistent) setEfiPersistent(doc, root, next.efiPersistent);
  }
  if (next.tpmEnabled !== cur.tpmEnabled) setTpmEnabled(doc, root, next.tpmEnabled);
  if (next.tpmEnabled && next.tpmPersistent !== readForm(doc.toJS(), root).tpmPersistent) {
    setTpmPersistent(doc, root, next.tpmPersistent);
  }
  if (JSON.stringify(next.cdrom) !== JSON.stringify(cur.cdrom)) setCdrom(doc, root, next.cdrom);
  if (next.bootFrom !== readForm(doc.toJS(), root).bootFrom) setBootFrom(doc, root, next.bootFrom);
  // One disk removed from the middle: remove exactly that one (keeps the others' disk settings).
  if (next.disks.length === cur.disks.length - 1) {
    const same = (a: DiskEntry, b: DiskEntry) => JSON.stringify(a) === JSON.stringify(b);
    const i = next.disks.findIndex((d, j) => !same(d, cur.disks[j]));
    const at = i < 0 ? cur.disks.length - 1 : i;
    if (next.disks.every((d, j) => same(d, cur.disks[j < at ? j : j + 1]))) {
      removeDisk(doc, root, volumeIndex(doc, root, at));
      return;
    }
  }
  const common = Math.min(cur.disks.length, next.disks.length);
  for (let i = 0; i < common; i++) {
    if (JSON.stringify(cur.disks[i]) !== JSON.stringify(next.disks[i])) updateDisk(doc, root, volumeIndex(doc, root, i), next.disks[i]);
  }
  for (let i = cur.disks.length - 1; i >= next.disks.length; i--) removeDisk(doc, root, volumeIndex(doc, root, i));
  for (let i = common; i < next.disks.length; i++) addDisk(doc, root, next.disks[i]);
}

/** The skeleton of a new VirtualMachine. */
export function newVmObject(namespace = 'default'): Record<string, unknown> {
  return {
    apiVersion: 'kubevirt.io/v1',
    kind: 'VirtualMachine',
    metadata: { name: '', namespace },
    spec: {
      runStrategy: 'Halted',
      template: {
        spec: {
          domain: {
            cpu: { cores: 1 },
            memory: { guest: '1Gi' },
            devices: { disks: [] },
          },
          volumes: [],
        },
      },
    },
  };
}

export { nameError } from './names';

/**
 * Every REST path the UI uses, in one place: this is the contract with `ferrovirt serve`.
 * All paths are same-origin and follow the Kubernetes REST conventions kubectl uses.
 */

const enc = encodeURIComponent;

/** A namespaced-or-cluster-wide collection: `/apis/GROUP/VERSION[/namespaces/NS]/PLURAL`. */
export function collectionPath(groupVersion: string, plural: string, namespace?: string): string {
  const base = groupVersion.includes('/') ? `/apis/${groupVersion}` : `/api/${groupVersion}`;
  return namespace ? `${base}/namespaces/${enc(namespace)}/${plural}` : `${base}/${plural}`;
}

export function objectPath(groupVersion: string, plural: string, namespace: string | undefined, name: string): string {
  return `${collectionPath(groupVersion, plural, namespace)}/${enc(name)}`;
}

export const KUBEVIRT = 'kubevirt.io/v1';
export const SUBRESOURCES = 'subresources.kubevirt.io/v1';
export const HARVESTER = 'harvesterhci.io/v1beta1';
export const STORAGE = 'storage.k8s.io/v1';
export const CORE = 'v1';
export const AUTHENTICATION = 'authentication.k8s.io/v1';
export const SNAPSHOT = 'snapshot.kubevirt.io/v1beta1';
export const CLONE = 'clone.kubevirt.io/v1beta1';
export const INSTANCETYPE = 'instancetype.kubevirt.io/v1beta1';
export const EXPORT = 'export.kubevirt.io/v1beta1';

export const paths = {
  clusterPreference: (name: string) => objectPath(INSTANCETYPE, 'virtualmachineclusterpreferences', undefined, name),
  vms: (ns?: string) => collectionPath(KUBEVIRT, 'virtualmachines', ns),
  vm: (ns: string, name: string) => objectPath(KUBEVIRT, 'virtualmachines', ns, name),
  vmis: (ns?: string) => collectionPath(KUBEVIRT, 'virtualmachineinstances', ns),
  vmi: (ns: string, name: string) => objectPath(KUBEVIRT, 'virtualmachineinstances', ns, name),
  /** PUT with body `{}`: start | stop | restart. */
  vmAction: (ns: string, name: string, action: 'start' | 'stop' | 'restart') =>
    `${objectPath(SUBRESOURCES, 'virtualmachines', ns, name)}/${action}`,
  /** WebSocket (binary frames, raw serial bytes). */
  vmiConsole: (ns: string, name: string) => `${objectPath(SUBRESOURCES, 'virtualmachineinstances', ns, name)}/console`,
  vmiVnc: (ns: string, name: string) => `${objectPath(SUBRESOURCES, 'virtualmachineinstances', ns, name)}/vnc`,
  /** The EK certificates, their chain and `stateEncryption` (GET). */
  vmTpmEk: (ns: string, name: string) => `${objectPath(SUBRESOURCES, 'virtualmachines', ns, name)}/tpm/ek`,
  /** The UEFI variables (GET list; PUT `{"enroll": "microsoft-2023"}`). */
  vmEfiVars: (ns: string, name: string) => `${objectPath(SUBRESOURCES, 'virtualmachines', ns, name)}/efivars`,
  events: (ns: string, involvedName: string) =>
    `${collectionPath(CORE, 'events', ns)}?fieldSelector=${enc(`involvedObject.name=${involvedName}`)}`,
  /** The VM's backend-storage volume (TPM / EFI persistent state). */
  statePvcs: (ns: string, vm: string) =>
    `${collectionPath(CORE, 'persistentvolumeclaims', ns)}?labelSelector=${enc(`persistent-state-for=${vm}`)}`,
  snapshots: (ns?: string) => collectionPath(SNAPSHOT, 'virtualmachinesnapshots', ns),
  exports: (ns?: string) => collectionPath(EXPORT, 'virtualmachineexports', ns),
  export: (ns: string, name: string) => objectPath(EXPORT, 'virtualmachineexports', ns, name),
  /** The export's token Secret (its `token` opens the export's URLs); a destination host's kubeconfig. */
  secret: (ns: string, name: string) => objectPath(CORE, 'secrets', ns, name),
  secrets: (ns: string) => collectionPath(CORE, 'secrets', ns),
  /** The Secrets with a destination host's kubeconfig ("Migrate to host..."). */
  destinationSecrets: (ns: string) =>
    `${collectionPath(CORE, 'secrets', ns)}?labelSelector=${enc('migration.ferrovirt.io/destination=true')}`,
  vmims: (ns?: string) => collectionPath(KUBEVIRT, 'virtualmachineinstancemigrations', ns),
  snapshot: (ns: string, name: string) => objectPath(SNAPSHOT, 'virtualmachinesnapshots', ns, name),
  restores: (ns?: string) => collectionPath(SNAPSHOT, 'virtualmachinerestores', ns),
  clones: (ns?: string) => collectionPath(CLONE, 'virtualmachineclones', ns),
  namespaces: () => collectionPath(CORE, 'namespaces'),
  storageClasses: () => collectionPath(STORAGE, 'storageclasses'),
  kubevirt: () => objectPath(KUBEVIRT, 'kubevirts', 'kubevirt', 'kubevirt'),
  templates: (ns?: string) => collectionPath(HARVESTER, 'virtualmachinetemplates', ns),
  template: (ns: string, name: string) => objectPath(HARVESTER, 'virtualmachinetemplates', ns, name),
  templateVersions: (ns?: string) => collectionPath(HARVESTER, 'virtualmachinetemplateversions', ns),
  templateVersion: (ns: string, name: string) => objectPath(HARVESTER, 'virtualmachinetemplateversions', ns, name),
  /** POST a `SelfSubjectReview`: who the server takes this token for (`status.userInfo`). */
  selfSubjectReviews: () => collectionPath(AUTHENTICATION, 'selfsubjectreviews'),
};

/** Appends `watch=true&resourceVersion=RV` to a list URL (which may already carry a query). */
export function watchUrl(listUrl: string, resourceVersion: string | undefined): string {
  const sep = listUrl.includes('?') ? '&' : '?';
  const rv = resourceVersion ? `&resourceVersion=${enc(resourceVersion)}` : '';
  return `${listUrl}${sep}watch=true${rv}`;
}

/** `ws://` / `wss://` URL for a same-origin path. */
export function websocketUrl(path: string, loc: { protocol: string; host: string } = window.location): string {
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${loc.host}${path}`;
}

/** CDI DataVolumes ("images") as the UI lists, imports and uploads them. */
import type { K8sObject } from '../api/types';

export const CDI = 'cdi.kubevirt.io/v1beta1';
export const UPLOAD = 'upload.cdi.kubevirt.io/v1beta1';
/** CDI's upload proxy path, served by ferrovirt's own server. */
export const UPLOAD_PATH = '/v1beta1/upload';

export interface ImageRow {
  name: string;
  namespace: string;
  phase: string;
  /** 0..100, or null when the DataVolume says `N/A`. */
  progress: number | null;
  source: string;
  size: string;
  message: string;
}

/** `"45.20%"` -> 45.2; anything else -> null. */
export function parseProgress(text: unknown): number | null {
  if (typeof text !== 'string' || !text.endsWith('%')) return null;
  const value = Number.parseFloat(text.slice(0, -1));
  return Number.isFinite(value) ? Math.min(100, Math.max(0, value)) : null;
}

export function imageRow(dv: K8sObject): ImageRow {
  const source = dv.spec?.source ?? {};
  const kind = Object.keys(source)[0] ?? '';
  const running = (dv.status?.conditions ?? []).find((c: { type?: string }) => c.type === 'Running');
  return {
    name: dv.metadata?.name ?? '',
    namespace: dv.metadata?.namespace ?? '',
    phase: dv.status?.phase ?? 'Pending',
    progress: parseProgress(dv.status?.progress),
    source: kind === 'http' ? source.http?.url ?? 'http' : kind,
    size: (dv.spec?.storage ?? dv.spec?.pvc)?.resources?.requests?.storage ?? '',
    message: dv.status?.phase === 'Failed' ? running?.message ?? '' : '',
  };
}

/** A DataVolume importing `url` (`checksum`: CDI's `algorithm:hex`, optional). */
export function httpDataVolume(ns: string, name: string, url: string, size: string, checksum?: string): K8sObject {
  const http: Record<string, string> = { url };
  if (checksum) http.checksum = checksum;
  return {
    apiVersion: CDI,
    kind: 'DataVolume',
    metadata: { name, namespace: ns },
    spec: { source: { http }, storage: { resources: { requests: { storage: size } } } },
  };
}

/** A DataVolume waiting for an upload. */
export function uploadDataVolume(ns: string, name: string, size: string): K8sObject {
  return {
    apiVersion: CDI,
    kind: 'DataVolume',
    metadata: { name, namespace: ns },
    spec: { source: { upload: {} }, storage: { resources: { requests: { storage: size } } } },
  };
}

export function uploadTokenRequest(ns: string, pvc: string): K8sObject {
  return { apiVersion: UPLOAD, kind: 'UploadTokenRequest', metadata: { name: pvc, namespace: ns }, spec: { pvcName: pvc } };
}

/** The size to ask for an uploaded file: at least 1 GiB, else the file rounded up to a GiB. */
export function sizeForFile(bytes: number): string {
  const gib = 1024 ** 3;
  return `${Math.max(1, Math.ceil(bytes / gib))}Gi`;
}

/** A VM volume that is the DataVolume `name` (what the VM form adds when an image is picked). */
export function dataVolumeVolume(volumeName: string, dvName: string): K8sObject {
  return { name: volumeName, dataVolume: { name: dvName } } as unknown as K8sObject;
}

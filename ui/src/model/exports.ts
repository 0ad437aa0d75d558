/** VirtualMachineExports (export.kubevirt.io/v1beta1) as the UI creates and shows them. */
import type { K8sObject } from '../api/types';

export const EXPORT_API = 'export.kubevirt.io/v1beta1';
/** The header an export's URLs want (the API's bearer token does not open them). */
export const TOKEN_HEADER = 'x-kubevirt-export-token';

/** A VirtualMachineExport of a VM; the controller makes its token Secret (`export-token-NAME`). */
export function newExport(namespace: string, vm: string, name: string, ttl: string): K8sObject {
  return {
    apiVersion: EXPORT_API,
    kind: 'VirtualMachineExport',
    metadata: { name, namespace },
    spec: { source: { apiGroup: 'kubevirt.io', kind: 'VirtualMachine', name: vm }, ttlDuration: ttl },
  };
}

export interface ExportLink {
  volume: string;
  format: string;
  /** Same-origin path of the URL (the status names the server by its own address). */
  path: string;
  /** The file name a download gets. */
  file: string;
}

export interface ExportRow {
  name: string;
  phase: string;
  message: string;
  expires: string | undefined;
  tokenSecret: string | undefined;
  links: ExportLink[];
}

function pathOf(url: string): string {
  try {
    const parsed = new URL(url);
    return parsed.pathname + parsed.search;
  } catch {
    return url;
  }
}

const FILES: Record<string, string> = { raw: 'img', gzip: 'img.gz', 'tar.gz': 'tar.gz' };

/** What the Export tab shows of one export: phase, why it waits, expiry, downloadable files. */
export function exportRow(e: K8sObject): ExportRow {
  const status = e.status ?? {};
  const ready = (status.conditions ?? []).find((c: { type?: string }) => c.type === 'Ready');
  const links: ExportLink[] = [];
  for (const volume of status.links?.external?.volumes ?? []) {
    for (const f of volume.formats ?? []) {
      if (!FILES[f.format]) continue;
      links.push({ volume: volume.name, format: f.format, path: pathOf(f.url), file: `${volume.name}.${FILES[f.format]}` });
    }
  }
  return {
    name: e.metadata?.name ?? '',
    phase: status.phase ?? 'Pending',
    message: ready?.message ?? '',
    expires: status.ttlExpirationTime,
    tokenSecret: status.tokenSecretRef,
    links,
  };
}

/** The exports whose source is this VM. */
export function exportsOf(items: K8sObject[], vm: string): K8sObject[] {
  return items.filter((e) => e.spec?.source?.kind === 'VirtualMachine' && e.spec?.source?.name === vm);
}

/** `in 1h 59m` / `expired` for an RFC 3339 expiry. */
export function expiresIn(expires: string | undefined, now: number = Date.now()): string {
  if (!expires) return '';
  const left = Math.floor((Date.parse(expires) - now) / 1000);
  if (Number.isNaN(left)) return '';
  if (left <= 0) return 'expired';
  const h = Math.floor(left / 3600);
  const m = Math.floor((left % 3600) / 60);
  return h > 0 ? `in ${h}h ${m}m` : m > 0 ? `in ${m}m` : `in ${left}s`;
}

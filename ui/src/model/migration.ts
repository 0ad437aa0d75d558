/**
 * "Migrate to host...": the objects a live migration to another ferrovirt host takes, as
 * `ferrovirt migrate` writes them (crates/resources/src/migration.rs is the other copy of these
 * names): a Secret per destination host with its kubeconfig (labelled so that this dialog lists
 * it), and a VirtualMachineInstanceMigration with `spec.sendTo` that asks this server to create
 * the receiving VM and VMIM on the destination (`migration.ferrovirt.io/prepare-destination`).
 */
import { parse } from 'yaml';
import type { K8sObject } from '../api/types';

export const DESTINATION_KUBECONFIG = 'migration.ferrovirt.io/destination-kubeconfig-secret';
export const PREPARE_DESTINATION = 'migration.ferrovirt.io/prepare-destination';
export const DESTINATION_LABEL = 'migration.ferrovirt.io/destination';
export const SERVER_ANNOTATION = 'migration.ferrovirt.io/server';
export const KUBECONFIG_KEY = 'kubeconfig';

export class DestinationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DestinationError';
  }
}

type Entry = { name?: unknown; [key: string]: unknown };

function entries(config: Record<string, unknown>, key: string): Entry[] {
  const list = config[key];
  if (list == null) return [];
  if (!Array.isArray(list)) throw new DestinationError(`"${key}" must be a list.`);
  return list.filter((e): e is Entry => typeof e === 'object' && e !== null);
}

/**
 * The destination server of a kubeconfig: its current context's cluster `server` (an https://
 * URL). The credentials themselves are read by the server, not here: a client certificate is
 * as good as a token for a host-to-host migration.
 */
export function destinationServer(text: string): string {
  let cfg: unknown;
  try {
    cfg = parse(text);
  } catch (e) {
    throw new DestinationError(`This is not a kubeconfig: the YAML does not parse (${e instanceof Error ? e.message : String(e)}).`);
  }
  if (typeof cfg !== 'object' || cfg === null || Array.isArray(cfg) || !('clusters' in cfg)) {
    throw new DestinationError('This is not a kubeconfig: it has no "clusters". Paste the whole file of the destination host (its admin.kubeconfig, or one with a user allowed to create VMs there).');
  }
  const config = cfg as Record<string, unknown>;
  const clusters = entries(config, 'clusters');
  const contexts = entries(config, 'contexts');
  const current = typeof config['current-context'] === 'string' ? config['current-context'] : '';
  let cluster: unknown;
  if (current) {
    const context = contexts.find((c) => c.name === current);
    if (!context) throw new DestinationError(`current-context "${current}" names no entry in "contexts".`);
    const clusterName = (context.context as Record<string, unknown> | undefined)?.cluster;
    cluster = clusters.find((c) => c.name === clusterName)?.cluster;
    if (!cluster) throw new DestinationError(`The context "${current}" names the cluster "${String(clusterName)}", which is not in "clusters".`);
  } else if (clusters.length === 1) {
    cluster = clusters[0].cluster;
  } else {
    throw new DestinationError(`The kubeconfig has no current-context and ${clusters.length} clusters: set one with "kubectl config use-context NAME".`);
  }
  const server = (cluster as Record<string, unknown> | undefined)?.server;
  if (typeof server !== 'string' || !/^https:\/\/[^/\s]+/.test(server)) {
    throw new DestinationError(`The cluster's server ${JSON.stringify(server ?? null)} is not an https:// URL of a ferrovirt host.`);
  }
  return server.replace(/\/+$/, '');
}

/** The Secret name for a destination host (as `destination_secret_name` in Rust). */
export function destinationSecretName(server: string): string {
  const host = server.trim().replace(/^https?:\/\//, '').split('/')[0] ?? '';
  let name = 'migration-destination-';
  for (const ch of host.toLowerCase()) {
    if (/[a-z0-9]/.test(ch)) name += ch;
    else if (!name.endsWith('-')) name += '-';
  }
  return name.slice(0, 253).replace(/-+$/, '');
}

export function destinationSecret(namespace: string, server: string, kubeconfig: string): K8sObject {
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    type: 'Opaque',
    metadata: {
      name: destinationSecretName(server),
      namespace,
      labels: { [DESTINATION_LABEL]: 'true' },
      annotations: { [SERVER_ANNOTATION]: server },
    },
    stringData: { [KUBECONFIG_KEY]: kubeconfig },
  } as K8sObject;
}

/** A known destination: a labelled Secret of the namespace. */
export interface Destination {
  secret: string;
  server: string;
}

export function destinationsOf(secrets: K8sObject[]): Destination[] {
  return secrets
    .filter((s) => s.metadata?.labels?.[DESTINATION_LABEL] === 'true' && s.metadata?.annotations?.[SERVER_ANNOTATION])
    .map((s) => ({ secret: String(s.metadata?.name), server: String(s.metadata?.annotations?.[SERVER_ANNOTATION]) }))
    .sort((a, b) => a.server.localeCompare(b.server));
}

/** The source's VMIM of a migration of `vm` to `server` (as `sending_migration` in Rust). */
export function sendingMigration(namespace: string, vm: string, migrationId: string, server: string, secret: string): K8sObject {
  return {
    apiVersion: 'kubevirt.io/v1',
    kind: 'VirtualMachineInstanceMigration',
    metadata: {
      name: `${migrationId}-out`,
      namespace,
      annotations: { [DESTINATION_KUBECONFIG]: secret, [PREPARE_DESTINATION]: 'true' },
    },
    spec: { vmiName: vm, sendTo: { migrationID: migrationId, connectURL: server } },
  };
}

export function migrationId(vm: string, nowMs: number = Date.now()): string {
  return `${vm}-${Math.floor(nowMs / 1000)}`;
}

const mib = (bytes: number) => `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;

/** One line of a source VMIM's progress (as `ferrovirt migrate` prints it). */
export function progressLine(vmim: K8sObject | undefined): string {
  const phase: string = vmim?.status?.phase ?? 'Pending';
  const state = vmim?.status?.migrationState ?? {};
  if (phase === 'Running') {
    if (state.diskRemainingBytes > 0) return `Running: disks ${mib(state.diskRemainingBytes)} to copy`;
    if (typeof state.memoryRemainingBytes === 'number') {
      let line = `Running: memory remaining ${mib(state.memoryRemainingBytes)}, dirty rate ${mib(state.dirtyRateBytesPerSecond ?? 0)}/s`;
      if (typeof state.expectedDowntimeMs === 'number') line += `, expected downtime ${state.expectedDowntimeMs} ms`;
      return line;
    }
  }
  if (phase === 'Succeeded') {
    const parts = [];
    if (typeof state.totalMs === 'number') parts.push(`total ${(state.totalMs / 1000).toFixed(1)} s`);
    if (typeof state.downtimeMs === 'number') parts.push(`QEMU's downtime ${state.downtimeMs} ms`);
    return parts.length ? `Succeeded: ${parts.join(', ')}` : 'Succeeded';
  }
  if (phase === 'Failed') return `Failed: ${state.failureReason ?? 'no reason recorded'}`;
  return phase;
}

export function migrationDone(vmim: K8sObject | undefined): boolean {
  return vmim?.status?.phase === 'Succeeded' || vmim?.status?.phase === 'Failed';
}

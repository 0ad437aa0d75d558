/**
 * Minimal Kubernetes / KubeVirt / Harvester object shapes the UI reads.
 * Objects are kept as plain JSON (`K8sObject`): the UI never drops fields it does not know.
 */

export interface ObjectMeta {
  name?: string;
  generateName?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  creationTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  ownerReferences?: unknown[];
  [key: string]: unknown;
}

/** Any Kubernetes-style object. Unknown fields are allowed and preserved. */
export interface K8sObject {
  apiVersion?: string;
  kind?: string;
  metadata?: ObjectMeta;
  spec?: any; // eslint-disable-line @typescript-eslint/no-explicit-any
  status?: any; // eslint-disable-line @typescript-eslint/no-explicit-any
  [key: string]: unknown;
}

export interface K8sList<T extends K8sObject = K8sObject> {
  apiVersion?: string;
  kind?: string;
  metadata?: { resourceVersion?: string; continue?: string };
  items: T[];
}

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED' | 'ERROR' | 'BOOKMARK';

export interface WatchEvent<T extends K8sObject = K8sObject> {
  type: WatchEventType;
  object: T;
}

/** One cause of a Kubernetes `Status` failure (`details.causes[]`). */
export interface StatusCause {
  reason?: string;
  type?: string;
  message?: string;
  field?: string;
}

/** The Kubernetes `Status` object returned on errors. */
export interface K8sStatus {
  kind: 'Status';
  apiVersion?: string;
  status?: 'Success' | 'Failure';
  reason?: string;
  code?: number;
  message?: string;
  details?: { name?: string; group?: string; kind?: string; causes?: StatusCause[] };
}

export function isStatus(x: unknown): x is K8sStatus {
  return typeof x === 'object' && x !== null && (x as { kind?: unknown }).kind === 'Status';
}

/**
 * The REST client: plain `fetch` against the same-origin Kubernetes-style API.
 * Every request carries `Authorization: Bearer <token>` (from the tab's session, never a cookie:
 * `credentials: 'omit'`), every request with a body its media type. Errors become `ApiError`
 * carrying the server's `Status` object (with `details.causes`); a 401 also logs the tab out.
 */
import { authHeaders, getToken, tokenRefused } from '../auth/session';
import { isStatus, type K8sList, type K8sObject, type K8sStatus, type WatchEvent } from './types';
import { paths, watchUrl } from './paths';

export class ApiError extends Error {
  readonly status: K8sStatus;
  constructor(status: K8sStatus) {
    super(status.message ?? `HTTP ${status.code ?? '?'} ${status.reason ?? ''}`.trim());
    this.name = 'ApiError';
    this.status = status;
  }
  get code(): number | undefined {
    return this.status.code;
  }
}

/** Turns a failed HTTP response body into a `Status`, also when the body is not one. */
export function statusFromResponse(httpCode: number, statusText: string, body: string): K8sStatus {
  try {
    const parsed: unknown = JSON.parse(body);
    if (isStatus(parsed)) return { ...parsed, code: parsed.code ?? httpCode };
  } catch {
    /* not JSON: fall through */
  }
  return {
    kind: 'Status',
    status: 'Failure',
    code: httpCode,
    reason: statusText || undefined,
    message: body.trim() ? `HTTP ${httpCode}: ${body.trim().slice(0, 500)}` : `HTTP ${httpCode} ${statusText}`,
  };
}

/** The media types of request bodies the UI sends. */
export const MEDIA = {
  json: 'application/json',
  mergePatch: 'application/merge-patch+json',
} as const;
export type BodyMediaType = (typeof MEDIA)[keyof typeof MEDIA];

/** A failed response: 401 logs the tab out (the token that was sent was refused); then throw. */
async function failure(res: Response, usedToken: string | null): Promise<never> {
  const status = statusFromResponse(res.status, res.statusText, await res.text().catch(() => ''));
  if (res.status === 401) tokenRefused(usedToken);
  throw new ApiError(status);
}

/** `fetch` with the bearer token and without cookies; returns the response and the token sent. */
async function send(method: string, path: string, init: { body?: string; contentType?: BodyMediaType; signal?: AbortSignal } = {}) {
  const token = getToken();
  const headers: Record<string, string> = { Accept: MEDIA.json, ...authHeaders(token) };
  if (init.body !== undefined) headers['Content-Type'] = init.contentType ?? MEDIA.json;
  try {
    const res = await fetch(path, { method, headers, body: init.body, credentials: 'omit', signal: init.signal });
    return { res, token };
  } catch (e) {
    if (init.signal?.aborted) throw e;
    throw new ApiError({ kind: 'Status', status: 'Failure', message: `cannot reach the ferrovirt API at ${path}: ${String(e)}` });
  }
}

async function request<T>(method: string, path: string, body?: unknown, contentType: BodyMediaType = MEDIA.json): Promise<T> {
  const { res, token } = await send(method, path, { body: body !== undefined ? JSON.stringify(body) : undefined, contentType });
  if (!res.ok) return failure(res, token);
  const text = await res.text();
  return (text ? JSON.parse(text) : {}) as T;
}

/** What a DELETE sends, as kubectl does: the server's default propagation applies. */
const DELETE_OPTIONS = { kind: 'DeleteOptions', apiVersion: 'v1' };

export const api = {
  get: <T extends K8sObject = K8sObject>(path: string) => request<T>('GET', path),
  list: <T extends K8sObject = K8sObject>(path: string) => request<K8sList<T>>('GET', path),
  create: <T extends K8sObject = K8sObject>(collection: string, obj: K8sObject) => request<T>('POST', collection, obj),
  /** PUT: the object must carry `metadata.resourceVersion` (optimistic concurrency). */
  replace: <T extends K8sObject = K8sObject>(path: string, obj: K8sObject) => request<T>('PUT', path, obj),
  mergePatch: <T extends K8sObject = K8sObject>(path: string, patch: unknown) => request<T>('PATCH', path, patch, MEDIA.mergePatch),
  delete: (path: string) => request<K8sObject>('DELETE', path, DELETE_OPTIONS),
  /** Subresource actions (start / stop / restart) take an empty JSON body. */
  action: (path: string) => request<unknown>('PUT', path, {}),
  /** Subresources that answer with something other than an object (`tpm/ek`, `efivars`). */
  getJson: <T>(path: string) => request<T>('GET', path),
  /** PUT of a JSON body to a subresource (`efivars` enrollment). */
  putJson: <T>(path: string, body: unknown) => request<T>('PUT', path, body),
};

/** The user the server knows this token as (`SelfSubjectReview`), or null when it cannot say. */
export async function whoAmI(): Promise<string | null> {
  const review = await api.create<K8sObject>(paths.selfSubjectReviews(), { apiVersion: 'authentication.k8s.io/v1', kind: 'SelfSubjectReview' });
  const username: unknown = review.status?.userInfo?.username;
  return typeof username === 'string' && username ? username : null;
}

/**
 * Why the server refused a WebSocket handshake, which the browser does not tell a page: the same
 * URL fetched as a plain GET with the token goes through the same authentication and
 * authorization. A 401 logs the tab out; returns the server's Status, or null when the GET was
 * not refused with 401/403 (the cause is elsewhere, e.g. the VM is not running).
 */
export async function handshakeRefusal(path: string): Promise<K8sStatus | null> {
  try {
    await request<unknown>('GET', path);
    return null;
  } catch (e) {
    return e instanceof ApiError && (e.code === 401 || e.code === 403) ? e.status : null;
  }
}

/**
 * Splits a byte stream into newline-delimited JSON lines. Feed decoded text chunks; get back the
 * complete lines (a partial line is kept until its newline arrives).
 */
export class NdjsonSplitter {
  private buffer = '';
  push(chunk: string): string[] {
    this.buffer += chunk;
    const parts = this.buffer.split('\n');
    this.buffer = parts.pop() ?? '';
    return parts.map((l) => l.trim()).filter((l) => l.length > 0);
  }
  /** What is left at end of stream (a last line without newline). */
  flush(): string[] {
    const rest = this.buffer.trim();
    this.buffer = '';
    return rest ? [rest] : [];
  }
}

/**
 * One watch request: streams events until the server closes the stream, the signal aborts, or an
 * error. Resolves when the stream ends; throws ApiError on HTTP errors (e.g. 410 Gone).
 */
export async function watchOnce<T extends K8sObject>(
  listUrl: string,
  resourceVersion: string | undefined,
  onEvent: (e: WatchEvent<T>) => void,
  signal: AbortSignal,
): Promise<void> {
  const { res, token } = await send('GET', watchUrl(listUrl, resourceVersion), { signal });
  if (!res.ok) return failure(res, token);
  if (!res.body) return;
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  const splitter = new NdjsonSplitter();
  for (;;) {
    const { done, value } = await reader.read();
    const lines = done ? splitter.flush() : splitter.push(decoder.decode(value, { stream: true }));
    for (const line of lines) onEvent(JSON.parse(line) as WatchEvent<T>);
    if (done) return;
  }
}

/** Identity of an object in a list: namespace/name. */
export function objectKey(o: K8sObject): string {
  return `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;
}

/** Applies one watch event to a list of items (pure; returns a new array). */
export function applyWatchEvent<T extends K8sObject>(items: T[], ev: WatchEvent<T>): T[] {
  if (ev.type !== 'ADDED' && ev.type !== 'MODIFIED' && ev.type !== 'DELETED') return items;
  const key = objectKey(ev.object);
  const rest = items.filter((i) => objectKey(i) !== key);
  if (ev.type === 'DELETED') return rest;
  const idx = items.findIndex((i) => objectKey(i) === key);
  if (idx < 0) return [...items, ev.object];
  const copy = items.slice();
  copy[idx] = ev.object;
  return copy;
}

export interface InformerHandle {
  stop(): void;
}

/**
 * List, then watch from the list's resourceVersion; on ERROR events, HTTP errors (410 Gone) or
 * disconnects: wait a little, re-list and re-watch. Calls `onItems` with the full current list.
 */
export function startInformer<T extends K8sObject>(
  listUrl: string,
  onItems: (items: T[]) => void,
  onError: (e: Error | null) => void,
): InformerHandle {
  let stopped = false;
  let current: AbortController | null = null;
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  (async () => {
    let backoff = 500;
    while (!stopped) {
      let relist = false;
      try {
        const list = await api.list<T>(listUrl);
        let items = list.items ?? [];
        let rv = list.metadata?.resourceVersion;
        onItems(items);
        onError(null);
        backoff = 500;
        while (!stopped && !relist) {
          const ctrl = new AbortController();
          current = ctrl;
          await watchOnce<T>(
            listUrl,
            rv,
            (ev) => {
              if (ev.type === 'ERROR') {
                // e.g. 410 Gone ("too old resource version"): start over with a fresh list.
                relist = true;
                ctrl.abort();
                return;
              }
              rv = ev.object?.metadata?.resourceVersion ?? rv;
              if (ev.type === 'BOOKMARK') return;
              items = applyWatchEvent(items, ev);
              onItems(items);
            },
            ctrl.signal,
          );
          // Stream ended normally (server-side timeout): watch again from the last resourceVersion.
        }
      } catch (e) {
        if (stopped) return;
        if (relist) continue; // our own abort after an ERROR event
        if (e instanceof ApiError && e.code === 401) {
          // The token was refused: the tab is logged out (the login screen replaces this view).
          onError(e);
          return;
        }
        onError(e instanceof Error ? e : new Error(String(e)));
        await sleep(backoff);
        backoff = Math.min(backoff * 2, 10_000);
      }
    }
  })();
  return {
    stop() {
      stopped = true;
      current?.abort();
    },
  };
}

/**
 * Who this browser tab is logged in as: the bearer token kept in `sessionStorage` (never a cookie,
 * gone when the tab closes) and the notice shown on the login screen. Every request reads the
 * token from here; a 401 from the server clears it (`tokenRefused`), which returns the UI to the
 * login screen. React reads the state with `useSyncExternalStore(subscribe, getSession)`.
 */

export const TOKEN_STORAGE_KEY = 'ferrovirt.token';
export const REFUSED_NOTICE = 'Your token was refused (401 Unauthorized). Log in again.';

export interface Session {
  /** The bearer token, or null when logged out. */
  readonly token: string | null;
  /** Why the user is looking at the login screen (e.g. the token was refused), if anything. */
  readonly notice: string | null;
}

type TabStorage = Pick<Storage, 'getItem' | 'setItem' | 'clear'>;

function tabStorage(): TabStorage | null {
  try {
    return (globalThis as { sessionStorage?: TabStorage }).sessionStorage ?? null;
  } catch {
    return null; // storage disabled by the browser: the token lives in memory only
  }
}

let session: Session | null = null;
const listeners = new Set<() => void>();

function set(next: Session): void {
  session = next;
  for (const l of listeners) l();
}

/** The current session (a stable object until it changes, as `useSyncExternalStore` needs). */
export function getSession(): Session {
  session ??= { token: tabStorage()?.getItem(TOKEN_STORAGE_KEY) || null, notice: null };
  return session;
}

export function subscribe(listener: () => void): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

export function getToken(): string | null {
  return getSession().token;
}

/** Re-reads the token from sessionStorage (start-up, tests). */
export function reloadSession(): void {
  session = null;
  set(getSession());
}

/**
 * Checks a pasted token and returns it trimmed (a leading `Bearer ` is dropped). A token travels in
 * an HTTP header, so it must be printable ASCII without spaces; throws an Error saying what is wrong.
 */
export function normalizeToken(raw: string): string {
  const token = raw.trim().replace(/^bearer\s+/i, '');
  if (!token) throw new Error('Paste a bearer token (or a kubeconfig that contains one).');
  const bad = [...token].find((ch) => ch < '!' || ch > '~');
  if (bad !== undefined) {
    const what = /\s/.test(bad) ? 'a space or line break' : `the character ${JSON.stringify(bad)}`;
    throw new Error(`This token contains ${what}; a bearer token is one word of printable ASCII characters. Paste only the token.`);
  }
  return token;
}

/** Stores the token for this tab (after `normalizeToken`). */
export function logIn(rawToken: string): void {
  const token = normalizeToken(rawToken);
  tabStorage()?.setItem(TOKEN_STORAGE_KEY, token);
  set({ token, notice: null });
}

/** Clears sessionStorage (the token and anything else this tab kept) and shows the login screen. */
export function logOut(notice: string | null = null): void {
  tabStorage()?.clear();
  set({ token: null, notice });
}

/**
 * The server answered 401 to a request made with `usedToken`: log out with the "refused" notice.
 * A late 401 for a token that is no longer the current one (the user has logged in again since)
 * changes nothing.
 */
export function tokenRefused(usedToken: string | null): void {
  const current = getSession().token;
  if (current !== null && usedToken !== current) return;
  logOut(REFUSED_NOTICE);
}

/** `Authorization: Bearer <token>` when logged in. */
export function authHeaders(token: string | null = getToken()): Record<string, string> {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/**
 * The WebSocket subprotocol that carries a bearer token (a browser cannot set `Authorization` on
 * a WebSocket): `base64url.bearer.authorization.k8s.io.` + the token's UTF-8 bytes in base64url
 * without padding, the convention kube-apiserver accepts.
 */
export const BEARER_SUBPROTOCOL_PREFIX = 'base64url.bearer.authorization.k8s.io.';

export function bearerSubprotocol(token: string): string {
  return BEARER_SUBPROTOCOL_PREFIX + base64UrlNoPadding(new TextEncoder().encode(token));
}

export function base64UrlNoPadding(bytes: Uint8Array): string {
  let binary = '';
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** The protocols a WebSocket offers: the real one first (the server echoes it), then the token. */
export function websocketProtocols(protocol: string, token: string | null = getToken()): string[] {
  return token ? [protocol, bearerSubprotocol(token)] : [protocol];
}

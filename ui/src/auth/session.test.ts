import { beforeEach, describe, expect, it } from 'vitest';
import {
  authHeaders, base64UrlNoPadding, bearerSubprotocol, getSession, logIn, logOut, normalizeToken, REFUSED_NOTICE,
  reloadSession, subscribe, TOKEN_STORAGE_KEY, tokenRefused, websocketProtocols,
} from './session';
import { installMemorySessionStorage } from './testStorage';

/** base64url decoding, independent of the encoder under test (atob's forgiving base64 takes no padding). */
const decode = (s: string) => new TextDecoder().decode(Uint8Array.from(atob(s.replace(/-/g, '+').replace(/_/g, '/')), (c) => c.charCodeAt(0)));

describe('bearerSubprotocol', () => {
  it('is the Kubernetes prefix + base64url of the token, without padding', () => {
    // "abc" -> YWJj (no padding needed); "ab" -> YWI= in standard base64.
    expect(bearerSubprotocol('abc')).toBe('base64url.bearer.authorization.k8s.io.YWJj');
    expect(bearerSubprotocol('ab')).toBe('base64url.bearer.authorization.k8s.io.YWI');
    expect(bearerSubprotocol('a')).toBe('base64url.bearer.authorization.k8s.io.YQ');
  });

  it('uses the URL-safe alphabet (- and _ instead of + and /)', () => {
    // bytes fb ff bf encode to "+/+/" in standard base64.
    expect(base64UrlNoPadding(new Uint8Array([0xfb, 0xff, 0xbf]))).toBe('-_-_');
    const token = 'eyJhbGciOiJSUzI1NiJ9.e30.sig>>>???';
    const encoded = bearerSubprotocol(token).slice('base64url.bearer.authorization.k8s.io.'.length);
    expect(encoded).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(decode(encoded)).toBe(token);
  });

  it('encodes the UTF-8 bytes of non-ASCII text (btoa alone would throw)', () => {
    const text = 'tök€n-😀';
    const encoded = bearerSubprotocol(text).slice('base64url.bearer.authorization.k8s.io.'.length);
    expect(encoded).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(decode(encoded)).toBe(text);
  });

  it('is offered after the real protocol', () => {
    expect(websocketProtocols('plain.kubevirt.io', 'abc')).toEqual(['plain.kubevirt.io', 'base64url.bearer.authorization.k8s.io.YWJj']);
    expect(websocketProtocols('plain.kubevirt.io', null)).toEqual(['plain.kubevirt.io']);
  });
});

describe('normalizeToken', () => {
  it('trims and drops a pasted "Bearer " prefix', () => {
    expect(normalizeToken('  Bearer abc.def-_~\n')).toBe('abc.def-_~');
  });
  it('refuses empty tokens, spaces inside and non-ASCII, saying why', () => {
    expect(() => normalizeToken('   ')).toThrow(/Paste a bearer token/);
    expect(() => normalizeToken('abc def')).toThrow(/a space or line break/);
    expect(() => normalizeToken('tökén')).toThrow(/the character "ö"/);
  });
});

describe('session', () => {
  let storage: Map<string, string>;
  beforeEach(() => {
    storage = installMemorySessionStorage();
    reloadSession();
  });

  it('keeps the token in sessionStorage and reads it back', () => {
    expect(getSession()).toEqual({ token: null, notice: null });
    logIn(' secret ');
    expect(storage.get(TOKEN_STORAGE_KEY)).toBe('secret');
    expect(authHeaders()).toEqual({ Authorization: 'Bearer secret' });
    reloadSession();
    expect(getSession().token).toBe('secret');
  });

  it('logs out by clearing sessionStorage, and tells subscribers', () => {
    logIn('secret');
    storage.set('other', 'x');
    let calls = 0;
    const off = subscribe(() => calls++);
    logOut();
    off();
    expect(storage.size).toBe(0);
    expect(getSession()).toEqual({ token: null, notice: null });
    expect(authHeaders()).toEqual({});
    expect(calls).toBe(1);
  });

  it('a 401 for the current token logs out with the notice; a late 401 for an old token does not', () => {
    logIn('old');
    logIn('new');
    tokenRefused('old');
    expect(getSession().token).toBe('new');
    tokenRefused('new');
    expect(getSession()).toEqual({ token: null, notice: REFUSED_NOTICE });
    expect(storage.has(TOKEN_STORAGE_KEY)).toBe(false);
  });
});

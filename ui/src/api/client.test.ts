import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { getSession, logIn, REFUSED_NOTICE, reloadSession } from '../auth/session';
import { installMemorySessionStorage } from '../auth/testStorage';
import { api, ApiError, applyWatchEvent, handshakeRefusal, NdjsonSplitter, startInformer, statusFromResponse, watchOnce, whoAmI } from './client';
import { paths, watchUrl, websocketUrl } from './paths';

describe('NdjsonSplitter', () => {
  it('joins lines split across chunks and keeps partial lines', () => {
    const s = new NdjsonSplitter();
    expect(s.push('{"type":"ADDED","object":{}}\n{"ty')).toEqual(['{"type":"ADDED","object":{}}']);
    expect(s.push('pe":"DELETED"')).toEqual([]);
    expect(s.push(',"object":{}}\n\n')).toEqual(['{"type":"DELETED","object":{}}']);
    s.push('{"last":1}');
    expect(s.flush()).toEqual(['{"last":1}']);
  });
});

describe('applyWatchEvent', () => {
  const o = (name: string, rv: string) => ({ metadata: { namespace: 'n', name, resourceVersion: rv } });
  it('adds, modifies in place and deletes', () => {
    let items = [o('a', '1'), o('b', '2')];
    items = applyWatchEvent(items, { type: 'MODIFIED', object: o('a', '3') });
    expect(items.map((i) => i.metadata.resourceVersion)).toEqual(['3', '2']);
    items = applyWatchEvent(items, { type: 'ADDED', object: o('c', '4') });
    expect(items.map((i) => i.metadata.name)).toEqual(['a', 'b', 'c']);
    items = applyWatchEvent(items, { type: 'DELETED', object: o('b', '5') });
    expect(items.map((i) => i.metadata.name)).toEqual(['a', 'c']);
    expect(applyWatchEvent(items, { type: 'ERROR', object: {} as (typeof items)[number] })).toBe(items);
  });
});

describe('statusFromResponse', () => {
  it('passes a Status through and wraps other bodies', () => {
    const st = statusFromResponse(422, 'Unprocessable', JSON.stringify({ kind: 'Status', message: 'bad', reason: 'Invalid' }));
    expect(st).toMatchObject({ kind: 'Status', code: 422, message: 'bad', reason: 'Invalid' });
    expect(statusFromResponse(502, 'Bad Gateway', 'upstream down')).toMatchObject({ code: 502, message: 'HTTP 502: upstream down' });
  });
});

describe('paths', () => {
  it('builds the Kubernetes REST paths', () => {
    expect(paths.vms()).toBe('/apis/kubevirt.io/v1/virtualmachines');
    expect(paths.vm('ns', 'a')).toBe('/apis/kubevirt.io/v1/namespaces/ns/virtualmachines/a');
    expect(paths.vmAction('ns', 'a', 'start')).toBe('/apis/subresources.kubevirt.io/v1/namespaces/ns/virtualmachines/a/start');
    expect(paths.vmiConsole('ns', 'a')).toBe('/apis/subresources.kubevirt.io/v1/namespaces/ns/virtualmachineinstances/a/console');
    expect(paths.events('ns', 'a')).toBe('/api/v1/namespaces/ns/events?fieldSelector=involvedObject.name%3Da');
    expect(paths.statePvcs('ns', 'a')).toBe('/api/v1/namespaces/ns/persistentvolumeclaims?labelSelector=persistent-state-for%3Da');
    expect(paths.kubevirt()).toBe('/apis/kubevirt.io/v1/namespaces/kubevirt/kubevirts/kubevirt');
    expect(paths.storageClasses()).toBe('/apis/storage.k8s.io/v1/storageclasses');
    expect(paths.templateVersions('ns')).toBe('/apis/harvesterhci.io/v1beta1/namespaces/ns/virtualmachinetemplateversions');
    expect(watchUrl(paths.vms(), '7')).toBe('/apis/kubevirt.io/v1/virtualmachines?watch=true&resourceVersion=7');
    expect(watchUrl(paths.events('n', 'a'), undefined)).toBe('/api/v1/namespaces/n/events?fieldSelector=involvedObject.name%3Da&watch=true');
    expect(websocketUrl('/x', { protocol: 'https:', host: 'h:1' })).toBe('wss://h:1/x');
  });
});

/** Records every fetch and answers from `respond`. */
function recordFetch(respond: (url: string, init: RequestInit) => Response = () => new Response('{}', { status: 200 })) {
  const calls: { url: string; init: RequestInit; headers: Headers }[] = [];
  vi.stubGlobal('fetch', async (url: string, init: RequestInit) => {
    calls.push({ url, init, headers: new Headers(init.headers) });
    return respond(url, init);
  });
  return calls;
}

const forbidden = {
  kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'Forbidden', code: 403,
  message: 'virtualmachines.kubevirt.io is forbidden: User "viewer" cannot create resource "virtualmachines" in API group "kubevirt.io" in the namespace "default"',
};
const unauthorized = { kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'Unauthorized', code: 401, message: 'Unauthorized' };
const json = (body: unknown, status = 200) => new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } });

describe('the client with a token', () => {
  beforeEach(() => {
    installMemorySessionStorage();
    reloadSession();
    logIn('s3cret-token');
  });
  afterEach(() => vi.unstubAllGlobals());

  it('sends the bearer token on every request, no cookies, and the media type of every body', async () => {
    const calls = recordFetch();
    await api.get('/g');
    await api.list('/l');
    await api.create('/c', { kind: 'VirtualMachine' });
    await api.replace('/r', { kind: 'VirtualMachine' });
    await api.mergePatch('/p', { spec: {} });
    await api.delete('/d');
    await api.action('/a/start');
    const seen = calls.map((c) => [c.init.method, c.url, c.headers.get('Content-Type'), c.init.body ?? null]);
    expect(seen).toEqual([
      ['GET', '/g', null, null],
      ['GET', '/l', null, null],
      ['POST', '/c', 'application/json', '{"kind":"VirtualMachine"}'],
      ['PUT', '/r', 'application/json', '{"kind":"VirtualMachine"}'],
      ['PATCH', '/p', 'application/merge-patch+json', '{"spec":{}}'],
      ['DELETE', '/d', 'application/json', '{"kind":"DeleteOptions","apiVersion":"v1"}'],
      ['PUT', '/a/start', 'application/json', '{}'],
    ]);
    for (const c of calls) {
      expect(c.headers.get('Authorization')).toBe('Bearer s3cret-token');
      expect(c.headers.get('Accept')).toBe('application/json');
      expect(c.init.credentials).toBe('omit');
    }
  });

  it('sends the token on watches too', async () => {
    const calls = recordFetch(() => new Response('{"type":"ADDED","object":{"metadata":{"name":"a"}}}\n'));
    const events: unknown[] = [];
    await watchOnce('/l', '5', (e) => events.push(e), new AbortController().signal);
    expect(events).toHaveLength(1);
    expect(calls[0].url).toBe('/l?watch=true&resourceVersion=5');
    expect(calls[0].headers.get('Authorization')).toBe('Bearer s3cret-token');
    expect(calls[0].init.credentials).toBe('omit');
  });

  it('asks who it is with a SelfSubjectReview', async () => {
    const calls = recordFetch(() => json({ kind: 'SelfSubjectReview', status: { userInfo: { username: 'admin', groups: ['system:masters'] } } }, 201));
    expect(await whoAmI()).toBe('admin');
    expect(calls[0].init.method).toBe('POST');
    expect(calls[0].url).toBe('/apis/authentication.k8s.io/v1/selfsubjectreviews');
    expect(JSON.parse(String(calls[0].init.body))).toEqual({ apiVersion: 'authentication.k8s.io/v1', kind: 'SelfSubjectReview' });
    expect(calls[0].headers.get('Content-Type')).toBe('application/json');
  });

  it('a 401 logs the tab out with the "refused" notice and throws', async () => {
    recordFetch(() => json(unauthorized, 401));
    const err = await api.get('/g').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).code).toBe(401);
    expect(getSession()).toEqual({ token: null, notice: REFUSED_NOTICE });
    expect(sessionStorage.length).toBe(0);
  });

  it('a 401 on a watch stream logs out, and the informer stops instead of retrying', async () => {
    let n = 0;
    const calls = recordFetch((url) => (n++ === 0 && !url.includes('watch') ? json({ items: [], metadata: { resourceVersion: '1' } }) : json(unauthorized, 401)));
    const errors: (Error | null)[] = [];
    const h = startInformer('/l', () => {}, (e) => errors.push(e));
    await vi.waitFor(() => expect(getSession().token).toBeNull());
    await new Promise((r) => setTimeout(r, 700)); // longer than the first retry back-off
    h.stop();
    expect(calls.map((c) => c.url)).toEqual(['/l', '/l?watch=true&resourceVersion=1']);
    expect((errors.at(-1) as ApiError).code).toBe(401);
    expect(getSession().notice).toBe(REFUSED_NOTICE);
  });

  it("a 403 throws the server's Status message and keeps the tab logged in", async () => {
    recordFetch(() => json(forbidden, 403));
    const err = (await api.create('/c', {}).catch((e: unknown) => e)) as ApiError;
    expect(err.code).toBe(403);
    expect(err.message).toBe(forbidden.message);
    expect(getSession().token).toBe('s3cret-token');
  });

  it('a refused WebSocket handshake is explained by a GET of the same URL', async () => {
    recordFetch(() => json(forbidden, 403));
    expect(await handshakeRefusal('/console')).toMatchObject({ code: 403, message: forbidden.message });
    expect(getSession().token).toBe('s3cret-token');
    recordFetch(() => json({ kind: 'Status', code: 400, message: 'not running' }, 400));
    expect(await handshakeRefusal('/console')).toBeNull();
    recordFetch(() => json(unauthorized, 401));
    expect(await handshakeRefusal('/console')).toMatchObject({ code: 401 });
    expect(getSession().notice).toBe(REFUSED_NOTICE);
  });
});

import { describe, expect, it } from 'vitest';
import { applyWatchEvent, NdjsonSplitter, statusFromResponse } from './client';
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

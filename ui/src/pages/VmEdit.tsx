import { Group, Title } from '@mantine/core';
import { useEffect, useState } from 'react';
import { api } from '../api/client';
import { paths } from '../api/paths';
import type { K8sObject } from '../api/types';
import { ErrorBanner, Loading } from '../components/Common';
import { SaveAsTemplateButton } from '../components/SaveAsTemplate';
import { VmEditor } from '../components/VmEditor';
import { newVmObject, VM_ROOT } from '../model/vmForm';
import { objectToYaml } from '../model/yamlDoc';
import { navigate } from '../router';

/** What an editor shows of a stored object: no status, no managedFields (the server owns them). */
export function forEditing(obj: K8sObject): K8sObject {
  const { status: _status, ...rest } = obj;
  void _status;
  const meta = { ...(rest.metadata ?? {}) };
  delete meta.managedFields;
  return { ...rest, metadata: meta };
}

export default function VmEdit(props: { mode: 'create' } | { mode: 'edit'; namespace: string; name: string }) {
  const [initial, setInitial] = useState<string | null>(props.mode === 'create' ? objectToYaml(newVmObject('default')) : null);
  const [loadError, setLoadError] = useState<Error | null>(null);
  const ns = props.mode === 'edit' ? props.namespace : '';
  const name = props.mode === 'edit' ? props.name : '';
  useEffect(() => {
    if (props.mode !== 'edit') return;
    api.get(paths.vm(ns, name)).then((vm) => setInitial(objectToYaml(forEditing(vm))), setLoadError);
  }, [props.mode, ns, name]);

  if (loadError) return <ErrorBanner error={loadError} title="Cannot load the virtual machine" />;
  if (initial === null) return <Loading />;
  return (
    <>
      <Group mb="md"><Title order={2}>{props.mode === 'create' ? 'Create virtual machine' : `Edit ${ns}/${name}`}</Title></Group>
      <VmEditor
        initialText={initial}
        root={VM_ROOT}
        identity
        lockIdentity={props.mode === 'edit'}
        saveLabel={props.mode === 'create' ? 'Create' : 'Save'}
        onCancel={() => (props.mode === 'edit' ? navigate('vms', ns, name) : navigate('vms'))}
        onSave={async (obj) => {
          const tns = obj.metadata?.namespace || 'default';
          if (props.mode === 'create') {
            const created = await api.create(paths.vms(tns), obj);
            navigate('vms', tns, created.metadata?.name ?? obj.metadata?.name ?? '');
          } else {
            await api.replace(paths.vm(ns, name), obj);
            navigate('vms', ns, name);
          }
        }}
        renderActions={(obj) => <SaveAsTemplateButton vm={obj} />}
      />
    </>
  );
}

/** "Save as template": adds the VM (as edited) as a new version of a new or existing template. */
import { Autocomplete, Button, Checkbox, Group, Modal, Stack, TextInput } from '@mantine/core';
import { useState } from 'react';
import { api } from '../api/client';
import { paths } from '../api/paths';
import type { K8sObject } from '../api/types';
import { useLiveList } from '../hooks';
import { newTemplate, versionFromVm } from '../model/template';
import { nameError } from '../model/names';
import { ErrorBanner } from './Common';

/** Creates the template when missing, then the version; makes it the default when asked or new. */
export async function saveVmAsTemplateVersion(vm: K8sObject, namespace: string, templateName: string, description: string, makeDefault: boolean): Promise<K8sObject> {
  let created = false;
  try {
    await api.get(paths.template(namespace, templateName));
  } catch {
    await api.create(paths.templates(namespace), newTemplate(namespace, templateName, description));
    created = true;
  }
  const version = await api.create(paths.templateVersions(namespace), versionFromVm(vm, { namespace, name: templateName }, description));
  if (makeDefault || created) {
    await api.mergePatch(paths.template(namespace, templateName), { spec: { defaultVersionId: `${namespace}/${version.metadata?.name}` } });
  }
  return version;
}

export function SaveAsTemplateButton({ vm }: { vm: K8sObject | null }) {
  const [open, setOpen] = useState(false);
  const ns = vm?.metadata?.namespace || 'default';
  const templates = useLiveList(open ? paths.templates(ns) : null);
  const [name, setName] = useState('');
  const [description, setDescription] = useState('');
  const [makeDefault, setMakeDefault] = useState(true);
  const [error, setError] = useState<Error | null>(null);
  const [busy, setBusy] = useState(false);
  const [done, setDone] = useState('');
  return (
    <>
      <Button variant="light" disabled={!vm} onClick={() => (setOpen(true), setDone(''), setError(null))}>Save as template</Button>
      <Modal opened={open} onClose={() => setOpen(false)} title={`Save as template version (namespace ${ns})`}>
        <Stack>
          <ErrorBanner error={error} />
          {done ? <div role="status">Saved as {done}.</div> : null}
          <Autocomplete label="Template" description="An existing template gets a new version; a new name creates the template" data={templates.items.map((t) => t.metadata?.name ?? '')} value={name} onChange={setName} error={name ? nameError(name) : undefined} />
          <TextInput label="Version description" value={description} onChange={(e) => setDescription(e.currentTarget.value)} />
          <Checkbox label="Make it the default version" checked={makeDefault} onChange={(e) => setMakeDefault(e.currentTarget.checked)} />
          <Group justify="flex-end">
            <Button
              loading={busy}
              disabled={!vm || !!nameError(name)}
              onClick={async () => {
                if (!vm) return;
                setBusy(true);
                try {
                  const v = await saveVmAsTemplateVersion(vm, ns, name, description, makeDefault);
                  setDone(`${ns}/${v.metadata?.name}`);
                  setError(null);
                } catch (e) {
                  setError(e as Error);
                } finally {
                  setBusy(false);
                }
              }}
            >
              Save version
            </Button>
          </Group>
        </Stack>
      </Modal>
    </>
  );
}

import { Badge, Button, Card, Group, Modal, NumberInput, Stack, Table, Text, TextInput, Title } from '@mantine/core';
import { useState } from 'react';
import { api } from '../api/client';
import { paths } from '../api/paths';
import type { K8sObject } from '../api/types';
import { ConfirmButton, ErrorBanner, Loading } from '../components/Common';
import { useLiveList } from '../hooks';
import { firmwareLabel, formatAge, tpmMode } from '../model/summary';
import { instanceNames, instantiate, newTemplate, parseId } from '../model/template';
import { nameError } from '../model/names';
import { navigate } from '../router';

/** TPM / firmware of the VM a version holds (its spec.vm is {metadata, spec}). */
const asVm = (version: K8sObject): K8sObject => ({ spec: version.spec?.vm?.spec ?? {} });

function CreateVmsModal({ version, onClose }: { version: K8sObject | null; onClose: () => void }) {
  const [ns, setNs] = useState(version?.metadata?.namespace ?? 'default');
  const [prefix, setPrefix] = useState('');
  const [count, setCount] = useState<number>(1);
  const [busy, setBusy] = useState(false);
  const [errors, setErrors] = useState<string[]>([]);
  const [created, setCreated] = useState<string[]>([]);
  const names = instanceNames(prefix, count);
  const badName = prefix ? names.map(nameError).find((e) => e) : null;
  return (
    <Modal opened={!!version} onClose={onClose} title={`Create VMs from ${version?.metadata?.name ?? ''}`}>
      <Stack>
        <TextInput label="Namespace" value={ns} onChange={(e) => setNs(e.currentTarget.value)} />
        <TextInput label={count > 1 ? 'Name prefix' : 'Name'} value={prefix} onChange={(e) => setPrefix(e.currentTarget.value)} error={badName ?? undefined} />
        <NumberInput label="Count" min={1} max={100} value={count} onChange={(x) => setCount(Number(x) || 1)} />
        {prefix ? <Text size="sm" c="dimmed">Will create: {names.slice(0, 5).join(', ')}{names.length > 5 ? `, ... ${names[names.length - 1]}` : ''}</Text> : null}
        {errors.length ? <ErrorBanner error={new Error(errors.join('\n'))} title="Some VMs were not created" /> : null}
        {created.length ? <Text size="sm" role="status">Created: {created.join(', ')}</Text> : null}
        <Group justify="flex-end">
          <Button
            loading={busy}
            disabled={!prefix || !!badName || !version}
            onClick={async () => {
              if (!version) return;
              setBusy(true);
              const errs: string[] = [];
              const ok: string[] = [];
              for (const vm of instantiate(version, ns, prefix, count)) {
                try {
                  await api.create(paths.vms(ns), vm);
                  ok.push(vm.metadata?.name ?? '');
                } catch (e) {
                  errs.push(`${vm.metadata?.name}: ${(e as Error).message}`);
                }
              }
              setErrors(errs);
              setCreated(ok);
              setBusy(false);
            }}
          >
            Create
          </Button>
        </Group>
      </Stack>
    </Modal>
  );
}

function NewTemplateModal({ opened, onClose }: { opened: boolean; onClose: () => void }) {
  const [ns, setNs] = useState('default');
  const [name, setName] = useState('');
  const [description, setDescription] = useState('');
  const [error, setError] = useState<Error | null>(null);
  return (
    <Modal opened={opened} onClose={onClose} title="New template">
      <Stack>
        <ErrorBanner error={error} />
        <TextInput label="Namespace" value={ns} onChange={(e) => setNs(e.currentTarget.value)} />
        <TextInput label="Template name" value={name} onChange={(e) => setName(e.currentTarget.value)} error={name ? nameError(name) : undefined} />
        <TextInput label="Description" value={description} onChange={(e) => setDescription(e.currentTarget.value)} />
        <Group justify="flex-end">
          <Button
            disabled={!!nameError(name)}
            onClick={async () => {
              try {
                await api.create(paths.templates(ns), newTemplate(ns, name, description));
                onClose();
                navigate('templates', ns, name, 'new-version');
              } catch (e) {
                setError(e as Error);
              }
            }}
          >
            Create and add a version
          </Button>
        </Group>
      </Stack>
    </Modal>
  );
}

export function Templates() {
  const templates = useLiveList(paths.templates());
  const versions = useLiveList(paths.templateVersions());
  const [error, setError] = useState<Error | null>(null);
  const [instantiating, setInstantiating] = useState<K8sObject | null>(null);
  const [newOpen, setNewOpen] = useState(false);
  const run = async (fn: () => Promise<unknown>) => {
    try {
      await fn();
      setError(null);
    } catch (e) {
      setError(e as Error);
    }
  };
  return (
    <Stack>
      <Group justify="space-between">
        <Title order={2}>Templates</Title>
        <Button onClick={() => setNewOpen(true)}>New template</Button>
      </Group>
      <ErrorBanner error={templates.error ?? versions.error} title="Cannot load templates" />
      <ErrorBanner error={error} title="Action failed" />
      {!templates.loaded && !templates.error ? <Loading /> : null}
      {templates.loaded && templates.items.length === 0 ? <Text c="dimmed">No templates yet. Create one, or use "Save as template" in a VM's editor.</Text> : null}
      {templates.items.map((t) => {
        const ns = t.metadata?.namespace ?? 'default';
        const name = t.metadata?.name ?? '';
        const mine = versions.items
          .filter((v) => v.metadata?.namespace === ns && parseId(v.spec?.templateId, ns)?.name === name)
          .sort((a, b) => (a.status?.version ?? 0) - (b.status?.version ?? 0));
        const defaultId = t.spec?.defaultVersionId ?? '';
        return (
          <Card withBorder key={`${ns}/${name}`} data-template={name}>
            <Group justify="space-between" mb="xs">
              <div>
                <Title order={4}>{ns}/{name}</Title>
                <Text size="sm" c="dimmed">{t.spec?.description}</Text>
              </div>
              <Group>
                <Button size="xs" variant="light" onClick={() => navigate('templates', ns, name, 'new-version')}>New version</Button>
                <ConfirmButton label="Delete template" title={`Delete template ${name}?`} body="The template and its versions are deleted; VMs created from it stay." onConfirm={() => run(async () => {
                  for (const v of mine) await api.delete(paths.templateVersion(ns, v.metadata?.name ?? ''));
                  await api.delete(paths.template(ns, name));
                })} />
              </Group>
            </Group>
            <Table aria-label={`Versions of ${name}`}>
              <Table.Thead>
                <Table.Tr><Table.Th>Version</Table.Th><Table.Th>Name</Table.Th><Table.Th>Description</Table.Th><Table.Th>TPM</Table.Th><Table.Th>Firmware</Table.Th><Table.Th>Age</Table.Th><Table.Th>Actions</Table.Th></Table.Tr>
              </Table.Thead>
              <Table.Tbody>
                {mine.map((v) => {
                  const vname = v.metadata?.name ?? '';
                  const id = `${ns}/${vname}`;
                  const isDefault = defaultId === id || defaultId === vname;
                  return (
                    <Table.Tr key={vname}>
                      <Table.Td>{v.status?.version ?? '-'} {isDefault ? <Badge size="xs" ml={4}>default</Badge> : null}</Table.Td>
                      <Table.Td>{vname}</Table.Td>
                      <Table.Td>{v.spec?.description}</Table.Td>
                      <Table.Td>{tpmMode(asVm(v))}</Table.Td>
                      <Table.Td>{firmwareLabel(asVm(v))}</Table.Td>
                      <Table.Td>{formatAge(v.metadata?.creationTimestamp)}</Table.Td>
                      <Table.Td>
                        <Group gap={4} wrap="nowrap">
                          <Button size="xs" variant="light" onClick={() => setInstantiating(v)}>Create VMs</Button>
                          <Button size="xs" variant="default" disabled={isDefault} onClick={() => run(() => api.mergePatch(paths.template(ns, name), { spec: { defaultVersionId: id } }))}>Set default</Button>
                          <ConfirmButton label="Delete" title={`Delete version ${vname}?`} body="VMs created from it stay." disabled={isDefault} onConfirm={() => run(() => api.delete(paths.templateVersion(ns, vname)))} />
                        </Group>
                      </Table.Td>
                    </Table.Tr>
                  );
                })}
              </Table.Tbody>
            </Table>
            {mine.length === 0 ? <Text size="sm" c="dimmed">No versions yet.</Text> : null}
          </Card>
        );
      })}
      {instantiating ? <CreateVmsModal key={instantiating.metadata?.uid ?? instantiating.metadata?.name} version={instantiating} onClose={() => setInstantiating(null)} /> : null}
      <NewTemplateModal opened={newOpen} onClose={() => setNewOpen(false)} />
    </Stack>
  );
}

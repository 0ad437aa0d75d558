import { Anchor, Badge, Button, Group, Select, Table, Text, Title } from '@mantine/core';
import { useMemo, useState } from 'react';
import { api } from '../api/client';
import { paths } from '../api/paths';
import type { K8sObject } from '../api/types';
import { ConfirmButton, ErrorBanner, Loading, StatusBadge } from '../components/Common';
import { useLiveList } from '../hooks';
import { firmwareLabel, formatAge, printableStatus, tpmMode } from '../model/summary';
import { href, navigate } from '../router';

export function VmActions({ vm, onError, onDeleted }: { vm: K8sObject; onError: (e: Error | null) => void; onDeleted?: () => void }) {
  const ns = vm.metadata?.namespace ?? 'default';
  const name = vm.metadata?.name ?? '';
  const status = printableStatus(vm);
  const run = async (action: 'start' | 'stop' | 'restart') => {
    try {
      await api.action(paths.vmAction(ns, name, action));
      onError(null);
    } catch (e) {
      onError(e as Error);
    }
  };
  const running = status === 'Running' || status === 'Starting' || status === 'Paused';
  return (
    <Group gap={4} wrap="nowrap">
      <Button size="xs" variant="light" disabled={running} onClick={() => run('start')} aria-label={`Start ${name}`}>Start</Button>
      <ConfirmButton label="Stop" color="orange" title={`Stop ${name}?`} body="The VM is powered off. Persistent TPM and EFI state is kept." onConfirm={() => run('stop')} disabled={status === 'Stopped'} />
      <Button size="xs" variant="light" disabled={!running} onClick={() => run('restart')} aria-label={`Restart ${name}`}>Restart</Button>
      <ConfirmButton
        label="Delete"
        title={`Delete ${name}?`}
        body={`Deleting ${ns}/${name} also deletes its backend-storage volume: its persistent TPM keys and UEFI variables are lost.`}
        onConfirm={async () => {
          try {
            await api.delete(paths.vm(ns, name));
            onError(null);
            onDeleted?.();
          } catch (e) {
            onError(e as Error);
          }
        }}
      />
    </Group>
  );
}

const TPM_COLORS = { none: 'gray', ephemeral: 'blue', persistent: 'teal' } as const;

export function VmList() {
  const { items, error, loaded } = useLiveList(paths.vms());
  const [actionError, setActionError] = useState<Error | null>(null);
  const [ns, setNs] = useState<string | null>(null);
  const namespaces = useMemo(() => [...new Set(items.map((v) => v.metadata?.namespace ?? ''))].sort(), [items]);
  const shown = items
    .filter((v) => !ns || v.metadata?.namespace === ns)
    .sort((a, b) => `${a.metadata?.namespace}/${a.metadata?.name}`.localeCompare(`${b.metadata?.namespace}/${b.metadata?.name}`));
  return (
    <>
      <Group justify="space-between" mb="md">
        <Title order={2}>Virtual Machines</Title>
        <Group>
          <Select aria-label="Namespace" placeholder="All namespaces" clearable data={namespaces} value={ns} onChange={setNs} />
          <Button onClick={() => navigate('vms', 'new')}>Create</Button>
        </Group>
      </Group>
      <ErrorBanner error={error} title="Cannot load virtual machines" />
      <ErrorBanner error={actionError} title="Action failed" />
      {!loaded && !error ? (
        <Loading />
      ) : (
        <Table striped highlightOnHover aria-label="Virtual machines">
          <Table.Thead>
            <Table.Tr>
              <Table.Th>Name</Table.Th>
              <Table.Th>Namespace</Table.Th>
              <Table.Th>Status</Table.Th>
              <Table.Th>TPM</Table.Th>
              <Table.Th>Firmware</Table.Th>
              <Table.Th>Age</Table.Th>
              <Table.Th>Actions</Table.Th>
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {shown.map((vm) => {
              const tpm = tpmMode(vm);
              return (
                <Table.Tr key={`${vm.metadata?.namespace}/${vm.metadata?.name}`} data-vm={vm.metadata?.name}>
                  <Table.Td>
                    <Anchor href={href('vms', vm.metadata?.namespace ?? '', vm.metadata?.name ?? '')}>{vm.metadata?.name}</Anchor>
                  </Table.Td>
                  <Table.Td>{vm.metadata?.namespace}</Table.Td>
                  <Table.Td><StatusBadge status={printableStatus(vm)} /></Table.Td>
                  <Table.Td><Badge variant="light" color={TPM_COLORS[tpm]}>{tpm}</Badge></Table.Td>
                  <Table.Td>{firmwareLabel(vm)}</Table.Td>
                  <Table.Td>{formatAge(vm.metadata?.creationTimestamp)}</Table.Td>
                  <Table.Td><VmActions vm={vm} onError={setActionError} /></Table.Td>
                </Table.Tr>
              );
            })}
          </Table.Tbody>
        </Table>
      )}
      {loaded && shown.length === 0 ? <Text c="dimmed" mt="md">No virtual machines yet.</Text> : null}
    </>
  );
}

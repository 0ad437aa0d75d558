/**
 * The Snapshots tab of a VM: take a snapshot (offline when stopped, online when running), list
 * them with size and online/offline, restore into the VM (it must be stopped), restore as a new
 * VM, delete.
 */
import { Badge, Button, Group, Modal, Stack, Table, Text, TextInput } from '@mantine/core';
import { useState } from 'react';
import { api } from '../api/client';
import { paths } from '../api/paths';
import type { K8sObject } from '../api/types';
import { useLiveList } from '../hooks';
import { formatAge } from '../model/summary';
import { newRestore, newSnapshot, snapshotRow, snapshotsOf, timestampedName } from '../model/snapshots';
import { ConfirmButton, ErrorBanner, Loading } from './Common';

function RestoreAsNew({ namespace, snapshot, vm, onError }: { namespace: string; snapshot: string; vm: string; onError: (e: Error | null) => void }) {
  const [open, setOpen] = useState(false);
  const [target, setTarget] = useState(`${vm}-restored`);
  const [busy, setBusy] = useState(false);
  return (
    <>
      <Button size="xs" variant="light" onClick={() => setOpen(true)}>Restore as new VM</Button>
      <Modal opened={open} onClose={() => setOpen(false)} title={`Restore ${snapshot} as a new VM`}>
        <Stack>
          <TextInput label="New VM name" value={target} onChange={(e) => setTarget(e.currentTarget.value)} />
          <Text size="sm" c="dimmed">
            The new VM gets the snapshot&apos;s spec, TPM state and UEFI variables, with a new firmware UUID, SMBIOS serial and MAC addresses.
          </Text>
          <Group justify="flex-end">
            <Button variant="default" onClick={() => setOpen(false)}>Cancel</Button>
            <Button
              loading={busy}
              onClick={async () => {
                setBusy(true);
                try {
                  await api.create(paths.restores(namespace), newRestore(namespace, snapshot, target, timestampedName(`${target}-restore`)));
                  onError(null);
                  setOpen(false);
                } catch (e) {
                  onError(e as Error);
                } finally {
                  setBusy(false);
                }
              }}
            >
              Restore
            </Button>
          </Group>
        </Stack>
      </Modal>
    </>
  );
}

export function Snapshots({ namespace, vm, stopped }: { namespace: string; vm: string; stopped: boolean }) {
  const snapshots = useLiveList(paths.snapshots(namespace));
  const restores = useLiveList(paths.restores(namespace));
  const [error, setError] = useState<Error | null>(null);
  const [taking, setTaking] = useState(false);
  const mine = snapshotsOf(snapshots.items, vm);
  const pending = restores.items.filter((r: K8sObject) => r.spec?.target?.name === vm && r.status?.complete !== true);
  const take = async () => {
    setTaking(true);
    try {
      await api.create(paths.snapshots(namespace), newSnapshot(namespace, vm, timestampedName(`${vm}-snapshot`)));
      setError(null);
    } catch (e) {
      setError(e as Error);
    } finally {
      setTaking(false);
    }
  };
  return (
    <Stack>
      <Group justify="space-between">
        <Text size="sm" c="dimmed">
          {stopped ? 'The VM is stopped: a snapshot copies it as it is (offline).' : 'The VM runs: a snapshot pauses its vCPUs for a moment (online, crash-consistent).'}
        </Text>
        <Button size="xs" loading={taking} onClick={take}>Take snapshot</Button>
      </Group>
      <ErrorBanner error={error} title="Snapshot action failed" />
      <ErrorBanner error={snapshots.error} title="Cannot load snapshots" />
      {pending.map((r: K8sObject) => (
        <Text key={r.metadata?.name} size="sm">
          Restore {r.metadata?.name}: {(r.status?.conditions ?? []).map((c: { message?: string }) => c.message).filter(Boolean)[0] ?? 'in progress'}
        </Text>
      ))}
      {!snapshots.loaded && !snapshots.error ? <Loading /> : mine.length === 0 ? (
        <Text size="sm" c="dimmed">No snapshots of this VM.</Text>
      ) : (
        <Table aria-label="Snapshots">
          <Table.Thead>
            <Table.Tr><Table.Th>Name</Table.Th><Table.Th>Phase</Table.Th><Table.Th>Size</Table.Th><Table.Th>Taken</Table.Th><Table.Th>Age</Table.Th><Table.Th /></Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {mine.map((s: K8sObject) => {
              const row = snapshotRow(s);
              return (
                <Table.Tr key={row.name}>
                  <Table.Td>{row.name}</Table.Td>
                  <Table.Td>
                    <Badge variant="light" color={row.phase === 'Failed' ? 'red' : row.ready ? 'teal' : 'gray'}>{row.phase}</Badge>
                    {row.error && <Text size="xs" c="red">{row.error}</Text>}
                  </Table.Td>
                  <Table.Td>{row.size || '-'}</Table.Td>
                  <Table.Td>{row.mode || '-'}</Table.Td>
                  <Table.Td>{formatAge(row.created)}</Table.Td>
                  <Table.Td>
                    <Group gap={4} wrap="nowrap">
                      <ConfirmButton
                        label="Restore"
                        color="blue"
                        title={`Restore ${row.name} into ${vm}?`}
                        body={stopped
                          ? `The VM's spec, TPM state and UEFI variables go back to the snapshot's. The state it replaces is kept as a generation (ferrovirt state rollback undoes the restore).`
                          : 'The VM must be stopped first (KubeVirt refuses to restore a running VM); the restore waits until it is.'}
                        disabled={!row.ready}
                        onConfirm={async () => {
                          try {
                            await api.create(paths.restores(namespace), newRestore(namespace, row.name, vm, timestampedName(`${vm}-restore`)));
                            setError(null);
                          } catch (e) {
                            setError(e as Error);
                          }
                        }}
                      />
                      {row.ready && <RestoreAsNew namespace={namespace} snapshot={row.name} vm={vm} onError={setError} />}
                      <ConfirmButton
                        label="Delete"
                        title={`Delete snapshot ${row.name}?`}
                        body="Its data (TPM state, UEFI variables, disk copies) is deleted too, unless its deletion policy is Retain."
                        onConfirm={async () => {
                          try {
                            await api.delete(paths.snapshot(namespace, row.name));
                            setError(null);
                          } catch (e) {
                            setError(e as Error);
                          }
                        }}
                      />
                    </Group>
                  </Table.Td>
                </Table.Tr>
              );
            })}
          </Table.Tbody>
        </Table>
      )}
    </Stack>
  );
}

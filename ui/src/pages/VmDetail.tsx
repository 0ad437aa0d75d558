import { Anchor, Badge, Button, Card, Group, SimpleGrid, Stack, Table, Tabs, Text, Title } from '@mantine/core';
import { lazy, Suspense, useState } from 'react';
import { paths } from '../api/paths';
import type { K8sObject } from '../api/types';
import { ErrorBanner, Loading, StatusBadge } from '../components/Common';
import { useLiveList } from '../hooks';
import { firmwareLabel, formatAge, printableStatus, tpmMode } from '../model/summary';
import { href, navigate } from '../router';
import { VmActions } from './VmList';
import { CloneVm } from '../components/CloneVm';
import { MigrateVm } from '../components/MigrateVm';
import { Snapshots } from '../components/Snapshots';
import { Trust } from '../components/Trust';
import { Exports } from '../components/Exports';

const SerialConsole = lazy(() => import('../components/SerialConsole'));
const VncConsole = lazy(() => import('../components/VncConsole'));

function Field({ label, children }: { label: string; children: React.ReactNode }) {
  return (
    <div>
      <Text size="xs" c="dimmed">{label}</Text>
      <Text size="sm" component="div">{children}</Text>
    </div>
  );
}

export function VmDetail({ namespace, name }: { namespace: string; name: string }) {
  // Watch the namespace's lists and pick the VM (no field-selector support needed from the server).
  const vms = useLiveList(paths.vms(namespace));
  const vmis = useLiveList(paths.vmis(namespace));
  const events = useLiveList(paths.events(namespace, name));
  const pvcs = useLiveList(paths.statePvcs(namespace, name));
  const [actionError, setActionError] = useState<Error | null>(null);
  const vm = vms.items.find((v) => v.metadata?.name === name);
  const vmi = vmis.items.find((v) => v.metadata?.name === name);
  if (!vm) {
    if (vms.loaded) return <Text>Virtual machine {namespace}/{name} not found. <Anchor href={href('vms')}>Back to the list</Anchor></Text>;
    return vms.error ? <ErrorBanner error={vms.error} /> : <Loading />;
  }
  const status = printableStatus(vm);
  const conditions: any[] = [...(vm.status?.conditions ?? []), ...(vmi?.status?.conditions ?? []).map((c: any) => ({ ...c, source: 'VMI' }))]; // eslint-disable-line @typescript-eslint/no-explicit-any
  const sortedEvents = [...events.items].sort((a, b) => String(b.lastTimestamp ?? b.metadata?.creationTimestamp ?? '').localeCompare(String(a.lastTimestamp ?? a.metadata?.creationTimestamp ?? '')));
  return (
    <Stack>
      <Group justify="space-between">
        <Group>
          <Title order={2}>{name}</Title>
          <StatusBadge status={status} />
        </Group>
        <Group>
          <Button variant="default" size="xs" onClick={() => navigate('vms', namespace, name, 'edit')}>Edit</Button>
          <CloneVm namespace={namespace} vm={name} onError={setActionError} />
          <MigrateVm namespace={namespace} vm={name} running={status === 'Running'} />
          <VmActions vm={vm} onError={setActionError} onDeleted={() => navigate('vms')} />
        </Group>
      </Group>
      <ErrorBanner error={actionError} title="Action failed" />
      <ErrorBanner error={vms.error} title="Watch interrupted (retrying)" />
      <Tabs defaultValue="overview" keepMounted={false}>
        <Tabs.List>
          <Tabs.Tab value="overview">Overview</Tabs.Tab>
          <Tabs.Tab value="events">Events ({events.items.length})</Tabs.Tab>
          <Tabs.Tab value="snapshots">Snapshots</Tabs.Tab>
          <Tabs.Tab value="trust">Trust</Tabs.Tab>
          <Tabs.Tab value="export">Export</Tabs.Tab>
          <Tabs.Tab value="vnc">Console</Tabs.Tab>
          <Tabs.Tab value="console">Serial console</Tabs.Tab>
        </Tabs.List>
        <Tabs.Panel value="overview" pt="md">
          <Stack>
            <Card withBorder>
              <SimpleGrid cols={4}>
                <Field label="Namespace">{namespace}</Field>
                <Field label="Status">{status}</Field>
                <Field label="TPM"><Badge variant="light">{tpmMode(vm)}</Badge></Field>
                <Field label="Firmware">{firmwareLabel(vm)}</Field>
                <Field label="Run strategy">{vm.spec?.runStrategy ?? (vm.spec?.running ? 'Always' : 'Halted')}</Field>
                <Field label="Node">{vmi?.status?.nodeName ?? '-'}</Field>
                <Field label="Firmware UUID">{vm.spec?.template?.spec?.domain?.firmware?.uuid ?? '-'}</Field>
                <Field label="Age">{formatAge(vm.metadata?.creationTimestamp)}</Field>
              </SimpleGrid>
            </Card>
            <Card withBorder>
              <Title order={4} mb="xs">Backend-storage volume (TPM / EFI persistent state)</Title>
              {pvcs.items.length === 0 ? (
                <Text size="sm" c="dimmed">
                  {tpmMode(vm) === 'persistent' || vm.spec?.template?.spec?.domain?.firmware?.bootloader?.efi?.persistent
                    ? 'Not created yet (it is created at the first start).'
                    : 'None: this VM has no persistent TPM or EFI state.'}
                </Text>
              ) : (
                <Table aria-label="Backend-storage volume">
                  <Table.Thead>
                    <Table.Tr><Table.Th>Name</Table.Th><Table.Th>Phase</Table.Th><Table.Th>Capacity</Table.Th><Table.Th>Storage class</Table.Th><Table.Th>Age</Table.Th></Table.Tr>
                  </Table.Thead>
                  <Table.Tbody>
                    {pvcs.items.map((p: K8sObject) => (
                      <Table.Tr key={p.metadata?.name}>
                        <Table.Td>{p.metadata?.name}</Table.Td>
                        <Table.Td>{p.status?.phase ?? '-'}</Table.Td>
                        <Table.Td>{p.status?.capacity?.storage ?? p.spec?.resources?.requests?.storage ?? '-'}</Table.Td>
                        <Table.Td>{p.spec?.storageClassName ?? '-'}</Table.Td>
                        <Table.Td>{formatAge(p.metadata?.creationTimestamp)}</Table.Td>
                      </Table.Tr>
                    ))}
                  </Table.Tbody>
                </Table>
              )}
            </Card>
            <Card withBorder>
              <Title order={4} mb="xs">Conditions</Title>
              {conditions.length === 0 ? <Text size="sm" c="dimmed">None</Text> : (
                <Table aria-label="Conditions">
                  <Table.Thead>
                    <Table.Tr><Table.Th>Type</Table.Th><Table.Th>Status</Table.Th><Table.Th>Reason</Table.Th><Table.Th>Message</Table.Th><Table.Th>Last transition</Table.Th></Table.Tr>
                  </Table.Thead>
                  <Table.Tbody>
                    {conditions.map((c, i) => (
                      <Table.Tr key={i}>
                        <Table.Td>{c.source ? `${c.type} (VMI)` : c.type}</Table.Td>
                        <Table.Td>{c.status}</Table.Td>
                        <Table.Td>{c.reason ?? ''}</Table.Td>
                        <Table.Td>{c.message ?? ''}</Table.Td>
                        <Table.Td>{formatAge(c.lastTransitionTime)}</Table.Td>
                      </Table.Tr>
                    ))}
                  </Table.Tbody>
                </Table>
              )}
            </Card>
          </Stack>
        </Tabs.Panel>
        <Tabs.Panel value="events" pt="md">
          <ErrorBanner error={events.error} title="Cannot load events" />
          <Table aria-label="Events">
            <Table.Thead>
              <Table.Tr><Table.Th>Type</Table.Th><Table.Th>Reason</Table.Th><Table.Th>Object</Table.Th><Table.Th>Message</Table.Th><Table.Th>Count</Table.Th><Table.Th>Age</Table.Th></Table.Tr>
            </Table.Thead>
            <Table.Tbody>
              {sortedEvents.map((e: any) => ( // eslint-disable-line @typescript-eslint/no-explicit-any
                <Table.Tr key={e.metadata?.name}>
                  <Table.Td><Badge color={e.type === 'Warning' ? 'orange' : 'gray'} variant="light">{e.type}</Badge></Table.Td>
                  <Table.Td>{e.reason}</Table.Td>
                  <Table.Td>{e.involvedObject?.kind}</Table.Td>
                  <Table.Td>{e.message}</Table.Td>
                  <Table.Td>{e.count ?? 1}</Table.Td>
                  <Table.Td>{formatAge(e.lastTimestamp ?? e.eventTime ?? e.metadata?.creationTimestamp)}</Table.Td>
                </Table.Tr>
              ))}
            </Table.Tbody>
          </Table>
        </Tabs.Panel>
        <Tabs.Panel value="snapshots" pt="md">
          <Snapshots namespace={namespace} vm={name} stopped={status === 'Stopped'} />
        </Tabs.Panel>
        <Tabs.Panel value="trust" pt="md">
          <Trust namespace={namespace} vm={name} stopped={status === 'Stopped'} />
        </Tabs.Panel>
        <Tabs.Panel value="export" pt="md">
          <Exports namespace={namespace} vm={name} />
        </Tabs.Panel>
        <Tabs.Panel value="vnc" pt="md">
          {status === 'Running' || vmi ? (
            vmi?.spec?.domain?.devices?.autoattachGraphicsDevice === false ? (
              <Text c="dimmed">This VM has no display (devices.autoattachGraphicsDevice is false): use the serial console.</Text>
            ) : (
              <Suspense fallback={<Loading />}>
                <VncConsole namespace={namespace} name={name} />
              </Suspense>
            )
          ) : (
            <Text c="dimmed">The VM is not running: start it to see its screen.</Text>
          )}
        </Tabs.Panel>
        <Tabs.Panel value="console" pt="md">
          {status === 'Running' || vmi ? (
            <Suspense fallback={<Loading />}>
              <SerialConsole namespace={namespace} name={name} />
            </Suspense>
          ) : (
            <Text c="dimmed">The VM is not running: start it to use the serial console.</Text>
          )}
        </Tabs.Panel>
      </Tabs>
    </Stack>
  );
}

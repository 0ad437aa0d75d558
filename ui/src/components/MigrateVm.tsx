/**
 * "Migrate to host..." on a running VM's page: pick a host this server knows (a labelled Secret
 * with its kubeconfig) or add one by pasting its kubeconfig, then follow the migration live. The
 * server does the rest (`migration.ferrovirt.io/prepare-destination`): it creates the receiving
 * VM there and moves memory, devices, the vTPM, disks and the VARS through the destination's API.
 */
import { Alert, Button, Code, Group, Modal, Progress, Select, Stack, Text, Textarea } from '@mantine/core';
import { useMemo, useState } from 'react';
import { ApiError, api } from '../api/client';
import { paths } from '../api/paths';
import type { K8sObject } from '../api/types';
import { useLiveList } from '../hooks';
import {
  DestinationError,
  destinationSecret,
  destinationServer,
  destinationsOf,
  migrationDone,
  migrationId,
  progressLine,
  sendingMigration,
} from '../model/migration';

const ADD = '__add__';

export function MigrateVm({ namespace, vm, running }: { namespace: string; vm: string; running: boolean }) {
  const [open, setOpen] = useState(false);
  return (
    <>
      <Button size="xs" variant="light" disabled={!running} onClick={() => setOpen(true)} aria-label={`Migrate ${vm} to another host`}>
        Migrate to host...
      </Button>
      {open && <MigrateDialog namespace={namespace} vm={vm} onClose={() => setOpen(false)} />}
    </>
  );
}

function MigrateDialog({ namespace, vm, onClose }: { namespace: string; vm: string; onClose: () => void }) {
  const secrets = useLiveList(paths.destinationSecrets(namespace));
  const destinations = useMemo(() => destinationsOf(secrets.items), [secrets.items]);
  const [choice, setChoice] = useState<string | null>(null);
  const [kubeconfig, setKubeconfig] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [migration, setMigration] = useState<string | null>(null);
  const vmims = useLiveList(migration ? paths.vmims(namespace) : null);
  const vmim: K8sObject | undefined = vmims.items.find((m) => m.metadata?.name === migration);
  const selected = choice ?? (destinations.length > 0 ? destinations[0].secret : ADD);
  const adding = selected === ADD;
  let pastedServer: string | null = null;
  let pasteProblem: string | null = null;
  if (adding && kubeconfig.trim()) {
    try {
      pastedServer = destinationServer(kubeconfig);
    } catch (e) {
      pasteProblem = e instanceof DestinationError ? e.message : String(e);
    }
  }

  const start = async () => {
    setBusy(true);
    setError(null);
    try {
      let secret: string;
      let server: string;
      if (adding) {
        if (!pastedServer) throw new DestinationError(pasteProblem ?? 'Paste the kubeconfig of the destination host first.');
        const object = destinationSecret(namespace, pastedServer, kubeconfig);
        secret = String(object.metadata?.name);
        server = pastedServer;
        try {
          await api.create(paths.secrets(namespace), object);
        } catch (e) {
          if (!(e instanceof ApiError && e.code === 409)) throw e;
          // The host is known already: its kubeconfig is replaced by the one pasted.
          const existing = await api.get(paths.secret(namespace, secret));
          await api.replace(paths.secret(namespace, secret), { ...object, metadata: { ...object.metadata, resourceVersion: existing.metadata?.resourceVersion } });
        }
      } else {
        const known = destinations.find((d) => d.secret === selected);
        if (!known) throw new DestinationError('Choose a host.');
        secret = known.secret;
        server = known.server;
      }
      const object = sendingMigration(namespace, vm, migrationId(vm), server, secret);
      await api.create(paths.vmims(namespace), object);
      setMigration(String(object.metadata?.name));
    } catch (e) {
      setError(e instanceof Error ? e.message : String(e));
    } finally {
      setBusy(false);
    }
  };

  const phase: string | undefined = vmim?.status?.phase;
  const done = migrationDone(vmim);
  return (
    <Modal opened onClose={onClose} title={`Migrate ${vm} to another host`} size="lg">
      <Stack>
        {!migration ? (
          <>
            <Text size="sm">
              The VM keeps running while its memory, devices, TPM, disks and UEFI variables are copied to the other ferrovirt host; it stops here
              only once it runs there. Its TPM state stays encrypted (each host with its own key), and nothing is lost if the migration fails: the
              VM goes on running here.
            </Text>
            <Select
              label="Destination host"
              value={selected}
              onChange={(v) => setChoice(v)}
              allowDeselect={false}
              data={[...destinations.map((d) => ({ value: d.secret, label: d.server })), { value: ADD, label: 'Add a host (paste its kubeconfig)...' }]}
            />
            {adding && (
              <Textarea
                label="Kubeconfig of the destination host"
                description="Its admin.kubeconfig, or one whose user may create VMs and VirtualMachineInstanceMigrations there. It is kept in a Secret of this namespace for the next migration."
                autosize
                minRows={6}
                maxRows={14}
                value={kubeconfig}
                onChange={(e) => setKubeconfig(e.currentTarget.value)}
                error={pasteProblem}
                styles={{ input: { fontFamily: 'monospace', fontSize: 12 } }}
              />
            )}
            {adding && pastedServer && (
              <Text size="sm">
                Destination: <Code>{pastedServer}</Code>
              </Text>
            )}
            {error && (
              <Alert color="red" title="Cannot start the migration">
                {error}
              </Alert>
            )}
            <Group justify="flex-end">
              <Button variant="default" onClick={onClose}>
                Cancel
              </Button>
              <Button loading={busy} disabled={adding && !pastedServer} onClick={start}>
                Migrate
              </Button>
            </Group>
          </>
        ) : (
          <>
            <Text size="sm">
              VirtualMachineInstanceMigration <Code>{migration}</Code>
            </Text>
            <Progress value={done ? 100 : phase === 'Running' ? 60 : 20} animated={!done} color={phase === 'Failed' ? 'red' : phase === 'Succeeded' ? 'green' : 'blue'} aria-label="Migration progress" />
            <Text size="sm" role="status" aria-label="Migration status">
              {progressLine(vmim)}
            </Text>
            {phase === 'Succeeded' && <Alert color="green">The VM runs on the destination host now. Its copy here is retired: the VM is deleted on this host once it has stopped, and its state generations are kept for the state retention.</Alert>}
            {phase === 'Failed' && <Text size="sm" c="dimmed">The Events tab of this VM (and of the VM on the destination) tells more.</Text>}
            <Group justify="flex-end">
              <Button variant={done ? 'filled' : 'default'} onClick={onClose}>
                {done ? 'Close' : 'Close (it goes on)'}
              </Button>
            </Group>
          </>
        )}
      </Stack>
    </Modal>
  );
}

/**
 * The Trust tab of a VM: encryption at rest on/off, the TPM's EK fingerprints with a PEM download,
 * and the UEFI variables, with the enrollment of Microsoft's 2023 Secure Boot certificates (VM
 * stopped; BitLocker warning first).
 */
import { Alert, Badge, Button, Card, Group, Modal, Stack, Table, Text } from '@mantine/core';
import { useCallback, useEffect, useState } from 'react';
import { api } from '../api/client';
import { paths } from '../api/paths';
import {
  BITLOCKER_WARNING,
  type EfiVariableList,
  type EkAnswer,
  attributeNames,
  ekPemBundle,
  encryptionLabel,
  fingerprint,
  sortVariables,
} from '../model/trust';
import { ErrorBanner } from './Common';

function download(name: string, text: string) {
  const url = URL.createObjectURL(new Blob([text], { type: 'application/x-pem-file' }));
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  a.click();
  URL.revokeObjectURL(url);
}

export function Trust({ namespace, vm, stopped }: { namespace: string; vm: string; stopped: boolean }) {
  const [ek, setEk] = useState<EkAnswer | null>(null);
  const [ekError, setEkError] = useState<Error | null>(null);
  const [vars, setVars] = useState<EfiVariableList | null>(null);
  const [varsError, setVarsError] = useState<Error | null>(null);
  const [confirm, setConfirm] = useState(false);
  const [busy, setBusy] = useState(false);
  const [result, setResult] = useState<string | null>(null);
  const [enrollError, setEnrollError] = useState<Error | null>(null);
  const load = useCallback(() => {
    api.getJson<EkAnswer>(paths.vmTpmEk(namespace, vm)).then(setEk, (e) => setEkError(e as Error));
    api.getJson<EfiVariableList>(paths.vmEfiVars(namespace, vm)).then(setVars, (e) => setVarsError(e as Error));
  }, [namespace, vm]);
  useEffect(load, [load]);
  const encryption = ek?.stateEncryption ?? vars?.stateEncryption;
  const enroll = async () => {
    setBusy(true);
    try {
      const answer = await api.putJson<{ message?: string }>(paths.vmEfiVars(namespace, vm), { enroll: 'microsoft-2023' });
      setResult(answer.message ?? 'enrolled');
      setEnrollError(null);
      setConfirm(false);
      load();
    } catch (e) {
      setEnrollError(e as Error);
    } finally {
      setBusy(false);
    }
  };
  return (
    <Stack>
      <Card withBorder>
        <Group>
          <Text fw={500}>Encryption at rest</Text>
          <Badge color={encryption?.encrypted ? 'green' : 'gray'} variant="light" data-testid="state-encryption">
            {encryptionLabel(encryption)}
          </Badge>
        </Group>
      </Card>
      <Card withBorder>
        <Stack gap="xs">
          <Group justify="space-between">
            <Text fw={500}>TPM endorsement key</Text>
            <Button size="xs" variant="light" disabled={!ek?.certificates?.length} onClick={() => ek && download(`${vm}-ek.pem`, ekPemBundle(ek))}>
              Download PEM
            </Button>
          </Group>
          <ErrorBanner error={ekError} title="No EK" />
          {(ek?.certificates ?? []).map((c) => (
            <Text key={c.sha256} size="sm" ff="monospace" data-testid={`ek-${c.type}`}>
              {c.type} SHA-256 {fingerprint(c.sha256)} {c.chainVerified ? '(verifies against the chain)' : ''}
            </Text>
          ))}
        </Stack>
      </Card>
      <Card withBorder>
        <Stack gap="xs">
          <Group justify="space-between">
            <Text fw={500}>UEFI variables</Text>
            <Button size="xs" disabled={!stopped} onClick={() => setConfirm(true)} title={stopped ? '' : 'Stop the VM first'}>
              Enroll Microsoft 2023 certificates
            </Button>
          </Group>
          <ErrorBanner error={varsError} title="No UEFI variables" />
          <ErrorBanner error={enrollError} title="Enrollment failed" />
          {result && <Alert color="yellow">{result}</Alert>}
          <Table striped>
            <Table.Thead>
              <Table.Tr>
                <Table.Th>Name</Table.Th>
                <Table.Th>GUID</Table.Th>
                <Table.Th>Attributes</Table.Th>
                <Table.Th>Size</Table.Th>
              </Table.Tr>
            </Table.Thead>
            <Table.Tbody>
              {sortVariables(vars?.items ?? []).map((v) => (
                <Table.Tr key={v.id}>
                  <Table.Td>{v.name}</Table.Td>
                  <Table.Td ff="monospace">{v.guid}</Table.Td>
                  <Table.Td>{attributeNames(v.attributes)}</Table.Td>
                  <Table.Td>{v.size} B</Table.Td>
                </Table.Tr>
              ))}
            </Table.Tbody>
          </Table>
        </Stack>
      </Card>
      <Modal opened={confirm} onClose={() => setConfirm(false)} title="Enroll Microsoft's 2023 Secure Boot certificates">
        <Stack>
          <Text size="sm">
            Adds the Microsoft Corporation KEK 2K CA 2023 to KEK and the Windows UEFI CA 2023, Microsoft UEFI CA 2023 and Microsoft Option ROM UEFI CA 2023 to db; the 2011 certificates stay. A state generation is kept first.
          </Text>
          <Alert color="red" title="Suspend BitLocker before the next start">{BITLOCKER_WARNING}</Alert>
          <Group justify="flex-end">
            <Button variant="default" onClick={() => setConfirm(false)}>Cancel</Button>
            <Button color="red" loading={busy} onClick={enroll}>Enroll</Button>
          </Group>
        </Stack>
      </Modal>
    </Stack>
  );
}

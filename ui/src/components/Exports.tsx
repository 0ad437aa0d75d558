/**
 * The Export tab of a VM: create a VirtualMachineExport (KubeVirt's API; a running VM waits until
 * it is stopped, as in KubeVirt), list this VM's exports with their phase, the reason they wait
 * and their expiry, download each volume with a progress bar (the export's own token in
 * `x-kubevirt-export-token`, read from its Secret; the API token does not open export URLs), and
 * delete an export.
 */
import { Badge, Button, Group, Progress, Select, Stack, Table, Text } from '@mantine/core';
import { useState } from 'react';
import { api } from '../api/client';
import { paths } from '../api/paths';
import type { K8sObject } from '../api/types';
import { useLiveList } from '../hooks';
import { TOKEN_HEADER, expiresIn, exportRow, exportsOf, newExport, type ExportLink } from '../model/exports';
import { formatBytes, timestampedName } from '../model/snapshots';
import { ConfirmButton, ErrorBanner, Loading } from './Common';

/** Downloads one file of an export with a progress bar, then hands it to the browser. */
function Download({ namespace, secret, link, onError }: { namespace: string; secret: string; link: ExportLink; onError: (e: Error | null) => void }) {
  const [received, setReceived] = useState<number | null>(null);
  const [total, setTotal] = useState<number | null>(null);
  const start = async () => {
    setReceived(0);
    try {
      const s = await api.get<K8sObject & { data?: { token?: string } }>(paths.secret(namespace, secret));
      const token = atob(s.data?.token ?? '');
      const res = await fetch(link.path, { headers: { [TOKEN_HEADER]: token }, credentials: 'omit' });
      if (!res.ok || !res.body) throw new Error(`the export answered ${res.status}: ${await res.text()}`);
      const length = Number(res.headers.get('content-length'));
      setTotal(Number.isFinite(length) && length > 0 ? length : null);
      const reader = res.body.getReader();
      const chunks: Uint8Array[] = [];
      let got = 0;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        chunks.push(value);
        got += value.length;
        setReceived(got);
      }
      const url = URL.createObjectURL(new Blob(chunks as BlobPart[]));
      const a = document.createElement('a');
      a.href = url;
      a.download = link.file;
      a.click();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
      onError(null);
    } catch (e) {
      onError(e as Error);
    } finally {
      setReceived(null);
      setTotal(null);
    }
  };
  return (
    <Group gap={6} wrap="nowrap">
      <Button size="xs" variant="light" loading={received !== null} onClick={start}>
        {link.volume} ({link.format})
      </Button>
      {received !== null && (
        <Stack gap={0} w={160}>
          <Progress value={total ? (received / total) * 100 : 100} animated={!total} size="sm" />
          <Text size="xs" c="dimmed">{formatBytes(received)}{total ? ` / ${formatBytes(total)}` : ''}</Text>
        </Stack>
      )}
    </Group>
  );
}

export function Exports({ namespace, vm }: { namespace: string; vm: string }) {
  const exports = useLiveList(paths.exports(namespace));
  const [error, setError] = useState<Error | null>(null);
  const [ttl, setTtl] = useState<string>('2h');
  const [creating, setCreating] = useState(false);
  const mine = exportsOf(exports.items, vm);
  const create = async () => {
    setCreating(true);
    try {
      await api.create(paths.exports(namespace), newExport(namespace, vm, timestampedName(`${vm}-export`), ttl));
      setError(null);
    } catch (e) {
      setError(e as Error);
    } finally {
      setCreating(false);
    }
  };
  return (
    <Stack>
      <Group justify="space-between">
        <Text size="sm" c="dimmed">
          An export serves the VM&apos;s volumes (its TPM state and UEFI variables in KubeVirt&apos;s layout) and the manifests another
          ferrovirt or a KubeVirt cluster imports. A running VM is exported once it is stopped (or export a snapshot of it).
        </Text>
        <Group gap={6} wrap="nowrap">
          <Select aria-label="Expires after" size="xs" w={110} data={['30m', '2h', '12h', '24h']} value={ttl} onChange={(v) => setTtl(v ?? '2h')} />
          <Button size="xs" loading={creating} onClick={create}>Export</Button>
        </Group>
      </Group>
      <ErrorBanner error={error} title="Export action failed" />
      <ErrorBanner error={exports.error} title="Cannot load exports" />
      {!exports.loaded && !exports.error ? <Loading /> : mine.length === 0 ? (
        <Text size="sm" c="dimmed">No exports of this VM.</Text>
      ) : (
        <Table aria-label="Exports">
          <Table.Thead>
            <Table.Tr><Table.Th>Name</Table.Th><Table.Th>Phase</Table.Th><Table.Th>Expires</Table.Th><Table.Th>Download</Table.Th><Table.Th /></Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {mine.map((e: K8sObject) => {
              const row = exportRow(e);
              return (
                <Table.Tr key={row.name}>
                  <Table.Td>{row.name}</Table.Td>
                  <Table.Td>
                    <Badge variant="light" color={row.phase === 'Ready' ? 'teal' : 'gray'}>{row.phase}</Badge>
                    {row.message && <Text size="xs" c="dimmed">{row.message}</Text>}
                  </Table.Td>
                  <Table.Td>{expiresIn(row.expires)}</Table.Td>
                  <Table.Td>
                    <Stack gap={4}>
                      {row.phase === 'Ready' && row.tokenSecret
                        ? row.links.map((l) => <Download key={l.path} namespace={namespace} secret={row.tokenSecret ?? ''} link={l} onError={setError} />)
                        : '-'}
                    </Stack>
                  </Table.Td>
                  <Table.Td>
                    <ConfirmButton
                      label="Delete"
                      title={`Delete export ${row.name}?`}
                      body="Its URLs stop answering; the VM and its state are not touched."
                      onConfirm={async () => {
                        try {
                          await api.delete(paths.export(namespace, row.name));
                          setError(null);
                        } catch (err) {
                          setError(err as Error);
                        }
                      }}
                    />
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

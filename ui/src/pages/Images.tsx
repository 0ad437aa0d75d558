/** The "Images" page: CDI DataVolumes with phase and progress, import from a URL, upload a file. */
import { Badge, Button, Card, FileInput, Group, Progress, Stack, Table, Text, TextInput, Title } from '@mantine/core';
import { useState } from 'react';
import { api } from '../api/client';
import { collectionPath, objectPath } from '../api/paths';
import type { K8sObject } from '../api/types';
import { ConfirmButton, ErrorBanner, Loading } from '../components/Common';
import { useLiveList } from '../hooks';
import { CDI, UPLOAD, UPLOAD_PATH, httpDataVolume, imageRow, sizeForFile, uploadDataVolume, uploadTokenRequest } from '../model/images';
import { nameError } from '../model/names';

const dataVolumes = (ns?: string) => collectionPath(CDI, 'datavolumes', ns);

/** Waits until the DataVolume reaches `phase` (or fails). */
async function waitPhase(ns: string, name: string, phase: string): Promise<K8sObject> {
  for (let i = 0; i < 600; i += 1) {
    const dv = await api.get(objectPath(CDI, 'datavolumes', ns, name));
    if (dv.status?.phase === phase || dv.status?.phase === 'Failed') return dv;
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`DataVolume ${name} did not become ${phase}`);
}

/** POSTs the file to the upload path with the upload token, reporting the bytes sent. */
function sendFile(file: File, token: string, onProgress: (percent: number) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', UPLOAD_PATH);
    xhr.setRequestHeader('Authorization', `Bearer ${token}`);
    xhr.setRequestHeader('Content-Type', 'application/octet-stream');
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress((e.loaded * 100) / e.total);
    xhr.onload = () => (xhr.status >= 200 && xhr.status < 300 ? resolve() : reject(new Error(`upload refused (${xhr.status}): ${xhr.responseText}`)));
    xhr.onerror = () => reject(new Error('the upload was interrupted'));
    xhr.send(file);
  });
}

function ImportForm() {
  const [ns, setNs] = useState('default');
  const [name, setName] = useState('');
  const [url, setUrl] = useState('');
  const [size, setSize] = useState('10Gi');
  const [checksum, setChecksum] = useState('');
  const [error, setError] = useState<Error | null>(null);
  return (
    <Card withBorder>
      <Stack>
        <Title order={4}>Import from a URL</Title>
        <ErrorBanner error={error} />
        <Group grow>
          <TextInput label="Namespace" value={ns} onChange={(e) => setNs(e.currentTarget.value)} />
          <TextInput label="Name" value={name} onChange={(e) => setName(e.currentTarget.value)} error={name ? nameError(name) : undefined} />
          <TextInput label="Size" value={size} onChange={(e) => setSize(e.currentTarget.value)} />
        </Group>
        <TextInput label="URL (raw, qcow2, vmdk, vhdx, ISO; .gz or .xz)" value={url} onChange={(e) => setUrl(e.currentTarget.value)} />
        <TextInput label="Checksum (optional, e.g. sha256:...)" value={checksum} onChange={(e) => setChecksum(e.currentTarget.value)} />
        <Group justify="flex-end">
          <Button
            disabled={!!nameError(name) || !url}
            onClick={async () => {
              setError(null);
              try {
                await api.create(dataVolumes(ns), httpDataVolume(ns, name, url, size, checksum || undefined));
                setName('');
                setUrl('');
              } catch (e) {
                setError(e as Error);
              }
            }}
          >
            Import
          </Button>
        </Group>
      </Stack>
    </Card>
  );
}

function UploadForm() {
  const [ns, setNs] = useState('default');
  const [name, setName] = useState('');
  const [file, setFile] = useState<File | null>(null);
  const [percent, setPercent] = useState<number | null>(null);
  const [stage, setStage] = useState('');
  const [error, setError] = useState<Error | null>(null);
  return (
    <Card withBorder>
      <Stack>
        <Title order={4}>Upload a file</Title>
        <ErrorBanner error={error} />
        <Group grow>
          <TextInput label="Namespace" value={ns} onChange={(e) => setNs(e.currentTarget.value)} />
          <TextInput label="Name" value={name} onChange={(e) => setName(e.currentTarget.value)} error={name ? nameError(name) : undefined} />
        </Group>
        <FileInput label="Image file" value={file} onChange={setFile} placeholder="disk.qcow2, installer.iso, ..." />
        {percent !== null ? <Progress value={percent} aria-label="upload progress" /> : null}
        {stage ? <Text size="sm" role="status">{stage}</Text> : null}
        <Group justify="flex-end">
          <Button
            disabled={!!nameError(name) || !file || percent !== null}
            onClick={async () => {
              if (!file) return;
              setError(null);
              try {
                setStage('Creating the DataVolume...');
                await api.create(dataVolumes(ns), uploadDataVolume(ns, name, sizeForFile(file.size)));
                const ready = await waitPhase(ns, name, 'UploadReady');
                if (ready.status?.phase === 'Failed') throw new Error('the DataVolume failed');
                const answer = await api.create(collectionPath(UPLOAD, 'uploadtokenrequests', ns), uploadTokenRequest(ns, name));
                setStage('Uploading...');
                setPercent(0);
                await sendFile(file, answer.status?.token ?? '', setPercent);
                setStage('Checking and publishing the image...');
                const done = await waitPhase(ns, name, 'Succeeded');
                setStage(done.status?.phase === 'Succeeded' ? `Uploaded ${file.name}` : 'Processing the upload failed');
              } catch (e) {
                setError(e as Error);
                setStage('');
              }
              setPercent(null);
            }}
          >
            Upload
          </Button>
        </Group>
      </Stack>
    </Card>
  );
}

export function Images() {
  const { items, error, loaded } = useLiveList<K8sObject>(dataVolumes());
  return (
    <Stack>
      <Title order={2}>Images</Title>
      <Text size="sm" c="dimmed">
        CDI DataVolumes: a VM uses one as a disk through a dataVolume volume.
      </Text>
      <ErrorBanner error={error} />
      {!loaded ? (
        <Loading />
      ) : (
        <Table striped aria-label="images">
          <Table.Thead>
            <Table.Tr>
              <Table.Th>Name</Table.Th>
              <Table.Th>Namespace</Table.Th>
              <Table.Th>Phase</Table.Th>
              <Table.Th>Progress</Table.Th>
              <Table.Th>Size</Table.Th>
              <Table.Th>Source</Table.Th>
              <Table.Th />
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {items.map(imageRow).map((row) => (
              <Table.Tr key={`${row.namespace}/${row.name}`}>
                <Table.Td>{row.name}</Table.Td>
                <Table.Td>{row.namespace}</Table.Td>
                <Table.Td>
                  <Badge color={row.phase === 'Succeeded' ? 'green' : row.phase === 'Failed' ? 'red' : 'blue'}>{row.phase}</Badge>
                  {row.message ? <Text size="xs" c="red">{row.message}</Text> : null}
                </Table.Td>
                <Table.Td miw={120}>
                  {row.progress !== null ? <Progress value={row.progress} aria-label={`${row.name} progress`} /> : 'N/A'}
                </Table.Td>
                <Table.Td>{row.size}</Table.Td>
                <Table.Td>{row.source}</Table.Td>
                <Table.Td>
                  <ConfirmButton label="Delete" title={`Delete image ${row.name}?`} body="Its PVC and disk image are deleted with it." onConfirm={() => api.delete(objectPath(CDI, 'datavolumes', row.namespace, row.name))} />
                </Table.Td>
              </Table.Tr>
            ))}
          </Table.Tbody>
        </Table>
      )}
      <ImportForm />
      <UploadForm />
    </Stack>
  );
}

/** "Clone" in a VM's menu: a VirtualMachineClone with the TPM / UEFI identity choices. */
import { Button, Group, Modal, Radio, Stack, Text, TextInput } from '@mantine/core';
import { useState } from 'react';
import { api } from '../api/client';
import { paths } from '../api/paths';
import { type EfiPolicy, newClone, type TpmPolicy, timestampedName } from '../model/snapshots';

export function CloneVm({ namespace, vm, onError }: { namespace: string; vm: string; onError: (e: Error | null) => void }) {
  const [open, setOpen] = useState(false);
  const [target, setTarget] = useState(`${vm}-clone`);
  const [tpm, setTpm] = useState<TpmPolicy>('copy');
  const [efi, setEfi] = useState<EfiPolicy>('copy');
  const [busy, setBusy] = useState(false);
  return (
    <>
      <Button size="xs" variant="light" onClick={() => setOpen(true)} aria-label={`Clone ${vm}`}>Clone</Button>
      <Modal opened={open} onClose={() => setOpen(false)} title={`Clone ${vm}`}>
        <Stack>
          <TextInput label="New VM name" value={target} onChange={(e) => setTarget(e.currentTarget.value)} />
          <Radio.Group label="TPM" value={tpm} onChange={(v) => setTpm(v as TpmPolicy)}>
            <Stack gap={4} mt={4}>
              <Radio value="copy" label="Copy: the same TPM contents, so secrets sealed to it (BitLocker) unlock on the clone" />
              <Radio value="fresh" label="Fresh: a new TPM with its own EK certificate, for golden images" />
            </Stack>
          </Radio.Group>
          <Radio.Group label="UEFI variables" value={efi} onChange={(v) => setEfi(v as EfiPolicy)}>
            <Stack gap={4} mt={4}>
              <Radio value="copy" label="Copy: the same boot entries and Secure Boot keys" />
              <Radio value="reset" label="Reset: the firmware's defaults, as a new VM starts" />
            </Stack>
          </Radio.Group>
          <Text size="sm" c="dimmed">The clone always gets a new firmware UUID, SMBIOS serial and MAC addresses.</Text>
          <Group justify="flex-end">
            <Button variant="default" onClick={() => setOpen(false)}>Cancel</Button>
            <Button
              loading={busy}
              onClick={async () => {
                setBusy(true);
                try {
                  await api.create(paths.clones(namespace), newClone(namespace, vm, target, tpm, efi, timestampedName(`${target}-clone`)));
                  onError(null);
                  setOpen(false);
                } catch (e) {
                  onError(e as Error);
                } finally {
                  setBusy(false);
                }
              }}
            >
              Clone
            </Button>
          </Group>
        </Stack>
      </Modal>
    </>
  );
}

/**
 * The VM form (also used for template versions). Pure view over `VmFormValues`; every change
 * calls `onChange` with the new values, which the editor applies in place to the YAML document.
 */
import { Badge, Button, Checkbox, Fieldset, Group, NumberInput, Radio, Select, Stack, Text, Textarea, TextInput } from '@mantine/core';
import { paths } from '../api/paths';
import type { K8sObject } from '../api/types';
import { useGet, useLiveList } from '../hooks';
import { collectionPath } from '../api/paths';
import { CDI } from '../model/images';
import type { FieldKey } from '../model/causes';
import { OS_CHOICES, preferredFirmware, preferredTpm, summarizePreference } from '../model/preferences';
import { freshDiskName, nameError, type DiskEntry, type DiskKind, type VmFormValues } from '../model/vmForm';

export type FieldErrors = Partial<Record<FieldKey, string[]>>;

const err = (errors: FieldErrors, key: FieldKey, extra?: string | null) => {
  const all = [...(extra ? [extra] : []), ...(errors[key] ?? [])];
  return all.length ? all.join('; ') : undefined;
};

const KIND_LABELS: Record<DiskKind, string> = {
  hostDisk: 'Host disk image',
  emptyDisk: 'Empty disk',
  cloudInit: 'Cloud-init user data',
  dataVolume: 'Image (DataVolume)',
  other: 'Other',
};

export function VmForm(props: {
  values: VmFormValues;
  onChange: (v: VmFormValues) => void;
  errors: FieldErrors;
  identity: boolean;
  /** Editing an existing object: name and namespace cannot change. */
  lockIdentity?: boolean;
  disabled?: boolean;
}) {
  const { values: v, onChange, errors, disabled } = props;
  const set = (patch: Partial<VmFormValues>) => onChange({ ...v, ...patch });
  // The chosen OS's cluster preference, to show what it brings (the VM keeps only the reference).
  const preference = useGet<K8sObject>(v.preference ? paths.clusterPreference(v.preference) : null);
  const prefSpec = v.preference && preference.data?.metadata?.name === v.preference ? (preference.data as { spec?: unknown }).spec : undefined;
  const brings = prefSpec ? summarizePreference(prefSpec) : [];
  const prefFirmware = !v.firmwareSet && prefSpec ? preferredFirmware(prefSpec) : null;
  const prefTpm = !v.tpmEnabled && prefSpec ? preferredTpm(prefSpec) : null;
  const osKnown = OS_CHOICES.some((c) => c.preference === v.preference);
  // The images (DataVolumes) of the VM's namespace a disk can be.
  const images = useLiveList<K8sObject>(collectionPath(CDI, 'datavolumes', v.namespace || 'default'));
  const imageNames = images.items.map((dv) => dv.metadata?.name ?? '').filter(Boolean);
  const setDisk = (i: number, patch: Partial<DiskEntry>) => set({ disks: v.disks.map((d, j) => (j === i ? { ...d, ...patch } : d)) });
  const addDisk = (kind: DiskKind) =>
    set({
      disks: [
        ...v.disks,
        {
          name: freshDiskName(v.disks.map((d) => d.name), kind), kind, path: '', capacity: kind === 'emptyDisk' ? '1Gi' : '',
          userData: kind === 'cloudInit' ? '#cloud-config\n' : '', otherSource: '',
        },
      ],
    });

  return (
    <Stack gap="md">
      {props.identity ? (
        <Group grow align="flex-start">
          <TextInput label="Name" required disabled={disabled || props.lockIdentity} value={v.name} onChange={(e) => set({ name: e.currentTarget.value })} error={err(errors, 'name', props.lockIdentity ? null : v.name ? nameError(v.name) : null)} />
          <TextInput label="Namespace" disabled={disabled || props.lockIdentity} value={v.namespace} onChange={(e) => set({ namespace: e.currentTarget.value })} error={err(errors, 'namespace')} />
        </Group>
      ) : null}
      <Fieldset legend="Guest OS">
        <Stack gap="xs">
          <Select
            label="Operating system"
            description="Sets spec.preference to KubeVirt's cluster preference for the OS; it fills what the VM leaves unset"
            disabled={disabled}
            allowDeselect={false}
            data={[
              ...OS_CHOICES.map((c) => ({ value: c.preference || 'none', label: c.label })),
              ...(osKnown ? [] : [{ value: v.preference, label: v.preference }]),
            ]}
            value={v.preference || 'none'}
            onChange={(x) => set({ preference: !x || x === 'none' ? '' : x })}
          />
          {v.preference ? (
            <Group gap="xs" aria-label="What the preference brings" data-testid="preference-brings">
              {brings.length ? (
                brings.map((b) => (
                  <Badge key={b} variant="light">
                    {b}
                  </Badge>
                ))
              ) : (
                <Text size="sm" c="dimmed">
                  {preference.error ? `Preference ${v.preference}: ${preference.error.message}` : `Reading preference ${v.preference}...`}
                </Text>
              )}
            </Group>
          ) : null}
        </Stack>
      </Fieldset>

      <Group grow align="flex-start">
        <NumberInput label="CPU cores" min={1} max={512} disabled={disabled} value={v.cpuCores} onChange={(x) => set({ cpuCores: x === '' ? '' : Number(x) })} error={err(errors, 'cpuCores')} />
        <TextInput label="Memory" description="e.g. 2Gi" disabled={disabled} value={v.memory} onChange={(e) => set({ memory: e.currentTarget.value })} error={err(errors, 'memory')} />
        <Select
          label="Run strategy"
          disabled={disabled}
          data={['Halted', 'Always', 'Manual', 'RerunOnFailure', 'Once']}
          value={v.runStrategy || null}
          onChange={(x) => set({ runStrategy: (x ?? '') as VmFormValues['runStrategy'] })}
          error={err(errors, 'runStrategy')}
        />
      </Group>

      <Fieldset legend="Firmware">
        {prefFirmware ? (
          <Text size="sm" mb="xs" data-testid="firmware-from-preference">
            From the {v.preference} preference: {prefFirmware.efi ? ['EFI', prefFirmware.secureBoot ? 'Secure Boot' : null, prefFirmware.persistent ? 'persistent EFI variables' : null].filter(Boolean).join(', ') : 'BIOS'}. Choosing here overrides it.
          </Text>
        ) : null}
        <Radio.Group value={prefFirmware ? null : v.firmware} onChange={(x) => set({ firmware: x as VmFormValues['firmware'], firmwareSet: true, secureBoot: x === 'efi' ? true : v.secureBoot })} error={err(errors, 'firmware')} aria-label="Firmware">
          <Group>
            <Radio value="bios" label="BIOS" disabled={disabled} />
            <Radio value="efi" label="EFI" disabled={disabled} />
          </Group>
        </Radio.Group>
        {v.firmware === 'efi' ? (
          <Stack gap="xs" mt="sm">
            <Checkbox label="Secure Boot" description="Requires SMM: turning it on also enables domain.features.smm" disabled={disabled} checked={v.secureBoot} onChange={(e) => set({ secureBoot: e.currentTarget.checked })} error={err(errors, 'secureBoot')} aria-invalid={!!errors['secureBoot']} />
            <Checkbox label="EFI persistent state" description="Keep the UEFI variables (VARS) in the VM's backend-storage volume" disabled={disabled} checked={v.efiPersistent} onChange={(e) => set({ efiPersistent: e.currentTarget.checked })} error={err(errors, 'efiPersistent')} aria-invalid={!!errors['efiPersistent']} />
          </Stack>
        ) : null}
      </Fieldset>

      <Fieldset legend="TPM">
        <Stack gap="xs">
          {prefTpm ? (
            <Text size="sm" data-testid="tpm-from-preference">
              From the {v.preference} preference: {prefTpm.persistent ? 'a TPM with persistent state' : 'a TPM'}. Enabling it here overrides it.
            </Text>
          ) : null}
          <Checkbox label="Enable TPM" description="An emulated TPM 2.0 (swtpm)" disabled={disabled} checked={v.tpmEnabled} onChange={(e) => set({ tpmEnabled: e.currentTarget.checked, tpmPersistent: e.currentTarget.checked ? v.tpmPersistent : false })} error={err(errors, 'tpmEnabled')} aria-invalid={!!errors['tpmEnabled']} />
          {v.tpmEnabled ? (
            <Checkbox label="TPM persistent state" description="Keep TPM keys and NV data across stop/start (needed for BitLocker / LUKS sealed keys)" disabled={disabled} checked={v.tpmPersistent} onChange={(e) => set({ tpmPersistent: e.currentTarget.checked })} error={err(errors, 'tpmPersistent')} aria-invalid={!!errors['tpmPersistent']} ml="lg" />
          ) : null}
        </Stack>
      </Fieldset>

      <Fieldset legend="CD-ROM (installer ISO)">
        <Stack gap="xs">
          <Checkbox
            label="Attach an ISO as a CD-ROM"
            description="A read-only SATA CD-ROM drive, e.g. a Windows or Linux installer"
            disabled={disabled}
            checked={v.cdrom !== null}
            onChange={(e) =>
              set(
                e.currentTarget.checked
                  ? { cdrom: { name: freshDiskName([...v.disks.map((d) => d.name), 'disk-0'], 'hostDisk').replace('disk', 'cdrom'), source: 'hostDisk', path: '', claimName: '' }, bootFrom: 'cdrom' }
                  : { cdrom: null, bootFrom: '' },
              )
            }
          />
          {v.cdrom ? (
            <Group align="flex-start" grow>
              <Select
                label="ISO source"
                disabled={disabled}
                allowDeselect={false}
                data={[{ value: 'hostDisk', label: 'Image file on the host' }, { value: 'pvc', label: 'PersistentVolumeClaim' }]}
                value={v.cdrom.source}
                onChange={(x) => x && v.cdrom && set({ cdrom: { ...v.cdrom, source: x as 'hostDisk' | 'pvc' } })}
              />
              {v.cdrom.source === 'hostDisk' ? (
                <TextInput label="ISO path on the host" placeholder="/var/lib/ferrovirt/images/install.iso" disabled={disabled} value={v.cdrom.path} onChange={(e) => v.cdrom && set({ cdrom: { ...v.cdrom, path: e.currentTarget.value } })} />
              ) : (
                <TextInput label="PVC name" placeholder="win11-iso" disabled={disabled} value={v.cdrom.claimName} onChange={(e) => v.cdrom && set({ cdrom: { ...v.cdrom, claimName: e.currentTarget.value } })} />
              )}
            </Group>
          ) : null}
          <Select
            label="Boot order"
            disabled={disabled}
            data={[{ value: 'cdrom', label: 'CD-ROM first' }, { value: 'disk', label: 'Disk first' }, { value: 'none', label: 'Not set' }]}
            value={v.bootFrom || 'none'}
            allowDeselect={false}
            onChange={(x) => set({ bootFrom: x === 'cdrom' || x === 'disk' ? x : '' })}
          />
        </Stack>
      </Fieldset>

      <Fieldset legend="Disks">
        <Stack gap="sm">
          {v.disks.length === 0 ? <Text size="sm" c="dimmed">No disks.</Text> : null}
          {v.disks.map((d, i) => (
            <Stack key={i} gap={4} p="xs" style={{ border: '1px solid var(--mantine-color-gray-3)', borderRadius: 4 }} data-testid={`disk-${i}`}>
              <Group align="flex-start" grow>
                <TextInput label="Disk name" disabled={disabled} value={d.name} onChange={(e) => setDisk(i, { name: e.currentTarget.value })} error={err(errors, `disks.${i}`)} />
                {d.kind === 'other' ? (
                  <TextInput label="Source" disabled value={`${d.otherSource} (edit in YAML)`} readOnly />
                ) : (
                  <Select
                    label="Type"
                    disabled={disabled}
                    allowDeselect={false}
                    data={(['hostDisk', 'dataVolume', 'emptyDisk', 'cloudInit'] as const).map((k) => ({ value: k, label: KIND_LABELS[k] }))}
                    value={d.kind}
                    onChange={(x) => x && setDisk(i, { kind: x as DiskKind })}
                  />
                )}
              </Group>
              {d.kind === 'hostDisk' ? <TextInput label="Image path on the host" placeholder="/var/lib/ferrovirt/images/disk.qcow2" disabled={disabled} value={d.path} onChange={(e) => setDisk(i, { path: e.currentTarget.value })} /> : null}
              {d.kind === 'dataVolume' ? <Select label="Image" searchable placeholder="an image from the Images page" disabled={disabled} data={imageNames.includes(d.path) || !d.path ? imageNames : [...imageNames, d.path]} value={d.path || null} onChange={(x) => setDisk(i, { path: x ?? '' })} /> : null}
              {d.kind === 'emptyDisk' ? <TextInput label="Capacity" placeholder="10Gi" disabled={disabled} value={d.capacity} onChange={(e) => setDisk(i, { capacity: e.currentTarget.value })} /> : null}
              {d.kind === 'cloudInit' ? <Textarea label="User data" autosize minRows={3} styles={{ input: { fontFamily: 'monospace' } }} disabled={disabled} value={d.userData} onChange={(e) => setDisk(i, { userData: e.currentTarget.value })} /> : null}
              <Group justify="flex-end">
                <Button size="xs" variant="subtle" color="red" disabled={disabled} onClick={() => set({ disks: v.disks.filter((_, j) => j !== i) })}>Remove disk {d.name}</Button>
              </Group>
            </Stack>
          ))}
          <Group>
            <Button size="xs" variant="light" disabled={disabled} onClick={() => addDisk('hostDisk')}>Add host disk image</Button>
            <Button size="xs" variant="light" disabled={disabled} onClick={() => addDisk('dataVolume')}>Add image</Button>
            <Button size="xs" variant="light" disabled={disabled} onClick={() => addDisk('emptyDisk')}>Add empty disk</Button>
            <Button size="xs" variant="light" disabled={disabled} onClick={() => addDisk('cloudInit')}>Add cloud-init</Button>
          </Group>
        </Stack>
      </Fieldset>
    </Stack>
  );
}

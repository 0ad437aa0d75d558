import { Alert, Button, Card, Group, Select, Stack, Switch, Text, Title } from '@mantine/core';
import { useEffect, useState } from 'react';
import { api } from '../api/client';
import { paths } from '../api/paths';
import { ErrorBanner, Loading } from '../components/Common';
import { useGet, useLiveList } from '../hooks';
import { featureGates, settingsPatch } from '../model/settings';

export function Settings() {
  const kv = useGet(paths.kubevirt());
  const classes = useLiveList(paths.storageClasses());
  const [gateOn, setGateOn] = useState(false);
  const [storageClass, setStorageClass] = useState<string | null>(null);
  const [error, setError] = useState<Error | null>(null);
  const [saved, setSaved] = useState(false);
  useEffect(() => {
    if (!kv.data) return;
    setGateOn(featureGates(kv.data).includes('VMPersistentState'));
    setStorageClass(kv.data.spec?.configuration?.vmStateStorageClass || null);
  }, [kv.data]);
  if (kv.error) return <ErrorBanner error={kv.error} title="Cannot load the KubeVirt configuration" />;
  if (!kv.data) return <Loading />;
  const defaultClass = classes.items.find((c) => c.metadata?.annotations?.['storageclass.kubevirt.io/is-default-virt-class'] === 'true' || c.metadata?.annotations?.['storageclass.kubernetes.io/is-default-class'] === 'true');
  return (
    <Stack maw={640}>
      <Title order={2}>Settings</Title>
      <ErrorBanner error={error} title="Not saved" />
      {saved ? <Alert color="green" role="status">Saved.</Alert> : null}
      <Card withBorder>
        <Stack>
          <Title order={4}>Persistent VM state</Title>
          <Switch
            label="VMPersistentState feature gate"
            description="Allows persistent TPM (tpm.persistent) and EFI (efi.persistent) state in a per-VM backend-storage volume"
            checked={gateOn}
            onChange={(e) => (setGateOn(e.currentTarget.checked), setSaved(false))}
          />
          <Select
            label="VM state storage class"
            description={`Storage class for backend-storage volumes (vmStateStorageClass). Empty: the default class${defaultClass ? ` (${defaultClass.metadata?.name})` : ''}.`}
            placeholder="Default storage class"
            clearable
            data={classes.items.map((c) => c.metadata?.name ?? '')}
            value={storageClass}
            onChange={(v) => (setStorageClass(v), setSaved(false))}
          />
          <ErrorBanner error={classes.error} title="Cannot list storage classes" />
          {!gateOn ? <Text size="sm" c="orange">With the gate off, VMs asking for persistent TPM or EFI state are rejected.</Text> : null}
          <Group>
            <Button
              onClick={async () => {
                try {
                  await api.mergePatch(paths.kubevirt(), settingsPatch(kv.data!, gateOn, storageClass));
                  setError(null);
                  setSaved(true);
                  kv.reload();
                } catch (e) {
                  setError(e as Error);
                }
              }}
            >
              Save
            </Button>
          </Group>
        </Stack>
      </Card>
    </Stack>
  );
}

import { Alert, Badge, Button, Center, Group, Loader, Modal, Text } from '@mantine/core';
import { useState, type ReactNode } from 'react';
import { ApiError } from '../api/client';

export function Loading() {
  return (
    <Center p="xl">
      <Loader />
    </Center>
  );
}

export function ErrorBanner({ error, title = 'Error' }: { error: Error | null | undefined; title?: string }) {
  if (!error) return null;
  const causes = error instanceof ApiError ? (error.status.details?.causes ?? []) : [];
  return (
    <Alert color="red" title={title} role="alert" mb="sm">
      <Text size="sm">{error.message}</Text>
      {causes.map((c, i) => (
        <Text size="sm" key={i}>
          {c.field ? <code>{c.field}</code> : null} {c.message}
        </Text>
      ))}
    </Alert>
  );
}

const STATUS_COLORS: Record<string, string> = {
  Running: 'green', Stopped: 'gray', Starting: 'blue', Stopping: 'orange', Provisioning: 'blue',
  Migrating: 'violet', Paused: 'yellow', ErrorUnschedulable: 'red', CrashLoopBackOff: 'red', Terminating: 'orange',
};

export function StatusBadge({ status }: { status: string }) {
  return <Badge color={STATUS_COLORS[status] ?? 'gray'} variant="light">{status}</Badge>;
}

/** A button that asks first (for delete / stop). */
export function ConfirmButton(props: {
  label: string; title: string; body: ReactNode; onConfirm: () => Promise<unknown> | void; color?: string; size?: string;
  disabled?: boolean;
}) {
  const [open, setOpen] = useState(false);
  const [busy, setBusy] = useState(false);
  return (
    <>
      <Button size={props.size ?? 'xs'} color={props.color ?? 'red'} variant="light" disabled={props.disabled} onClick={() => setOpen(true)}>
        {props.label}
      </Button>
      <Modal opened={open} onClose={() => setOpen(false)} title={props.title}>
        <Text size="sm">{props.body}</Text>
        <Group justify="flex-end" mt="md">
          <Button variant="default" onClick={() => setOpen(false)}>Cancel</Button>
          <Button
            color={props.color ?? 'red'}
            loading={busy}
            onClick={async () => {
              setBusy(true);
              try {
                await props.onConfirm();
              } finally {
                setBusy(false);
                setOpen(false);
              }
            }}
          >
            {props.label}
          </Button>
        </Group>
      </Modal>
    </>
  );
}

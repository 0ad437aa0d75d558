import { AppShell, Group, NavLink, Title, Text } from '@mantine/core';
import { lazy, Suspense } from 'react';
import { href, useHashPath } from './router';
import { VmList } from './pages/VmList';
import { VmDetail } from './pages/VmDetail';
import { Settings } from './pages/Settings';
import { Templates } from './pages/Templates';
import { Loading } from './components/Common';

// The editor page pulls in CodeMirror: load it on demand.
const VmEdit = lazy(() => import('./pages/VmEdit'));
const TemplateVersionEdit = lazy(() => import('./pages/TemplateVersionEdit'));

function Page({ parts }: { parts: string[] }) {
  const [section, a, b, c] = parts;
  if (section === 'vms' && a === 'new') return <VmEdit mode="create" />;
  if (section === 'vms' && a && b && c === 'edit') return <VmEdit mode="edit" namespace={a} name={b} />;
  if (section === 'vms' && a && b) return <VmDetail namespace={a} name={b} />;
  if (section === 'templates' && a && b && c === 'new-version') return <TemplateVersionEdit namespace={a} template={b} />;
  if (section === 'templates') return <Templates />;
  if (section === 'settings') return <Settings />;
  return <VmList />;
}

export function App() {
  const parts = useHashPath();
  const section = parts[0] ?? 'vms';
  return (
    <AppShell header={{ height: 52 }} navbar={{ width: 210, breakpoint: 'sm' }} padding="md">
      <AppShell.Header>
        <Group h="100%" px="md" justify="space-between">
          <Title order={3}>ferrovirt</Title>
          <Text size="sm" c="dimmed">virtual machines with persistent TPM &amp; UEFI state</Text>
        </Group>
      </AppShell.Header>
      <AppShell.Navbar p="xs">
        <NavLink href={href('vms')} label="Virtual Machines" active={section === 'vms'} />
        <NavLink href={href('templates')} label="Templates" active={section === 'templates'} />
        <NavLink href={href('settings')} label="Settings" active={section === 'settings'} />
      </AppShell.Navbar>
      <AppShell.Main>
        <Suspense fallback={<Loading />}>
          <Page parts={parts} />
        </Suspense>
      </AppShell.Main>
    </AppShell>
  );
}

import { AppShell, Button, Group, NavLink, Title, Text } from '@mantine/core';
import { lazy, Suspense, useEffect, useState, useSyncExternalStore } from 'react';
import { whoAmI } from './api/client';
import { getSession, logOut, subscribe } from './auth/session';
import { Login } from './components/Login';
import { href, useHashPath } from './router';
import { VmList } from './pages/VmList';
import { VmDetail } from './pages/VmDetail';
import { Settings } from './pages/Settings';
import { Templates } from './pages/Templates';
import { Images } from './pages/Images';
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
  if (section === 'images') return <Images />;
  if (section === 'settings') return <Settings />;
  return <VmList />;
}

/** Who is logged in: the server's SelfSubjectReview username, or "token" when it cannot say. */
function CurrentUser({ token }: { token: string }) {
  const [user, setUser] = useState<string | null>(null);
  useEffect(() => {
    let live = true;
    setUser(null);
    whoAmI().then(
      (name) => live && setUser(name ?? 'token'),
      () => live && setUser('token'),
    );
    return () => {
      live = false;
    };
  }, [token]);
  return (
    <Group gap="xs">
      <Text size="sm" data-testid="current-user">
        {user === null ? '…' : <>Logged in as <b>{user}</b></>}
      </Text>
      <Button size="xs" variant="default" onClick={() => logOut()}>Log out</Button>
    </Group>
  );
}

/** The login screen while this tab has no token (or after a 401); the app otherwise. */
export function Root() {
  const session = useSyncExternalStore(subscribe, getSession);
  // Keyed by the token: logging in again starts every view (lists, watches, console) afresh.
  return session.token ? <App key={session.token} token={session.token} /> : <Login notice={session.notice} />;
}

export function App({ token }: { token: string }) {
  const parts = useHashPath();
  const section = parts[0] ?? 'vms';
  return (
    <AppShell header={{ height: 52 }} navbar={{ width: 210, breakpoint: 'sm' }} padding="md">
      <AppShell.Header>
        <Group h="100%" px="md" justify="space-between">
          <Title order={3}>ferrovirt</Title>
          <Group gap="lg">
            <Text size="sm" c="dimmed" visibleFrom="md">virtual machines with persistent TPM &amp; UEFI state</Text>
            <CurrentUser token={token} />
          </Group>
        </Group>
      </AppShell.Header>
      <AppShell.Navbar p="xs">
        <NavLink href={href('vms')} label="Virtual Machines" active={section === 'vms'} />
        <NavLink href={href('templates')} label="Templates" active={section === 'templates'} />
        <NavLink href={href('images')} label="Images" active={section === 'images'} />
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

/**
 * The login screen: a bearer token pasted as is, or taken from a pasted / uploaded kubeconfig
 * (its current context's user). The token is kept in this tab's sessionStorage only.
 */
import { Alert, Button, Center, FileButton, Group, Paper, PasswordInput, Stack, Tabs, Text, Textarea, Title } from '@mantine/core';
import { useEffect, useState, type FormEvent } from 'react';
import type { KubeconfigCredentials } from '../auth/kubeconfig';
import { logIn } from '../auth/session';

type ParsedKubeconfig = { credentials: KubeconfigCredentials | null; error: string | null };

/** Parses on demand: the YAML parser is loaded only when a kubeconfig is pasted (its own chunk). */
async function readKubeconfig(text: string): Promise<ParsedKubeconfig> {
  if (!text.trim()) return { credentials: null, error: null };
  const { tokenFromKubeconfig } = await import('../auth/kubeconfig');
  try {
    return { credentials: tokenFromKubeconfig(text), error: null };
  } catch (e) {
    return { credentials: null, error: e instanceof Error ? e.message : String(e) };
  }
}

export function Login({ notice }: { notice: string | null }) {
  const [tab, setTab] = useState<string | null>('token');
  const [token, setToken] = useState('');
  const [kubeconfig, setKubeconfig] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [parsed, setParsed] = useState<ParsedKubeconfig>({ credentials: null, error: null });
  useEffect(() => {
    let live = true;
    readKubeconfig(kubeconfig).then(
      (p) => live && setParsed(p),
      (e: unknown) => live && setParsed({ credentials: null, error: `Cannot load the kubeconfig reader: ${String(e)}` }),
    );
    return () => {
      live = false;
    };
  }, [kubeconfig]);

  const submit = (e: FormEvent) => {
    e.preventDefault();
    setError(null);
    try {
      if (tab === 'kubeconfig') {
        if (!parsed.credentials) throw new Error(parsed.error ?? 'Paste or upload a kubeconfig first.');
        logIn(parsed.credentials.token);
      } else {
        logIn(token);
      }
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    }
  };

  return (
    <Center mih="100vh" p="md">
      <Paper withBorder shadow="sm" p="lg" w={560} component="form" onSubmit={submit} aria-label="Log in">
        <Stack>
          <div>
            <Title order={2}>ferrovirt</Title>
            <Text size="sm" c="dimmed">Log in to the API with a bearer token. It is kept in this browser tab only (session storage) and sent as an Authorization header.</Text>
          </div>
          {notice ? <Alert color="orange" role="alert">{notice}</Alert> : null}
          <Tabs value={tab} onChange={setTab}>
            <Tabs.List>
              <Tabs.Tab value="token">Token</Tabs.Tab>
              <Tabs.Tab value="kubeconfig">Kubeconfig</Tabs.Tab>
            </Tabs.List>
            <Tabs.Panel value="token" pt="sm">
              <PasswordInput
                label="Bearer token"
                description="e.g. the token in <data-dir>/admin.kubeconfig, or one from the server's --token-auth-file"
                value={token}
                onChange={(e) => setToken(e.currentTarget.value)}
                autoComplete="off"
                data-autofocus
              />
            </Tabs.Panel>
            <Tabs.Panel value="kubeconfig" pt="sm">
              <Stack gap="xs">
                <Textarea
                  label="Kubeconfig"
                  description="The token of the current context's user is used; nothing else leaves this page."
                  value={kubeconfig}
                  onChange={(e) => setKubeconfig(e.currentTarget.value)}
                  autosize
                  minRows={6}
                  maxRows={14}
                  spellCheck={false}
                  styles={{ input: { fontFamily: 'monospace', fontSize: 12 } }}
                  error={parsed.error}
                />
                <Group justify="space-between">
                  <FileButton onChange={(file) => void file?.text().then(setKubeconfig)} accept=".kubeconfig,.yaml,.yml,.json,.conf,text/*,application/*">
                    {(props) => <Button variant="default" size="xs" {...props}>Upload kubeconfig…</Button>}
                  </FileButton>
                  {parsed.credentials ? (
                    <Text size="sm" role="status">
                      Token of user <b>{parsed.credentials.user}</b>
                      {parsed.credentials.context ? <> (context <b>{parsed.credentials.context}</b>)</> : null}
                    </Text>
                  ) : null}
                </Group>
              </Stack>
            </Tabs.Panel>
          </Tabs>
          {error ? <Alert color="red" role="alert">{error}</Alert> : null}
          <Group justify="flex-end">
            <Button type="submit">Log in</Button>
          </Group>
        </Stack>
      </Paper>
    </Center>
  );
}

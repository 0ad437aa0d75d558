/**
 * The serial console: xterm.js over the KubeVirt console WebSocket. Frames are raw bytes of the
 * serial port in both directions (binary). Offers the `plain.kubevirt.io` subprotocol, as virtctl
 * does, then the bearer token as a `base64url.bearer.authorization.k8s.io.*` subprotocol (a browser
 * cannot send `Authorization` on a WebSocket). When the handshake fails, a plain GET of the same
 * URL asks the server why: 401 logs the tab out, 403 shows the server's message here.
 */
import '@xterm/xterm/css/xterm.css';
import { Alert, Badge, Button, Group } from '@mantine/core';
import { Terminal } from '@xterm/xterm';
import { useEffect, useRef, useState } from 'react';
import { handshakeRefusal } from '../api/client';
import { paths, websocketUrl } from '../api/paths';
import { websocketProtocols } from '../auth/session';

export const CONSOLE_SUBPROTOCOL = 'plain.kubevirt.io';

type ConnState = 'connecting' | 'open' | 'closed';

export default function SerialConsole({ namespace, name }: { namespace: string; name: string }) {
  const host = useRef<HTMLDivElement>(null);
  const [state, setState] = useState<ConnState>('connecting');
  const [closeReason, setCloseReason] = useState('');
  const [refusal, setRefusal] = useState<string | null>(null);
  const [attempt, setAttempt] = useState(0);

  useEffect(() => {
    if (!host.current) return;
    const term = new Terminal({ convertEol: false, cursorBlink: true, fontSize: 14, rows: 30, cols: 100, scrollback: 5000 });
    term.open(host.current);
    const path = paths.vmiConsole(namespace, name);
    const ws = new WebSocket(websocketUrl(path), websocketProtocols(CONSOLE_SUBPROTOCOL));
    let opened = false;
    let disposed = false;
    ws.binaryType = 'arraybuffer';
    const encoder = new TextEncoder();
    setState('connecting');
    setRefusal(null);
    ws.onopen = () => {
      opened = true;
      setState('open');
      term.focus();
    };
    ws.onmessage = (ev) => {
      if (ev.data instanceof ArrayBuffer) term.write(new Uint8Array(ev.data));
      else if (typeof ev.data === 'string') term.write(ev.data);
    };
    ws.onclose = (ev) => {
      if (disposed) return;
      setState('closed');
      setCloseReason(ev.reason || (ev.code !== 1000 ? `connection closed (code ${ev.code})` : ''));
      if (!opened) {
        // The handshake was refused; the browser hides the HTTP status, so ask the server.
        void handshakeRefusal(path).then((status) => {
          if (status && !disposed) setRefusal(status.message ?? `HTTP ${status.code ?? ''} ${status.reason ?? ''}`);
        });
      }
    };
    const input = term.onData((data) => {
      if (ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(data));
    });
    const binInput = term.onBinary((data) => {
      if (ws.readyState !== WebSocket.OPEN) return;
      const bytes = Uint8Array.from(data, (ch) => ch.charCodeAt(0) & 0xff);
      ws.send(bytes);
    });
    return () => {
      disposed = true;
      input.dispose();
      binInput.dispose();
      ws.close();
      term.dispose();
    };
  }, [namespace, name, attempt]);

  return (
    <div>
      <Group mb="xs">
        <Badge color={state === 'open' ? 'green' : state === 'connecting' ? 'blue' : 'gray'} variant="light">{state}</Badge>
        {state === 'closed' ? <Button size="xs" variant="light" onClick={() => setAttempt((a) => a + 1)}>Reconnect</Button> : null}
      </Group>
      {state === 'closed' && refusal ? <Alert color="red" mb="xs" role="alert" title="The console was refused">{refusal}</Alert> : null}
      {state === 'closed' && !refusal && closeReason ? <Alert color="gray" mb="xs">{closeReason}</Alert> : null}
      <div ref={host} data-testid="serial-console" style={{ background: '#000', padding: 4 }} />
    </div>
  );
}

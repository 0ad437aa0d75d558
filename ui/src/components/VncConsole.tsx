/**
 * The graphical console: noVNC over the KubeVirt `vnc` WebSocket (RFB in binary frames, relayed by
 * the server to QEMU's VNC server). The same subprotocols as the serial console: `plain.kubevirt.io`
 * (what virtctl offers) and the bearer token as `base64url.bearer.authorization.k8s.io.*` (a
 * browser cannot send `Authorization` on a WebSocket). A Ctrl-Alt-Del button sends the key
 * combination a browser would keep for itself. When the handshake fails, a plain GET of the same
 * URL asks the server why (401 logs the tab out, 403 shows the server's message here).
 */
import { Alert, Badge, Button, Group } from '@mantine/core';
import RFB from '@novnc/novnc';
import { useEffect, useRef, useState } from 'react';
import { handshakeRefusal } from '../api/client';
import { paths, websocketUrl } from '../api/paths';
import { websocketProtocols } from '../auth/session';

/** What virtctl offers for every console WebSocket (the serial console's too). */
const VNC_SUBPROTOCOL = 'plain.kubevirt.io';

type ConnState = 'connecting' | 'open' | 'closed';

export default function VncConsole({ namespace, name }: { namespace: string; name: string }) {
  const host = useRef<HTMLDivElement>(null);
  const rfb = useRef<RFB | null>(null);
  const [state, setState] = useState<ConnState>('connecting');
  const [closeReason, setCloseReason] = useState('');
  const [refusal, setRefusal] = useState<string | null>(null);
  const [attempt, setAttempt] = useState(0);

  useEffect(() => {
    if (!host.current) return;
    const path = paths.vmiVnc(namespace, name);
    let opened = false;
    let disposed = false;
    setState('connecting');
    setRefusal(null);
    setCloseReason('');
    const client = new RFB(host.current, websocketUrl(path), {
      shared: true,
      wsProtocols: websocketProtocols(VNC_SUBPROTOCOL),
    });
    client.scaleViewport = true;
    client.background = '#000';
    rfb.current = client;
    client.addEventListener('connect', () => {
      opened = true;
      if (!disposed) setState('open');
    });
    client.addEventListener('securityfailure', (ev) => {
      const detail = (ev as CustomEvent<{ reason?: string }>).detail;
      if (!disposed) setCloseReason(`VNC security negotiation failed${detail?.reason ? `: ${detail.reason}` : ''}`);
    });
    client.addEventListener('disconnect', (ev) => {
      if (disposed) return;
      const clean = (ev as CustomEvent<{ clean?: boolean }>).detail?.clean;
      setState('closed');
      rfb.current = null;
      if (!opened) {
        // The handshake was refused; the browser hides the HTTP status, so ask the server.
        void handshakeRefusal(path).then((status) => {
          if (status && !disposed) setRefusal(status.message ?? `HTTP ${status.code ?? ''} ${status.reason ?? ''}`);
        });
      } else if (!clean) {
        setCloseReason('the VNC connection was lost');
      }
    });
    return () => {
      disposed = true;
      rfb.current = null;
      client.disconnect();
    };
  }, [namespace, name, attempt]);

  return (
    <div>
      <Group mb="xs">
        <Badge color={state === 'open' ? 'green' : state === 'connecting' ? 'blue' : 'gray'} variant="light">{state}</Badge>
        <Button size="xs" variant="default" disabled={state !== 'open'} onClick={() => rfb.current?.sendCtrlAltDel()}>
          Ctrl-Alt-Del
        </Button>
        {state === 'closed' ? <Button size="xs" variant="light" onClick={() => setAttempt((a) => a + 1)}>Reconnect</Button> : null}
      </Group>
      {state === 'closed' && refusal ? <Alert color="red" mb="xs" role="alert" title="The console was refused">{refusal}</Alert> : null}
      {closeReason && !refusal ? <Alert color="gray" mb="xs">{closeReason}</Alert> : null}
      <div ref={host} data-testid="vnc-console" style={{ background: '#000', width: '100%', height: '70vh' }} />
    </div>
  );
}

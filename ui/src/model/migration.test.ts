import { describe, expect, it } from 'vitest';
import {
  DESTINATION_KUBECONFIG,
  DESTINATION_LABEL,
  DestinationError,
  PREPARE_DESTINATION,
  destinationSecret,
  destinationSecretName,
  destinationServer,
  destinationsOf,
  migrationDone,
  migrationId,
  progressLine,
  sendingMigration,
} from './migration';

const KUBECONFIG = `apiVersion: v1
kind: Config
clusters:
- name: a
  cluster: {server: https://10.0.0.1:8443}
- name: b
  cluster: {server: https://10.0.0.2:8443/, certificate-authority-data: AAAA}
users:
- name: admin
  user: {client-certificate-data: BBBB, client-key-data: CCCC}
contexts:
- name: to-b
  context: {cluster: b, user: admin}
current-context: to-b
`;

describe('migration to another host', () => {
  it("takes the destination server from the kubeconfig's current context (client certificates are fine)", () => {
    expect(destinationServer(KUBECONFIG)).toBe('https://10.0.0.2:8443');
  });

  it('says what is wrong with a kubeconfig it cannot use', () => {
    expect(() => destinationServer('{not: [yaml')).toThrow(DestinationError);
    expect(() => destinationServer('token: abc')).toThrow(/no "clusters"/);
    expect(() => destinationServer(KUBECONFIG.replace('current-context: to-b', 'current-context: other'))).toThrow(/names no entry/);
    expect(() => destinationServer(KUBECONFIG.replace('https://10.0.0.2:8443/', 'http://10.0.0.2'))).toThrow(/not an https:\/\/ URL/);
    expect(() => destinationServer(KUBECONFIG.replace('current-context: to-b', ''))).toThrow(/no current-context and 2 clusters/);
  });

  it('names one Secret per host, as the CLI does', () => {
    expect(destinationSecretName('https://10.0.0.2:8443')).toBe('migration-destination-10-0-0-2-8443');
    expect(destinationSecretName('https://Host-B.example:443/prefix/')).toBe('migration-destination-host-b-example-443');
    expect(destinationSecretName('https://[fd00::2]:8443')).toBe('migration-destination-fd00-2-8443');
    const secret = destinationSecret('ns', 'https://b:1', 'text');
    expect(secret.metadata?.labels?.[DESTINATION_LABEL]).toBe('true');
    expect(secret.stringData).toEqual({ kubeconfig: 'text' });
    expect(destinationsOf([secret, { metadata: { name: 'other', labels: {} } }])).toEqual([{ secret: 'migration-destination-b-1', server: 'https://b:1' }]);
  });

  it('asks this server to prepare the destination', () => {
    const vmim = sendingMigration('ns', 'vm', migrationId('vm', 1_700_000_000_500), 'https://b:1', 's');
    expect(vmim.metadata?.name).toBe('vm-1700000000-out');
    expect(vmim.metadata?.annotations).toEqual({ [DESTINATION_KUBECONFIG]: 's', [PREPARE_DESTINATION]: 'true' });
    expect(vmim.spec).toEqual({ vmiName: 'vm', sendTo: { migrationID: 'vm-1700000000', connectURL: 'https://b:1' } });
  });

  it('shows the progress as ferrovirt migrate prints it', () => {
    expect(progressLine(undefined)).toBe('Pending');
    expect(progressLine({ status: { phase: 'Running', migrationState: { diskRemainingBytes: 3 * 1048576 } } })).toBe('Running: disks 3.0 MiB to copy');
    expect(
      progressLine({ status: { phase: 'Running', migrationState: { memoryRemainingBytes: 10 * 1048576, dirtyRateBytesPerSecond: 2 * 1048576, expectedDowntimeMs: 40 } } }),
    ).toBe('Running: memory remaining 10.0 MiB, dirty rate 2.0 MiB/s, expected downtime 40 ms');
    expect(progressLine({ status: { phase: 'Succeeded', migrationState: { totalMs: 9500, downtimeMs: 310 } } })).toBe("Succeeded: total 9.5 s, QEMU's downtime 310 ms");
    expect(progressLine({ status: { phase: 'Failed', migrationState: { failureReason: 'no route' } } })).toBe('Failed: no route');
    expect(migrationDone({ status: { phase: 'Failed' } })).toBe(true);
    expect(migrationDone({ status: { phase: 'Running' } })).toBe(false);
  });
});

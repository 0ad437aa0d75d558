import { describe, expect, it } from 'vitest';
import { tokenFromKubeconfig } from './kubeconfig';

const config = (current: string | null, users: string) => `apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: "https://127.0.0.1:8443", certificate-authority-data: AAAA}
- name: other
  cluster: {server: "https://10.0.0.1:6443"}
contexts:
- name: admin@local
  context: {cluster: local, user: admin}
- name: viewer@other
  context: {cluster: other, user: viewer, namespace: default}
${current === null ? '' : `current-context: ${current}`}
users:
${users}`;

const twoUsers = `- name: admin
  user: {token: admin-token-123}
- name: viewer
  user:
    token: viewer-token-456
`;

describe('tokenFromKubeconfig', () => {
  it("takes the current context's user token among several users", () => {
    expect(tokenFromKubeconfig(config('admin@local', twoUsers))).toEqual({ token: 'admin-token-123', user: 'admin', context: 'admin@local', server: 'https://127.0.0.1:8443' });
    expect(tokenFromKubeconfig(config('viewer@other', twoUsers))).toEqual({ token: 'viewer-token-456', user: 'viewer', context: 'viewer@other', server: 'https://10.0.0.1:6443' });
  });

  it('reads JSON kubeconfigs too', () => {
    const json = JSON.stringify({ contexts: [{ name: 'c', context: { cluster: 'x', user: 'u' } }], 'current-context': 'c', users: [{ name: 'u', user: { token: 't0k' } }] });
    expect(tokenFromKubeconfig(json)).toMatchObject({ token: 't0k', user: 'u', context: 'c', server: null });
  });

  it('without current-context: the only context, or the only user; several contexts is an error', () => {
    const one = `contexts:\n- name: c\n  context: {user: u}\nusers:\n- name: u\n  user: {token: abc}\n`;
    expect(tokenFromKubeconfig(one)).toMatchObject({ token: 'abc', context: 'c' });
    expect(tokenFromKubeconfig(`users:\n- name: u\n  user: {token: xyz}\n`)).toMatchObject({ token: 'xyz', user: 'u', context: null });
    expect(() => tokenFromKubeconfig(config(null, twoUsers))).toThrow(/no current-context and 2 contexts \(admin@local, viewer@other\).*kubectl config use-context/);
  });

  it('says which name is missing', () => {
    expect(() => tokenFromKubeconfig(config('nope', twoUsers))).toThrow('current-context "nope" names no entry in "contexts" (there are: admin@local, viewer@other)');
    expect(() => tokenFromKubeconfig(config('admin@local', `- name: viewer\n  user: {token: v}\n`))).toThrow('uses the user "admin", which is not in "users" (there are: viewer)');
  });

  it('a client certificate cannot be used by a browser: says to use a token, and which', () => {
    const cert = `- name: admin\n  user: {client-certificate-data: LS0t, client-key-data: LS0t}\n`;
    expect(() => tokenFromKubeconfig(config('admin@local', cert))).toThrow(
      /user "admin" \(context "admin@local"\) logs in with a client certificate, which the browser cannot use\. Log in with a bearer token instead: .*<data-dir>\/admin\.kubeconfig.*--token-auth-file/,
    );
  });

  it('a user without a token, with a token file or a plugin is refused with a reason', () => {
    expect(() => tokenFromKubeconfig(config('admin@local', `- name: admin\n  user: {}\n`))).toThrow(/user "admin" .*has no token \(users\[\]\.user\.token\)/);
    expect(() => tokenFromKubeconfig(config('admin@local', `- name: admin\n  user: {tokenFile: /var/run/t}\n`))).toThrow(/reads its token from the file "\/var\/run\/t"/);
    expect(() => tokenFromKubeconfig(config('admin@local', `- name: admin\n  user: {exec: {command: gke-gcloud-auth-plugin}}\n`))).toThrow(/from a plugin \(exec\)/);
    expect(() => tokenFromKubeconfig(config('admin@local', `- name: admin\n  user: {username: a, password: b}\n`))).toThrow(/username and password/);
  });

  it('refuses what is not a kubeconfig', () => {
    expect(() => tokenFromKubeconfig('just-a-token')).toThrow(/does not look like a kubeconfig/);
    expect(() => tokenFromKubeconfig('users: [')).toThrow(/YAML does not parse/);
  });
});

/**
 * Takes the bearer token out of a kubeconfig (YAML or JSON), the way kubectl picks its user: the
 * `current-context`'s user. Anything a browser cannot use (client certificates, token files,
 * credential plugins) is refused with a message that says what to paste instead.
 */
import { parse } from 'yaml';
import { normalizeToken } from './session';

export interface KubeconfigCredentials {
  token: string;
  /** `users[].name` the token belongs to. */
  user: string;
  /** The context it was chosen through (null when the file has a single user and no contexts). */
  context: string | null;
  /** `clusters[].cluster.server` of that context, if any. */
  server: string | null;
}

export class KubeconfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KubeconfigError';
  }
}

export const USE_A_TOKEN_INSTEAD =
  'Log in with a bearer token instead: for example the admin token in <data-dir>/admin.kubeconfig, ' +
  "or a token from the server's --token-auth-file.";

type Named<K extends string> = { name?: unknown } & { [key in K]?: Record<string, unknown> };

function namedList<K extends string>(cfg: Record<string, unknown>, key: string, inner: K): Named<K>[] {
  const list = cfg[key];
  if (list == null) return [];
  if (!Array.isArray(list)) throw new KubeconfigError(`"${key}" must be a list of {name, ${inner}} entries.`);
  return list.filter((e): e is Named<K> => typeof e === 'object' && e !== null);
}

const names = (list: { name?: unknown }[]) => list.map((e) => String(e.name)).join(', ') || 'none';

export function tokenFromKubeconfig(text: string): KubeconfigCredentials {
  let cfg: unknown;
  try {
    cfg = parse(text);
  } catch (e) {
    throw new KubeconfigError(`This is not a valid kubeconfig: the YAML does not parse (${e instanceof Error ? e.message : String(e)}).`);
  }
  if (typeof cfg !== 'object' || cfg === null || Array.isArray(cfg) || !('users' in cfg || 'contexts' in cfg)) {
    throw new KubeconfigError('This does not look like a kubeconfig: it has no "users" or "contexts". Paste the whole file (or only the token in the Token tab).');
  }
  const config = cfg as Record<string, unknown>;
  const users = namedList(config, 'users', 'user');
  const contexts = namedList(config, 'contexts', 'context');
  const clusters = namedList(config, 'clusters', 'cluster');

  let contextName: string | null = null;
  let userName: string;
  const current = typeof config['current-context'] === 'string' ? config['current-context'] : '';
  if (current || contexts.length > 0) {
    if (!current && contexts.length > 1) {
      throw new KubeconfigError(
        `The kubeconfig has no current-context and ${contexts.length} contexts (${names(contexts)}): choose one with "kubectl config use-context NAME" and paste it again.`,
      );
    }
    const context = current ? contexts.find((c) => c.name === current) : contexts[0];
    if (!context) throw new KubeconfigError(`current-context "${current}" names no entry in "contexts" (there are: ${names(contexts)}).`);
    contextName = String(context.name);
    const user = context.context?.user;
    if (typeof user !== 'string' || !user) throw new KubeconfigError(`The context "${contextName}" names no user (contexts[].context.user).`);
    userName = user;
  } else if (users.length === 1) {
    userName = String(users[0].name);
  } else {
    throw new KubeconfigError(`The kubeconfig has no contexts and ${users.length} users (${names(users)}): it does not say which user to log in as.`);
  }

  const entry = users.find((u) => u.name === userName);
  if (!entry) throw new KubeconfigError(`The context "${contextName}" uses the user "${userName}", which is not in "users" (there are: ${names(users)}).`);
  const user = entry.user ?? {};
  const who = `The kubeconfig's user "${userName}"${contextName ? ` (context "${contextName}")` : ''}`;

  if (typeof user.token === 'string' && user.token.trim()) {
    let token: string;
    try {
      token = normalizeToken(user.token);
    } catch (e) {
      throw new KubeconfigError(`${who} has a token the browser cannot send: ${(e as Error).message}`);
    }
    const clusterName = contextName ? contexts.find((c) => c.name === contextName)?.context?.cluster : undefined;
    const server = clusters.find((c) => c.name === clusterName)?.cluster?.server;
    return { token, user: userName, context: contextName, server: typeof server === 'string' ? server : null };
  }
  if (user.tokenFile) {
    throw new KubeconfigError(`${who} reads its token from the file ${JSON.stringify(user.tokenFile)}, which a web page cannot open. Paste the token itself.`);
  }
  if (user['client-certificate-data'] || user['client-certificate']) {
    throw new KubeconfigError(`${who} logs in with a client certificate, which the browser cannot use. ${USE_A_TOKEN_INSTEAD}`);
  }
  if (user.exec || user['auth-provider']) {
    throw new KubeconfigError(`${who} gets its credentials from a plugin (${user.exec ? 'exec' : 'auth-provider'}), which a web page cannot run. ${USE_A_TOKEN_INSTEAD}`);
  }
  if (user.username || user.password) {
    throw new KubeconfigError(`${who} has a username and password; the server takes bearer tokens only. ${USE_A_TOKEN_INSTEAD}`);
  }
  throw new KubeconfigError(`${who} has no token (users[].user.token). ${USE_A_TOKEN_INSTEAD}`);
}

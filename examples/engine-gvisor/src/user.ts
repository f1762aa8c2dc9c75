import { lstat, readFile, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { errors, type ContainerSecurity } from '@hcr/core';

/** Whom a container's processes run as, in numbers (the OCI spec has no names). */
export interface ResolvedUser {
  readonly uid: number;
  readonly gid: number;
  readonly additionalGids: readonly number[];
  /** Home directory from /etc/passwd, for `HOME` when the image and CRI do not set it. */
  readonly home: string;
}

/** Symlink hops allowed while resolving a path inside a root (Linux allows 40). */
const MAX_SYMLINK_HOPS = 40;

/**
 * Resolves `path` inside `root` the way the container would see it: every
 * symlink, absolute or relative, is followed relative to `root`, and `..`
 * never climbs above it. An image's `/etc/passwd -> /host/secret` therefore
 * cannot make the engine read a host file. Null when the path does not exist.
 */
export async function resolveInRoot(root: string, path: string): Promise<string | null> {
  const pending = path.split('/').filter((p) => p !== '' && p !== '.');
  let resolved: string[] = [];
  let hops = 0;
  while (pending.length > 0) {
    const part = pending.shift()!;
    if (part === '..') {
      resolved.pop();
      continue;
    }
    const candidate = join(root, ...resolved, part);
    const st = await lstat(candidate).catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT' || e.code === 'ENOTDIR') return null;
      throw e;
    });
    if (st === null) return null;
    if (!st.isSymbolicLink()) {
      resolved.push(part);
      continue;
    }
    if (++hops > MAX_SYMLINK_HOPS) {
      throw errors.invalidArgument(`${path} in the image has more than ${MAX_SYMLINK_HOPS} levels of symbolic links`);
    }
    const target = await readlink(candidate);
    if (target.startsWith('/')) resolved = [];
    pending.unshift(...target.split('/').filter((p) => p !== '' && p !== '.'));
  }
  return join(root, ...resolved);
}

/** Reads a regular file of the image's root filesystem; null when it is absent or not a regular file. */
async function readImageFile(root: string, path: string): Promise<string | null> {
  const real = await resolveInRoot(root, path);
  if (real === null) return null;
  const st = await lstat(real);
  return st.isFile() ? readFile(real, 'utf8') : null;
}

interface PasswdEntry {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
  readonly home: string;
}

interface GroupEntry {
  readonly name: string;
  readonly gid: number;
  readonly members: readonly string[];
}

/** Parses /etc/passwd lines (`name:x:uid:gid:gecos:home:shell`); malformed lines are skipped, as libc does. */
export function parsePasswd(text: string): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f.length < 7 || line.startsWith('#') || !isId(f[2]!) || !isId(f[3]!)) continue;
    out.push({ name: f[0]!, uid: Number(f[2]), gid: Number(f[3]), home: f[5]! });
  }
  return out;
}

/** Parses /etc/group lines (`name:x:gid:member,member`). */
export function parseGroup(text: string): GroupEntry[] {
  const out: GroupEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f.length < 4 || line.startsWith('#') || !isId(f[2]!)) continue;
    out.push({ name: f[0]!, gid: Number(f[2]), members: f[3]!.split(',').filter((m) => m !== '') });
  }
  return out;
}

function isId(s: string): boolean {
  return /^\d+$/.test(s) && Number(s) <= 0xffffffff;
}

/**
 * Resolves the user of a container by the CRI rules: `run_as_user` or
 * `run_as_username` win over the image's `USER`, `run_as_group` over the
 * group part of either; names are looked up in the image's /etc/passwd and
 * /etc/group, and the user's supplementary groups from /etc/group are added
 * to the CRI's supplemental groups (as containerd does).
 */
export async function resolveUser(
  rootfs: string,
  security: ContainerSecurity,
  imageUser: string,
): Promise<ResolvedUser> {
  let userPart: string;
  let groupPart = '';
  if (security.runAsUser !== null) userPart = String(security.runAsUser);
  else if (security.runAsUsername !== '') userPart = security.runAsUsername;
  else {
    const colon = imageUser.indexOf(':');
    userPart = colon === -1 ? imageUser : imageUser.slice(0, colon);
    groupPart = colon === -1 ? '' : imageUser.slice(colon + 1);
  }
  const passwd = parsePasswd((await readImageFile(rootfs, '/etc/passwd')) ?? '');
  const groups = parseGroup((await readImageFile(rootfs, '/etc/group')) ?? '');

  let entry: PasswdEntry | undefined;
  let uid: number;
  if (userPart === '' || isId(userPart)) {
    uid = userPart === '' ? 0 : Number(userPart);
    entry = passwd.find((p) => p.uid === uid);
  } else {
    entry = passwd.find((p) => p.name === userPart);
    if (entry === undefined) {
      throw errors.invalidArgument(
        `user ${JSON.stringify(userPart)} is not in the image's /etc/passwd; use a numeric user id`,
        'config.linux.security_context.run_as_username',
      );
    }
    uid = entry.uid;
  }

  let gid = entry?.gid ?? 0;
  if (security.runAsGroup !== null) gid = security.runAsGroup;
  else if (groupPart !== '') {
    if (isId(groupPart)) gid = Number(groupPart);
    else {
      const g = groups.find((x) => x.name === groupPart);
      if (g === undefined) {
        throw errors.invalidArgument(
          `group ${JSON.stringify(groupPart)} of the image's USER is not in its /etc/group`,
          'image.config.user',
        );
      }
      gid = g.gid;
    }
  }

  const extra = new Set<number>(security.supplementalGroups);
  if (entry !== undefined) for (const g of groups) if (g.members.includes(entry.name)) extra.add(g.gid);
  extra.delete(gid);
  return { uid, gid, additionalGids: [...extra].sort((a, b) => a - b), home: entry?.home || '/' };
}

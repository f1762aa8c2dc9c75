import { lstat, readlink } from 'node:fs/promises';
import { posix } from 'node:path';

const MAX_SYMLINKS = 40; // Linux's own limit for one path walk

/** Why a path inside a root filesystem could not be resolved. */
export type ResolveFailure = 'not-found' | 'not-a-file' | 'symlink-loop';

/**
 * Resolves `path` (absolute, as seen inside the image) to a host path under
 * `root`, following symlinks as if `root` were `/`. An image's symlink can
 * therefore never point the monitor at a host file outside its rootfs (the
 * job filepath-securejoin does for urunc). The result must be a regular file.
 */
export async function resolveInRoot(
  root: string,
  path: string,
): Promise<{ ok: true; hostPath: string } | { ok: false; reason: ResolveFailure }> {
  const pending = path.split('/').filter((s) => s !== '');
  const resolved: string[] = [];
  let links = 0;
  while (pending.length > 0) {
    const part = pending.shift()!;
    if (part === '.') continue;
    if (part === '..') {
      resolved.pop();
      continue;
    }
    const host = posix.join(root, ...resolved, part);
    let st;
    try {
      st = await lstat(host);
    } catch {
      return { ok: false, reason: 'not-found' };
    }
    if (st.isSymbolicLink()) {
      if (++links > MAX_SYMLINKS) return { ok: false, reason: 'symlink-loop' };
      const target = await readlink(host);
      if (target.startsWith('/')) resolved.length = 0;
      pending.unshift(...target.split('/').filter((s) => s !== ''));
      continue;
    }
    if (pending.length > 0 && !st.isDirectory()) return { ok: false, reason: 'not-found' };
    resolved.push(part);
  }
  const hostPath = posix.join(root, ...resolved);
  try {
    const st = await lstat(hostPath);
    if (!st.isFile()) return { ok: false, reason: 'not-a-file' };
  } catch {
    return { ok: false, reason: 'not-found' };
  }
  return { ok: true, hostPath };
}

import { mkdir, open, readdir, readFile, realpath, rm, statfs } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { errAsync, okAsync, ResultAsync } from 'neverthrow';
import type { Result } from 'neverthrow';
import { errors, type HcrError, toHcrError } from '../errors.js';
import { hostTool, runTool } from './exec.js';

/** statfs(2) f_type of nsfs, the filesystem of namespace files. */
const NSFS_MAGIC = 0x6e736673;

/** One line of /proc/self/mountinfo, reduced to what namespace handling needs. */
export interface MountEntry {
  readonly mountPoint: string;
  /** Propagation tags such as `shared:3` or `master:1`. */
  readonly optional: readonly string[];
  readonly fsType: string;
}

// mountinfo escapes space, tab, newline and backslash as three octal digits.
function unescapeMountPath(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(Number.parseInt(oct, 8)));
}

/** Parses /proc/self/mountinfo (proc(5)). */
export function parseMountInfo(text: string): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const fields = line.split(' ');
    const sep = fields.indexOf('-');
    if (sep < 6) continue;
    entries.push({
      mountPoint: unescapeMountPath(fields[4] ?? ''),
      optional: fields.slice(6, sep),
      fsType: fields[sep + 1] ?? '',
    });
  }
  return entries;
}

async function mountsAt(path: string): Promise<MountEntry[]> {
  const all = parseMountInfo(await readFile('/proc/self/mountinfo', 'utf8'));
  return all.filter((m) => m.mountPoint === path);
}

/** True when `path` is a namespace file (a bind-mounted nsfs inode). */
export async function isNamespaceFile(path: string): Promise<boolean> {
  try {
    return (await statfs(path)).type === NSFS_MAGIC;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return false;
    throw e;
  }
}

// The path with its directory resolved, as mountinfo spells it; the last component may not exist.
async function resolvedPath(path: string): Promise<string> {
  try {
    return join(await realpath(dirname(path)), basename(path));
  } catch {
    return path;
  }
}

// Inside async helpers a failed step ends the whole operation with its own error.
function unwrap<T>(r: Result<T, HcrError>): T {
  if (r.isErr()) throw r.error;
  return r.value;
}

// Serialises preparation per directory so that concurrent creators do not stack bind mounts.
const dirQueue = new Map<string, Promise<unknown>>();

/**
 * Makes the namespace directory a mount point with shared propagation, as
 * `ip netns` does for /run/netns: namespace mounts made under it then reach
 * every mount namespace that shares it, and their unmounts do too. Checked on
 * every call (someone may have unmounted it), which costs one mountinfo read.
 */
function prepareNetnsDir(dir: string, timeoutMs: number): ResultAsync<void, HcrError> {
  const prepare = async () => {
    await mkdir(dir, { recursive: true, mode: 0o755 });
    const real = await realpath(dir);
    if ((await mountsAt(real)).length === 0) {
      unwrap(await runTool('mount', ['--bind', real, real], `making ${real} a mount point`, timeoutMs));
    }
    const top = (await mountsAt(real)).at(-1);
    if (top === undefined || !top.optional.some((o) => o.startsWith('shared:'))) {
      unwrap(await runTool('mount', ['--make-rshared', real], `sharing ${real}`, timeoutMs));
    }
  };
  const next = (dirQueue.get(dir) ?? Promise.resolve()).catch(() => undefined).then(prepare);
  dirQueue.set(dir, next);
  void next
    .catch(() => undefined)
    .then(() => {
      if (dirQueue.get(dir) === next) dirQueue.delete(dir);
    });
  return ResultAsync.fromPromise(next, (e) => toHcrError(e, `preparing network namespace directory ${dir}`));
}

/**
 * Creates the network namespace `<dir>/<name>` with loopback up, or returns the
 * existing one. A leftover plain file (a namespace whose mount is gone) is
 * replaced. `unshare` creates the namespace, bind-mounts it on the file and
 * runs `ip` inside it, so the namespace is never left without its mount.
 */
export function createNamespace(dir: string, name: string, timeoutMs: number): ResultAsync<string, HcrError> {
  const path = join(dir, name);
  return prepareNetnsDir(dir, timeoutMs)
    .andThen(() =>
      ResultAsync.fromPromise(
        (async () => {
          if (await isNamespaceFile(path)) return true;
          await rm(path, { force: true });
          await (await open(path, 'wx', 0o444)).close();
          return false;
        })(),
        (e) => toHcrError(e, `creating network namespace file ${path}`),
      ),
    )
    .andThen((exists) => {
      if (exists) return okAsync(path);
      return runTool(
        'unshare',
        [`--net=${path}`, '--', hostTool('ip'), 'link', 'set', 'lo', 'up'],
        `creating network namespace ${path}`,
        timeoutMs,
      )
        .map(() => path)
        .orElse((e) => removeNamespace(path, timeoutMs).andThen(() => errAsync(e)));
    });
}

/**
 * Unmounts (lazily when busy) and deletes a namespace file; succeeds when it is
 * already gone. Refuses a path on which something other than a namespace is
 * mounted, so a wrong path cannot unmount a filesystem.
 */
export function removeNamespace(path: string, timeoutMs: number): ResultAsync<void, HcrError> {
  return ResultAsync.fromPromise(
    (async () => {
      const real = await resolvedPath(path);
      // Stacked mounts happen when two creators raced; peel them all.
      for (let i = 0; i < 16; i++) {
        const top = (await mountsAt(real)).at(-1);
        if (top === undefined) break;
        if (top.fsType !== 'nsfs') {
          throw errors.failedPrecondition(`refusing to remove ${path}: a ${top.fsType} filesystem is mounted there`);
        }
        const plain = await runTool('umount', [real], `unmounting ${real}`, timeoutMs);
        if (plain.isErr()) {
          unwrap(await runTool('umount', ['--lazy', real], `unmounting ${real}`, timeoutMs));
        }
      }
      await rm(real, { force: true });
    })(),
    (e) => toHcrError(e, `removing network namespace ${path}`),
  );
}

/** Paths of the entries of the namespace directory (none when it does not exist). */
export function listNamespaces(dir: string): ResultAsync<string[], HcrError> {
  return ResultAsync.fromPromise(
    readdir(dir).then(
      (names) => names.filter((n) => !n.startsWith('.')).map((n) => join(dir, n)),
      (e: NodeJS.ErrnoException) => {
        if (e.code === 'ENOENT') return [];
        throw e;
      },
    ),
    (e) => toHcrError(e, `listing network namespaces in ${dir}`),
  );
}

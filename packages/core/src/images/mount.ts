/** overlayfs mounts through mount(8)/umount(8), and the mount table. */
import { readFile } from 'node:fs/promises';
import { errors } from '../errors.js';
import { run } from './fsutil.js';

/** The kernel takes mount options in one page; longer lowerdir lists fail with EINVAL. */
const MOUNT_OPTIONS_MAX = 4095;

/** What an overlay mount is made of. */
export interface OverlaySpec {
  /** Lower dirs, topmost first, relative to `cwd` (short, so that more layers fit in one page). */
  readonly lowers: readonly string[];
  readonly upper: string;
  readonly work: string;
  readonly target: string;
  /** Directory the relative lower dirs are resolved from. */
  readonly cwd: string;
}

/** Characters overlayfs uses as option separators, which therefore cannot appear in its paths. */
export function overlayUnsafePath(path: string): boolean {
  return /[,:\\\s]/.test(path);
}

/** Mounts an overlay. `index=off` because one upper dir becomes a lower dir of many later mounts. */
export async function mountOverlay(spec: OverlaySpec): Promise<void> {
  const options = `index=off,lowerdir=${spec.lowers.join(':')},upperdir=${spec.upper},workdir=${spec.work}`;
  if (options.length > MOUNT_OPTIONS_MAX) {
    throw errors.resourceExhausted(
      `overlay mount of ${spec.lowers.length} layers needs ${options.length} bytes of options, more than the kernel's ${MOUNT_OPTIONS_MAX}`,
    );
  }
  await run('mount', ['-t', 'overlay', 'overlay', '-o', options, spec.target], { cwd: spec.cwd });
}

/** Unmounts everything stacked at `target`; succeeds when nothing is mounted there. */
export async function unmount(target: string): Promise<void> {
  while (await isMountpoint(target)) {
    try {
      await run('umount', [target]);
    } catch (e) {
      if (!(await isMountpoint(target))) return;
      throw errors.failedPrecondition(
        `cannot unmount ${target}: ${e instanceof Error ? e.message : String(e)} (is a process still using it?)`,
      );
    }
  }
}

/** Mount points from /proc/self/mountinfo (octal escapes decoded). */
export async function mountPoints(): Promise<string[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) =>
      (l.split(' ')[4] ?? '').replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8))),
    );
}

/** True when something is mounted at exactly `path`. */
export async function isMountpoint(path: string): Promise<boolean> {
  return (await mountPoints()).includes(path);
}

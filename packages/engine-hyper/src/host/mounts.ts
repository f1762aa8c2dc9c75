import { readFileSync } from 'node:fs';
import { errors, ResultAsync, type HcrError } from '@hcr/core';
import { run } from './run.js';

/** Decodes the octal escapes (`\040` for a space) of /proc/self/mountinfo. */
function unescapeMountPath(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
}

/** Mount points at or below `dir` in this mount namespace, deepest first (the order to unmount them in). */
export function mountsUnder(dir: string): string[] {
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  const out: string[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const mp = line.split(' ')[4];
    if (mp === undefined) continue;
    const path = unescapeMountPath(mp);
    if (path === dir || path.startsWith(prefix)) out.push(path);
  }
  return out.sort((a, b) => b.length - a.length || b.localeCompare(a));
}

/**
 * Bind-mounts `source` on `target` (which must exist) for the pod share:
 * nosuid and nodev, so the setuid files and device nodes a guest's root can
 * create through 9p are inert on the host (the guest still sees the mode
 * bits and honours them inside the VM); read-only when asked.
 */
export function bindMount(source: string, target: string, readonly: boolean): ResultAsync<void, HcrError> {
  const options = `remount,bind,nosuid,nodev${readonly ? ',ro' : ''}`;
  return run(['mount', '--bind', '--make-private', source, target])
    .andThen(() => run(['mount', '-o', options, target]))
    .map(() => undefined);
}

/**
 * Unmounts everything at or below `dir`, deepest first. A busy mount is
 * detached lazily rather than left behind; the pod's files are gone from this
 * namespace either way.
 */
export function unmountAll(dir: string): ResultAsync<void, HcrError> {
  return ResultAsync.fromPromise(
    (async () => {
      for (const target of mountsUnder(dir)) {
        const plain = await run(['umount', target]);
        if (plain.isOk()) continue;
        const lazy = await run(['umount', '-l', target]);
        // Gone meanwhile (an outer mount took it along) is what we wanted.
        if (lazy.isErr() && mountsUnder(target).includes(target)) throw lazy.error;
      }
    })(),
    (e) => errors.internal(`unmount below ${dir}: ${(e as Error).message}`, e),
  );
}

import { LINUX_CAPABILITIES } from '@hcr/core';
import { readdir, readFile, lstat } from 'node:fs/promises';
import { join } from 'node:path';

/** Linux capability names by number: core's table, shared by every engine. */
export const CAPABILITY_NAMES: readonly string[] = LINUX_CAPABILITIES;

/** The capability bounding set of a process, split by what the kernel knows (`cap_last_cap`). */
export interface BoundingSet {
  readonly present: readonly string[];
  readonly missing: readonly string[];
}

/** Parses `CapBnd` from a `/proc/<pid>/status` text; caps above `lastCap` or without a name are left out. */
export function parseBoundingSet(status: string, lastCap: number): BoundingSet {
  const hex = /^CapBnd:\s*([0-9a-f]+)$/m.exec(status)?.[1] ?? '0';
  const mask = BigInt(`0x${hex}`);
  const present: string[] = [];
  const missing: string[] = [];
  for (let bit = 0; bit <= lastCap && bit < CAPABILITY_NAMES.length; bit++) {
    const name = CAPABILITY_NAMES[bit]!;
    if (((mask >> BigInt(bit)) & 1n) === 1n) present.push(name);
    else missing.push(name);
  }
  return { present, missing };
}

/**
 * The capability bounding set HCR runs with, taken as dockerd's (both are
 * started from the same host environment; dockerd's own pid is not known).
 */
export async function hostBoundingSet(): Promise<BoundingSet> {
  const [status, last] = await Promise.all([
    readFile('/proc/self/status', 'utf8'),
    readFile('/proc/sys/kernel/cap_last_cap', 'utf8').catch(() => String(CAPABILITY_NAMES.length - 1)),
  ]);
  return parseBoundingSet(status, Number(last.trim()));
}

/** A host device node for Docker's `Devices` list. */
export interface DeviceMapping {
  readonly PathOnHost: string;
  readonly PathInContainer: string;
  readonly CgroupPermissions: string;
}

/** /dev entries that are not devices a privileged container should get (the way runc lists host devices). */
const SKIPPED = new Set(['pts', 'shm', 'fd', 'mqueue', '.lxc', '.lxd-mounts', '.udev', 'console']);

/** Every character and block device under `root` (default /dev), symlinks not followed. */
export async function hostDevices(root = '/dev'): Promise<DeviceMapping[]> {
  const found: DeviceMapping[] = [];
  const walk = async (dir: string): Promise<void> => {
    for (const name of await readdir(dir).catch(() => [])) {
      if (dir === root && SKIPPED.has(name)) continue;
      const path = join(dir, name);
      const st = await lstat(path).catch(() => null);
      if (st === null) continue;
      if (st.isDirectory()) await walk(path);
      else if (st.isCharacterDevice() || st.isBlockDevice())
        found.push({ PathOnHost: path, PathInContainer: path, CgroupPermissions: 'rwm' });
    }
  };
  await walk(root);
  return found;
}

import { readdir, readFile, lstat } from 'node:fs/promises';
import { join } from 'node:path';

/** Linux capability names by number (linux/capability.h). */
export const CAPABILITY_NAMES: readonly string[] = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_DAC_READ_SEARCH',
  'CAP_FOWNER',
  'CAP_FSETID',
  'CAP_KILL',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETPCAP',
  'CAP_LINUX_IMMUTABLE',
  'CAP_NET_BIND_SERVICE',
  'CAP_NET_BROADCAST',
  'CAP_NET_ADMIN',
  'CAP_NET_RAW',
  'CAP_IPC_LOCK',
  'CAP_IPC_OWNER',
  'CAP_SYS_MODULE',
  'CAP_SYS_RAWIO',
  'CAP_SYS_CHROOT',
  'CAP_SYS_PTRACE',
  'CAP_SYS_PACCT',
  'CAP_SYS_ADMIN',
  'CAP_SYS_BOOT',
  'CAP_SYS_NICE',
  'CAP_SYS_RESOURCE',
  'CAP_SYS_TIME',
  'CAP_SYS_TTY_CONFIG',
  'CAP_MKNOD',
  'CAP_LEASE',
  'CAP_AUDIT_WRITE',
  'CAP_AUDIT_CONTROL',
  'CAP_SETFCAP',
  'CAP_MAC_OVERRIDE',
  'CAP_MAC_ADMIN',
  'CAP_SYSLOG',
  'CAP_WAKE_ALARM',
  'CAP_BLOCK_SUSPEND',
  'CAP_AUDIT_READ',
  'CAP_PERFMON',
  'CAP_BPF',
  'CAP_CHECKPOINT_RESTORE',
];

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

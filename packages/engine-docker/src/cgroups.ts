import { readFile, readdir, lstat } from 'node:fs/promises';
import { join } from 'node:path';

/** Where one container's cgroup files are, per hierarchy (cgroup v1) or unified (v2). */
export type CgroupLocation =
  | {
      readonly version: 1;
      readonly cpuacct: string | null;
      readonly memory: string | null;
      readonly pids: string | null;
    }
  | { readonly version: 2; readonly dir: string };

/** One cgroup hierarchy mounted on the host. */
export interface CgroupMount {
  readonly mountPoint: string;
  /** The cgroup path mounted there ("/" unless in a cgroup namespace). */
  readonly root: string;
  /** v1 controllers of the hierarchy; empty for cgroup2. */
  readonly controllers: readonly string[];
  readonly version: 1 | 2;
}

/** Parses `/proc/self/mountinfo` for cgroup and cgroup2 mounts. */
export function parseCgroupMounts(mountinfo: string): CgroupMount[] {
  const mounts: CgroupMount[] = [];
  for (const line of mountinfo.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep === -1) continue;
    const left = line.slice(0, sep).split(' ');
    const [fstype, , superOptions = ''] = line.slice(sep + 3).split(' ');
    const root = left[3];
    const mountPoint = left[4];
    if (root === undefined || mountPoint === undefined) continue;
    if (fstype === 'cgroup2') mounts.push({ mountPoint, root, controllers: [], version: 2 });
    else if (fstype === 'cgroup')
      mounts.push({
        mountPoint,
        root,
        controllers: superOptions.split(',').filter((o) => o !== 'rw' && o !== 'ro'),
        version: 1,
      });
  }
  return mounts;
}

/** Parses `/proc/<pid>/cgroup` into controller → path ('' is the cgroup v2 unified entry). */
export function parseProcCgroup(text: string): Map<string, string> {
  const paths = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^\d+:([^:]*):(.*)$/.exec(line);
    if (m === null) continue;
    const [, controllers = '', path = ''] = m;
    if (controllers === '') paths.set('', path);
    for (const c of controllers.split(',')) if (c !== '') paths.set(c, path);
  }
  return paths;
}

/** Joins a process's cgroup path onto the hierarchy mount that holds it. */
function under(mount: CgroupMount, path: string): string {
  const rel = mount.root !== '/' && path.startsWith(mount.root) ? path.slice(mount.root.length) : path;
  return join(mount.mountPoint, rel);
}

/**
 * The cgroup directories of a process, given the host's mounts. cgroup v1 is
 * used whenever the memory controller is on a v1 hierarchy (a hybrid host
 * mounts an empty cgroup2 beside it, which holds no limits).
 */
export function locateCgroup(mounts: readonly CgroupMount[], procCgroup: Map<string, string>): CgroupLocation | null {
  const v1 = (controller: string): string | null => {
    const mount = mounts.find((m) => m.version === 1 && m.controllers.includes(controller));
    const path = procCgroup.get(controller);
    return mount === undefined || path === undefined ? null : under(mount, path);
  };
  if (mounts.some((m) => m.version === 1 && m.controllers.includes('memory'))) {
    return { version: 1, cpuacct: v1('cpuacct'), memory: v1('memory'), pids: v1('pids') };
  }
  const unified = mounts.find((m) => m.version === 2);
  const path = procCgroup.get('');
  return unified === undefined || path === undefined ? null : { version: 2, dir: under(unified, path) };
}

/** Reads `key value` lines (memory.stat, cpu.stat) into a map. */
export function parseFlatKeyed(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const [k, v] = line.split(' ');
    if (k !== undefined && v !== undefined && k !== '') out.set(k, Number(v));
  }
  return out;
}

/** One cgroup usage sample. */
export interface CgroupUsage {
  readonly cpuNanos: bigint;
  readonly memoryUsage: number;
  /** Usage minus inactive file cache: what the kubelet evicts on. */
  readonly memoryWorkingSet: number;
  readonly processes: number;
}

/** Zero usage: the cgroup is gone (container not running). */
export const noUsage: CgroupUsage = Object.freeze({ cpuNanos: 0n, memoryUsage: 0, memoryWorkingSet: 0, processes: 0 });

async function readText(path: string | null): Promise<string | null> {
  if (path === null) return null;
  return readFile(path, 'utf8').catch(() => null);
}

/** Reads the usage files of a cgroup; missing files count as zero. */
export async function readCgroupUsage(loc: CgroupLocation): Promise<CgroupUsage> {
  if (loc.version === 1) {
    const [cpu, mem, stat, pids] = await Promise.all([
      readText(loc.cpuacct === null ? null : join(loc.cpuacct, 'cpuacct.usage')),
      readText(loc.memory === null ? null : join(loc.memory, 'memory.usage_in_bytes')),
      readText(loc.memory === null ? null : join(loc.memory, 'memory.stat')),
      readText(loc.pids === null ? null : join(loc.pids, 'pids.current')),
    ]);
    const usage = Number(mem?.trim() ?? 0) || 0;
    const inactive = stat === null ? 0 : (parseFlatKeyed(stat).get('total_inactive_file') ?? 0);
    return {
      cpuNanos: cpu === null ? 0n : BigInt(cpu.trim() || '0'),
      memoryUsage: usage,
      memoryWorkingSet: Math.max(0, usage - inactive),
      processes: Number(pids?.trim() ?? 0) || 0,
    };
  }
  const [cpu, mem, stat, pids] = await Promise.all(
    ['cpu.stat', 'memory.current', 'memory.stat', 'pids.current'].map((f) => readText(join(loc.dir, f))),
  );
  const usage = Number(mem?.trim() ?? 0) || 0;
  const inactive = stat === null || stat === undefined ? 0 : (parseFlatKeyed(stat).get('inactive_file') ?? 0);
  const usec = cpu === null || cpu === undefined ? 0 : (parseFlatKeyed(cpu).get('usage_usec') ?? 0);
  return {
    cpuNanos: BigInt(usec) * 1000n,
    memoryUsage: usage,
    memoryWorkingSet: Math.max(0, usage - inactive),
    processes: Number(pids?.trim() ?? 0) || 0,
  };
}

/** Bytes on disk under `dir` (a container's writable layer), not following symlinks; 0 when absent. */
export async function diskUsage(dir: string): Promise<number> {
  let total = 0;
  const pending = [dir];
  while (pending.length > 0) {
    const d = pending.pop()!;
    const entries = await readdir(d, { withFileTypes: true }).catch(() => []);
    for (const e of entries) {
      const p = join(d, e.name);
      const st = await lstat(p).catch(() => null);
      if (st === null) continue;
      total += st.blocks * 512;
      if (e.isDirectory()) pending.push(p);
    }
  }
  return total;
}

/** Received and sent bytes over all interfaces but loopback, from a `/proc/<pid>/net/dev` text. */
export function parseNetDev(text: string): { rxBytes: number; txBytes: number } {
  let rxBytes = 0;
  let txBytes = 0;
  for (const line of text.split('\n').slice(2)) {
    const colon = line.indexOf(':');
    if (colon === -1) continue;
    if (line.slice(0, colon).trim() === 'lo') continue;
    const f = line
      .slice(colon + 1)
      .trim()
      .split(/\s+/)
      .map(Number);
    rxBytes += f[0] ?? 0;
    txBytes += f[8] ?? 0;
  }
  return { rxBytes, txBytes };
}

import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus, loadavg, release, totalmem } from 'node:os';

/** What the numbers were measured on; a result without this is not comparable to anything. */
export interface MachineInfo {
  readonly cpuModel: string;
  readonly cores: number;
  readonly memTotalMiB: number;
  readonly kernel: string;
  readonly os: string;
  readonly node: string;
  readonly versions: Readonly<Record<string, string>>;
  /** `/proc/loadavg` 1-minute figure when the run started: other work on the host skews latencies. */
  readonly loadAtStart: number;
}

/** The commit the bench ran from, and whether the tree had uncommitted changes. */
export interface CommitInfo {
  readonly sha: string;
  readonly subject: string;
  readonly dirty: boolean;
}

/** First line of a command's output, or '' when the tool is missing. */
function firstLine(cmd: string, args: readonly string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 })
      .split('\n')[0]!
      .trim();
  } catch {
    return '';
  }
}

/** Collects machine facts and tool versions. */
export function machineInfo(): MachineInfo {
  const osRelease = (() => {
    try {
      return /^PRETTY_NAME="?([^"\n]*)"?/m.exec(readFileSync('/etc/os-release', 'utf8'))?.[1] ?? '';
    } catch {
      return '';
    }
  })();
  return {
    cpuModel: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    memTotalMiB: Math.round(totalmem() / 2 ** 20),
    kernel: release(),
    os: osRelease,
    node: process.version,
    versions: {
      dockerd: firstLine('/usr/bin/docker', ['version', '--format', '{{.Server.Version}}']),
      containerd: firstLine('containerd', ['--version']),
      runc: firstLine('runc', ['--version']),
      qemu: firstLine('qemu-system-x86_64', ['--version']),
      cniPlugins: firstLine('dpkg-query', ['-W', '-f=${Version}', 'containernetworking-plugins']),
    },
    loadAtStart: loadavg()[0] ?? 0,
  };
}

/** The repository's HEAD. */
export function commitInfo(repo: string): CommitInfo {
  const git = (...args: string[]) => firstLine('git', ['-C', repo, ...args]);
  let dirty = false;
  try {
    dirty =
      execFileSync('git', ['-C', repo, 'status', '--porcelain', '--untracked-files=no'], {
        encoding: 'utf8',
      }).trim() !== '';
  } catch {
    dirty = false;
  }
  return { sha: git('rev-parse', 'HEAD'), subject: git('log', '-1', '--format=%s'), dirty };
}

/** MemAvailable in KiB: what the kernel thinks can still be given out without swapping. */
export function memAvailableKiB(): number {
  const m = /^MemAvailable:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'));
  if (m === null) throw new Error('/proc/meminfo has no MemAvailable line');
  return Number(m[1]);
}

/** Resident set size of a process in KiB (0 when it is gone). */
export function rssKiB(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m === null ? 0 : Number(m[1]);
  } catch {
    return 0;
  }
}

/** The 1-minute load average now. */
export function load1(): number {
  return loadavg()[0] ?? 0;
}

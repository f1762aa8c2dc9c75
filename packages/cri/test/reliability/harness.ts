/**
 * Shared plumbing of the reliability suite: a private dockerd the suite may
 * kill at will, shims wired to it, a stricter leak check and a consistency
 * check that compares what CRI reports with what dockerd and the host hold.
 *
 * Why a private dockerd: the machine's dockerd is shared with every other
 * test run, and the docker engine's recovery removes HCR-labelled objects no
 * record owns. A shim restarted on the shared daemon would delete other
 * runs' pods, and killing the shared daemon would break them. Everything
 * here lives on its own data root, exec root, socket and pidfile.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { SqliteStateStore } from '@hcr/core';
import { leaks, startShim, type ShimOptions, type TestShim } from '../helpers/shim.js';

/** Where the suite's own dockerd keeps everything (data root persists so images load once). */
export const PRIVATE_DOCKERD = {
  socket: '/run/hcr-reliability-docker.sock',
  dataRoot: '/var/lib/hcr-reliability-docker',
  execRoot: '/run/hcr-reliability-docker',
  pidfile: '/run/hcr-reliability-dockerd.pid',
  log: '/var/log/hcr-reliability-dockerd.log',
} as const;

/**
 * Held (a directory naming its owner's pid) by the test file using the
 * private dockerd. Other people's runs of this suite on the same machine
 * would otherwise kill, restart and clean the daemon under each other.
 */
const DOCKERD_LOCK = '/run/hcr-reliability-dockerd.lock';

/** Debian's 20.10 client; the newer /usr/local/bin/docker may not speak API 1.41. */
const DOCKER_CLI = existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker';

/** Resolves after `ms` milliseconds. */
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `probe` until it returns a value other than undefined, or throws after `timeoutMs`. */
export async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown = undefined;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}: ${String(last)}`);
    await sleep(100);
  }
}

/** Runs Debian's docker client against the private dockerd. */
export function docker(args: readonly string[]): string {
  return execFileSync(DOCKER_CLI, ['-H', `unix://${PRIVATE_DOCKERD.socket}`, ...args], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  }).trim();
}

/** The containerd processes the private dockerd manages (their config lives in its exec root). */
function managedContainerd(): number[] {
  const config = join(PRIVATE_DOCKERD.execRoot, 'containerd', 'containerd.toml');
  return [...processes()].filter(([, argv]) => argv[0] === 'containerd' && argv.includes(config)).map(([pid]) => pid);
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The suite's own dockerd: started, SIGKILLed and restarted the way scripts/setup.sh starts the shared one. */
export class PrivateDockerd {
  /** The pid dockerd wrote to its pidfile, or null when it is not running. */
  pid(): number | null {
    try {
      const pid = Number(readFileSync(PRIVATE_DOCKERD.pidfile, 'utf8').trim());
      return Number.isInteger(pid) && pid > 0 && pidAlive(pid) ? pid : null;
    } catch {
      return null;
    }
  }

  /** Starts dockerd (no bridge, no iptables: HCR makes the pod network) and waits until it answers. */
  async start(opts: { liveRestore?: boolean } = {}): Promise<void> {
    if (this.pid() !== null) throw new Error('the private dockerd is already running');
    if (managedContainerd().length > 0) throw new Error('a containerd of the private dockerd is still running');
    mkdirSync(PRIVATE_DOCKERD.dataRoot, { recursive: true });
    // dockerd refuses to start over a pidfile, even a stale one (as scripts/setup.sh notes).
    rmSync(PRIVATE_DOCKERD.pidfile, { force: true });
    // It also adopts the containerd named in containerd's pidfile while that pid exists; after
    // a SIGKILL the old containerd can linger as a zombie (PID 1 here reaps lazily), and dockerd
    // then waits for a socket nobody serves. The containerd is gone (checked above): drop the file.
    rmSync(join(PRIVATE_DOCKERD.execRoot, 'containerd', 'containerd.pid'), { force: true });
    const args = [
      '--data-root',
      PRIVATE_DOCKERD.dataRoot,
      '--exec-root',
      PRIVATE_DOCKERD.execRoot,
      '--pidfile',
      PRIVATE_DOCKERD.pidfile,
      '-H',
      `unix://${PRIVATE_DOCKERD.socket}`,
      '--bridge=none',
      '--iptables=false',
      '--ip-masq=false',
      '--log-level=warn',
      ...(opts.liveRestore === true ? ['--live-restore'] : []),
    ];
    const out = openSync(PRIVATE_DOCKERD.log, 'a');
    const child = spawn('dockerd', args, { detached: true, stdio: ['ignore', out, out] });
    closeSync(out);
    child.unref();
    await waitFor('the private dockerd to answer', async () => {
      if (child.exitCode !== null) throw new Error(`dockerd exited (${child.exitCode}); see ${PRIVATE_DOCKERD.log}`);
      const r = spawnSync(DOCKER_CLI, ['-H', `unix://${PRIVATE_DOCKERD.socket}`, 'version'], { stdio: 'ignore' });
      return r.status === 0 && this.pid() !== null ? true : undefined;
    });
  }

  /**
   * SIGKILLs dockerd and waits until it and its managed containerd (killed by
   * its parent-death signal; container shims survive) are gone: a dockerd
   * started while the old containerd is still exiting adopts it from the
   * pidfile and then times out waiting for its socket.
   */
  async kill(): Promise<void> {
    const pid = this.pid();
    if (pid === null) return;
    process.kill(pid, 'SIGKILL');
    await this.awaitGone(pid, 10_000);
  }

  /** Stops dockerd gracefully. */
  async stop(): Promise<void> {
    const pid = this.pid();
    if (pid === null) return;
    process.kill(pid, 'SIGTERM');
    await this.awaitGone(pid, 60_000);
  }

  /**
   * Stops dockerd, undoes the two mounts it leaves behind (its data root bound
   * onto itself, and the host netns under its exec root), and hands it to
   * other runs of the suite (when a test file ends).
   */
  async close(): Promise<void> {
    try {
      await this.stop();
      for (const m of [join(PRIVATE_DOCKERD.execRoot, 'netns', 'default'), PRIVATE_DOCKERD.dataRoot]) {
        if (readFileSync('/proc/self/mountinfo', 'utf8').includes(` ${m} `))
          spawnSync('umount', ['--lazy', m], { stdio: 'ignore' });
      }
    } finally {
      unlockPrivateDockerd();
    }
  }

  private async awaitGone(pid: number, timeoutMs: number): Promise<void> {
    await waitFor(
      'dockerd and its containerd to exit',
      async () => (pidAlive(pid) || managedContainerd().length > 0 ? undefined : true),
      timeoutMs,
    );
  }
}

/** Waits for the private dockerd's lock, taking over one whose owner died. */
async function lockPrivateDockerd(): Promise<void> {
  const owner = join(DOCKERD_LOCK, 'pid');
  await waitFor(
    `${DOCKERD_LOCK} (another run of the reliability suite is using the private dockerd)`,
    async () => {
      try {
        mkdirSync(DOCKERD_LOCK);
        writeFileSync(owner, String(process.pid));
        return true;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      const pid = Number(readFileSync(owner, { encoding: 'utf8', flag: 'a+' }).trim());
      if (pid === process.pid) return true;
      // A lock whose owner is gone (or never wrote its pid and is old) is stale.
      const stale = pid > 0 ? !pidAlive(pid) : Date.now() - statSync(DOCKERD_LOCK).mtimeMs > 60_000;
      if (stale) rmSync(DOCKERD_LOCK, { recursive: true, force: true });
      return undefined;
    },
    30 * 60_000,
  );
}

function unlockPrivateDockerd(): void {
  try {
    if (Number(readFileSync(join(DOCKERD_LOCK, 'pid'), 'utf8').trim()) === process.pid)
      rmSync(DOCKERD_LOCK, { recursive: true, force: true });
  } catch {
    // not ours, or already gone
  }
}

/**
 * Takes the private dockerd for a test file (waiting for another run that
 * holds it) and starts it, after removing HCR objects a previous,
 * interrupted run may have left on it. {@link PrivateDockerd.close} gives it back.
 */
export async function startPrivateDockerd(): Promise<PrivateDockerd> {
  await lockPrivateDockerd();
  const d = new PrivateDockerd();
  if (d.pid() === null) await d.start();
  const stale = docker(['ps', '-aq', '--filter', 'label=io.hcr.kind']);
  if (stale !== '') docker(['rm', '-f', ...stale.split('\n')]);
  // leaks() asks the docker CLI; point it at this daemon for the whole test process.
  process.env['DOCKER_HOST'] = `unix://${PRIVATE_DOCKERD.socket}`;
  return d;
}

/** Starts a shim whose docker engine talks to the private dockerd, on its own bridge and subnet. */
export function startReliabilityShim(slot: number, opts: ShimOptions = {}): Promise<TestShim> {
  return startShim({
    bridge: `hcrrel${slot}`,
    subnet: `10.231.${slot}`,
    ...opts,
    engineOptions: { ...opts.engineOptions, docker: { socket: PRIVATE_DOCKERD.socket, ...opts.engineOptions?.docker } },
  });
}

/** Every process's argv, by pid (processes that exit while we look are skipped). */
function processes(): Map<number, string[]> {
  const out = new Map<number, string[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      out.set(Number(entry), readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0'));
    } catch {
      continue;
    }
  }
  return out;
}

/** Finds the pid of a shim's `hcr serve` process (its command line names the shim's config). */
export function shimPid(shim: TestShim): number {
  for (const [pid, argv] of processes()) {
    if (argv.includes('serve') && argv.includes(shim.configPath)) return pid;
  }
  throw new Error(`no running hcr serve for ${shim.configPath}`);
}

/** Processes other than the shim whose command line names one of its dirs (pause, QEMU, helpers). */
function strayProcesses(shim: TestShim): string[] {
  const found: string[] = [];
  for (const [pid, argv] of processes()) {
    if (pid === process.pid || argv.includes(shim.configPath)) continue;
    if (argv.some((a) => a.includes(shim.dir))) found.push(`${pid}:${argv.slice(0, 3).join(' ')}`);
  }
  return found;
}

/** Resident set size of a process in KiB (VmRSS). */
export function rssKiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (m === null) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]);
}

/** The shim's state dir (where the state database and CNI records live). */
export function stateDirOf(shim: TestShim): string {
  const m = /^state_dir = "(.*)"$/m.exec(readFileSync(shim.configPath, 'utf8'));
  return m?.[1] ?? join(shim.dir, 'state');
}

/** Every sandbox and container record in the shim's state database, whatever its phase. */
export function stateRecords(shim: TestShim): { sandboxes: string[]; containers: string[] } {
  const path = join(stateDirOf(shim), 'state.db');
  if (!existsSync(path)) return { sandboxes: [], containers: [] };
  const store = new SqliteStateStore(path);
  try {
    return {
      sandboxes: store.listSandboxes().map((s) => `${s.id.slice(0, 12)}:${s.phase}`),
      containers: store.listContainers().map((c) => `${c.id.slice(0, 12)}:${c.phase}`),
    };
  } finally {
    store.close();
  }
}

/**
 * {@link leaks} plus what only this suite checks: state records, per-pod
 * runtime dirs, CNI records and processes left in the shim's dirs.
 */
export function allLeaks(shim: TestShim): string[] {
  const found = leaks(shim);
  const records = stateRecords(shim);
  if (records.sandboxes.length > 0) found.push(`sandbox records: ${records.sandboxes.join(' ')}`);
  if (records.containers.length > 0) found.push(`container records: ${records.containers.join(' ')}`);
  const sandboxDirs = join(shim.dir, 'run', 'sandboxes');
  if (existsSync(sandboxDirs) && readdirSync(sandboxDirs).length > 0)
    found.push(`sandbox runtime dirs: ${readdirSync(sandboxDirs).join(' ')}`);
  const stray = strayProcesses(shim);
  if (stray.length > 0) found.push(`processes: ${stray.join(', ')}`);
  const cniRecords = join(stateDirOf(shim), 'cni');
  if (existsSync(cniRecords) && readdirSync(cniRecords).length > 0)
    found.push(`CNI records: ${readdirSync(cniRecords).join(' ')}`);
  return found;
}

/** Docker's view of one HCR object: `running`, `exited`, `created`, … or `absent`. */
export function dockerState(label: 'sandbox' | 'container', id: string): string {
  const filter =
    label === 'sandbox'
      ? ['--filter', 'label=io.hcr.kind=sandbox', '--filter', `label=io.hcr.sandbox-id=${id}`]
      : ['--filter', 'label=io.hcr.kind=container', '--filter', `label=io.hcr.container-id=${id}`];
  const states = docker(['ps', '-a', ...filter, '--format', '{{.State}}'])
    .split('\n')
    .filter((s) => s !== '');
  if (states.length > 1) throw new Error(`${states.length} docker containers for ${label} ${id}`);
  return states[0] ?? 'absent';
}

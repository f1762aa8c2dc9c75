import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { err, errAsync, errors, ok, okAsync, ResultAsync, type HcrError, type Result } from '@hcr/core';
import { UnixSocketTransport, type AgentTransport } from '../agent/transport.js';
import { run } from '../host/run.js';
import { qmpCommand, withQmp, type QmpSession } from './qmp.js';
import type { VmDriver, VmHandle, VmSpec } from './driver.js';

/** The files QEMU keeps in a VM's dir. */
export function qemuPaths(dir: string) {
  return {
    pidfile: join(dir, 'qemu.pid'),
    qmp: join(dir, 'qmp.sock'),
    agent: join(dir, 'agent.sock'),
    console: join(dir, 'console.log'),
  };
}

/** The virtio-serial port name the agent looks for in /sys/class/virtio-ports. */
export const AGENT_PORT_NAME = 'hcr.agent';

/** sun_path holds 108 bytes with the terminating NUL. */
const MAX_SOCKET_PATH = 107;

/** QEMU splits option values at commas; a literal comma is written twice. */
function q(value: string): string {
  return value.replaceAll(',', ',,');
}

/**
 * Kernel command line of a pod VM. Besides the console it skips probes a
 * microvm has nothing for (PCI, the i8042 controller, extra UARTs) and the
 * crypto self-tests, which cost seconds under emulation. Under TCG the TSC
 * calibration often stalls; a fixed early TSC frequency and no timer check
 * make every boot come up (checked on this project's hosts).
 */
export function kernelCmdline(spec: Pick<VmSpec, 'accel' | 'cmdline'>): string {
  const words = [
    'console=ttyS0',
    'reboot=k',
    'panic=-1',
    'quiet',
    'loglevel=4',
    'pci=off',
    'i8042.noaux',
    'i8042.nomux',
    'i8042.nopnp',
    'i8042.dumbkbd',
    '8250.nr_uarts=1',
    'cryptomgr.notests',
    'random.trust_cpu=on',
  ];
  if (spec.accel === 'tcg') words.push('tsc_early_khz=2000000', 'no_timer_check');
  return [...words, ...spec.cmdline].join(' ');
}

/** The QEMU argv (without the binary) for a pod VM: microvm, direct kernel boot, virtio-mmio devices. */
export function qemuArgs(spec: VmSpec): string[] {
  const p = qemuPaths(spec.dir);
  const args = [
    '-name',
    q(spec.name),
    '-M',
    'microvm,rtc=on',
    '-accel',
    spec.accel,
    ...(spec.accel === 'kvm' ? ['-cpu', 'host'] : []),
    '-m',
    `${spec.memoryMiB}M`,
    '-smp',
    String(spec.vcpus),
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-no-reboot',
    '-kernel',
    spec.kernel,
    '-initrd',
    spec.initrd,
    '-append',
    kernelCmdline(spec),
    '-serial',
    `file:${spec.dir}/console.log`,
    '-qmp',
    `unix:${q(p.qmp)},server=on,wait=off`,
    '-device',
    'virtio-serial-device',
    '-chardev',
    `socket,id=agent,path=${q(p.agent)},server=on,wait=off`,
    '-device',
    `virtserialport,chardev=agent,name=${AGENT_PORT_NAME}`,
  ];
  spec.shares.forEach((s, i) => {
    args.push(
      '-fsdev',
      `local,id=fs${i},path=${q(s.path)},security_model=passthrough,multidevs=remap`,
      '-device',
      `virtio-9p-device,fsdev=fs${i},mount_tag=${q(s.tag)}`,
    );
  });
  if (spec.memoryFile !== undefined) {
    const m = spec.memoryFile;
    args.push(
      '-object',
      `memory-backend-file,id=ram,size=${spec.memoryMiB}M,mem-path=${q(m.path)},share=${m.shared ? 'on' : 'off'}`,
      '-machine',
      'memory-backend=ram',
    );
  }
  if (spec.incoming === true) args.push('-incoming', 'defer');
  spec.nics.forEach((n, i) => {
    args.push(
      '-netdev',
      `tap,id=net${i},ifname=${q(n.tap)},script=no,downscript=no`,
      '-device',
      `virtio-net-device,netdev=net${i},mac=${n.mac}`,
    );
  });
  args.push('-daemonize', '-pidfile', p.pidfile);
  return args;
}

/** The migration capability that keeps RAM in a shared memory file out of the migration stream. */
const IGNORE_SHARED = { capabilities: [{ capability: 'x-ignore-shared', state: true }] };

/**
 * An `exec:` migration URI around a file (QEMU 7.2 has no `file:` URI); QEMU
 * runs it with /bin/sh, so the path is single-quoted.
 */
function execUri(command: string, path: string): Result<string, HcrError> {
  if (path.includes("'") || path.includes('\n')) {
    return err(errors.invalidArgument(`VM state path ${JSON.stringify(path)} cannot be passed to QEMU`));
  }
  return ok(`exec:${command}'${path}'`);
}

/** Polls until the migration in or out of this QEMU completed; its error when it failed. */
async function migrationDone(qmp: QmpSession): Promise<void> {
  for (;;) {
    const st = (await qmp.execute('query-migrate')) as { status?: string; 'error-desc'?: string };
    if (st.status === 'completed') return;
    if (st.status === 'failed' || st.status === 'cancelled') {
      throw new Error(`migration ${st.status}: ${st['error-desc'] ?? 'QEMU gave no reason'}`);
    }
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Process state letter from /proc/<pid>/stat, or null when there is no such process. */
function procState(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  } catch {
    return null;
  }
}

/** True when `pid` is a live QEMU started with `pidfile` (a recycled pid is not). */
function isOurQemu(pid: number, pidfile: string): boolean {
  const state = procState(pid);
  if (state === null || state === 'Z' || state === 'X') return false;
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes(pidfile);
  } catch {
    return false;
  }
}

async function waitGone(pid: number, pidfile: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isOurQemu(pid, pidfile)) {
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, 25));
  }
  return true;
}

/** QEMU as the VMM: `qemu-system-x86_64 -M microvm`, daemonized with a pidfile. */
export class QemuDriver implements VmDriver {
  readonly kind = 'qemu';

  constructor(private readonly binary: string = 'qemu-system-x86_64') {}

  start(spec: VmSpec): ResultAsync<VmHandle, HcrError> {
    const p = qemuPaths(spec.dir);
    for (const sock of [p.qmp, p.agent]) {
      if (sock.length > MAX_SOCKET_PATH) {
        return errAsync(
          errors.failedPrecondition(
            `socket path ${sock} is longer than ${MAX_SOCKET_PATH} bytes; configure a shorter runtime dir`,
          ),
        );
      }
    }
    return this.reconnect(spec.dir)
      .andThen((existing) => {
        if (existing !== null) {
          return errAsync(errors.alreadyExists(`a VM (pid ${existing.pid}) already runs in ${spec.dir}`));
        }
        mkdirSync(spec.dir, { recursive: true, mode: 0o700 });
        for (const f of [p.pidfile, p.qmp, p.agent, p.console]) rmSync(f, { force: true });
        const argv = [this.binary, ...qemuArgs(spec)];
        const full =
          spec.privateNetns === true
            ? ['unshare', '--net', '--', ...argv]
            : spec.netnsPath === null
              ? argv
              : ['nsenter', `--net=${spec.netnsPath}`, '--', ...argv];
        return run(full, 60_000).mapErr((e) => e.withContext('start QEMU'));
      })
      .andThen(() => this.reconnect(spec.dir))
      .andThen((handle) =>
        handle === null
          ? errAsync(errors.internal(`QEMU daemonized but ${p.pidfile} names no live QEMU`))
          : okAsync(handle),
      );
  }

  reconnect(dir: string): ResultAsync<VmHandle | null, HcrError> {
    const p = qemuPaths(dir);
    let pid = 0;
    try {
      pid = Number.parseInt(readFileSync(p.pidfile, 'utf8').trim(), 10);
    } catch {
      return okAsync(null);
    }
    if (!Number.isInteger(pid) || pid <= 0 || !isOurQemu(pid, p.pidfile)) return okAsync(null);
    return okAsync({ pid, dir, consoleLog: p.console });
  }

  isAlive(handle: VmHandle): boolean {
    return isOurQemu(handle.pid, qemuPaths(handle.dir).pidfile);
  }

  stop(handle: VmHandle, timeoutMs: number): ResultAsync<void, HcrError> {
    const p = qemuPaths(handle.dir);
    if (!this.isAlive(handle)) return okAsync(undefined);
    return qmpCommand(p.qmp, 'quit', {}, Math.min(timeoutMs, 5_000))
      .orElse((e) => (this.isAlive(handle) ? errAsync(e) : okAsync(undefined)))
      .andThen(() =>
        ResultAsync.fromPromise(waitGone(handle.pid, p.pidfile, timeoutMs), (e) => errors.internal(String(e))),
      )
      .andThen((gone) =>
        gone
          ? okAsync(undefined)
          : errAsync(errors.deadlineExceeded(`QEMU (pid ${handle.pid}) did not quit within ${timeoutMs} ms`)),
      );
  }

  kill(handle: VmHandle): ResultAsync<void, HcrError> {
    const p = qemuPaths(handle.dir);
    return ResultAsync.fromPromise(
      (async () => {
        if (!isOurQemu(handle.pid, p.pidfile)) return;
        try {
          process.kill(handle.pid, 'SIGKILL');
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
        }
        if (!(await waitGone(handle.pid, p.pidfile, 10_000))) {
          throw new Error(`QEMU (pid ${handle.pid}) is still there 10 s after SIGKILL`);
        }
      })(),
      (e) => errors.internal(`kill QEMU: ${(e as Error).message}`, e),
    );
  }

  saveState(handle: VmHandle, statePath: string, timeoutMs: number): ResultAsync<void, HcrError> {
    const uri = execUri('cat > ', statePath);
    if (uri.isErr()) return errAsync(uri.error);
    return withQmp(qemuPaths(handle.dir).qmp, timeoutMs, 'saving the VM state', async (qmp) => {
      await qmp.execute('stop');
      // RAM in a shared file is not copied into the stream: the file is the memory image.
      await qmp.execute('migrate-set-capabilities', IGNORE_SHARED);
      await qmp.execute('migrate', { uri: uri.value });
      await migrationDone(qmp);
    }).mapErr((e) => e.withContext(`save the state of VM ${handle.pid}`));
  }

  restoreState(handle: VmHandle, statePath: string, timeoutMs: number): ResultAsync<void, HcrError> {
    const uri = execUri('cat ', statePath);
    if (uri.isErr()) return errAsync(uri.error);
    return withQmp(qemuPaths(handle.dir).qmp, timeoutMs, 'loading the VM state', async (qmp) => {
      await qmp.execute('migrate-set-capabilities', IGNORE_SHARED);
      await qmp.execute('migrate-incoming', { uri: uri.value });
      await migrationDone(qmp);
      // The state was saved from a paused VM, and a paused VM resumes paused.
      await qmp.execute('cont');
    }).mapErr((e) =>
      // QEMU exits when it cannot load a state; its reason went to the stderr it closed when it daemonized.
      this.isAlive(handle)
        ? e.withContext(`restore VM ${handle.pid} from ${statePath}`)
        : errors.internal(`QEMU exited while loading ${statePath} (a damaged or incompatible state): ${e.message}`),
    );
  }

  agentTransport(handle: VmHandle): AgentTransport {
    return new UnixSocketTransport(qemuPaths(handle.dir).agent);
  }

  files(dir: string): readonly string[] {
    return Object.values(qemuPaths(dir));
  }

  /** The QEMU version line, for health info; null when the binary is missing. */
  version(): ResultAsync<string | null, HcrError> {
    return run([this.binary, '--version'], 10_000)
      .map((o) => o.stdout.split('\n')[0]?.trim() ?? '')
      .orElse(() => okAsync(null));
  }

  /** Whether `path` exists (kernel, initrd), for health checks. */
  static present(path: string): boolean {
    return existsSync(path);
  }
}

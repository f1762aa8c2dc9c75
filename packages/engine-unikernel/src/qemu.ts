import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { errors, type EngineResult } from '@hcr/core';
import { ResultAsync } from 'neverthrow';
import { match } from 'ts-pattern';
import type { UnikernelType } from './annotations.js';
import type { ContainerFiles } from './layout.js';
import {
  findOnPath,
  kvmDevicePresent,
  monitorLogTail,
  signalExit,
  type GuestExit,
  type LaunchRequest,
  type Monitor,
  type MonitorAvailability,
} from './monitor.js';
import { QmpClient, qmpCommand } from './qmp.js';
import { processAlive, readMonitorStatus, startSupervised, type MonitorStatus } from './supervisor.js';
import { pollUntil } from './wait.js';

/** How the engine picks QEMU's accelerator. */
export type AccelSetting = 'auto' | 'kvm' | 'tcg';

/** The accelerator chosen, and why (shown in health info). */
export interface AccelChoice {
  readonly accel: 'kvm' | 'tcg';
  readonly reason: string;
}

/** QEMU monitor settings from the engine config. */
export interface QemuSettings {
  readonly binary: string;
  readonly accel: AccelSetting;
  /** Bound on the KVM probe. */
  readonly probeTimeoutMs: number;
  /** Bound on QEMU reaching a running guest. */
  readonly startTimeoutMs: number;
}

/** The isa-debug-exit port the test unikernel (and many unikernel test suites) write to. */
export const DEBUG_EXIT_IOBASE = 0xf4;
// Linux under TCG often hangs calibrating the TSC without these (DESIGN.md, checked facts).
const LINUX_TCG_PARAMS = ['tsc_early_khz=2000000', 'no_timer_check'];
// QEMU's seccomp filter: no obsolete syscalls, no setuid, no fork/exec, no scheduler/affinity changes.
const SANDBOX = 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny';
const PROBE_CODE = 42;

/**
 * A 64 KiB firmware image whose reset vector writes {@link PROBE_CODE} to
 * isa-debug-exit: QEMU then exits with `(42 << 1) | 1`. Booting it under KVM
 * proves the accelerator really runs guest code, in milliseconds.
 */
export function kvmProbeRom(): Buffer {
  const rom = Buffer.alloc(64 * 1024);
  // At 0xFFFF0, in real mode: mov al, 42; out 0xf4, al; hlt
  rom.set([0xb0, PROBE_CODE, 0xe6, DEBUG_EXIT_IOBASE, 0xf4], 0xfff0);
  return rom;
}

/** Whether this host is itself a VM (the CPUID hypervisor bit, as /proc/cpuinfo shows it). */
export async function hostIsVirtualMachine(): Promise<boolean> {
  try {
    return /^flags\s*:.*\bhypervisor\b/m.test(await readFile('/proc/cpuinfo', 'utf8'));
  } catch {
    return false;
  }
}

/** QEMU's option syntax doubles a comma inside a value. */
function optValue(v: string): string {
  return v.replaceAll(',', ',,');
}

/**
 * QEMU's argv for one VM. Linux guests get the `microvm` machine (virtio-mmio
 * found through ACPI, ACPI power button for a clean stop); PVH unikernels of
 * the Unikraft kind get the `pc` machine with virtio-net-pci, the device
 * model real Unikraft builds (and urunc) expect. Both boot with `-kernel`.
 */
export function qemuArgv(binary: string, accel: 'kvm' | 'tcg', req: LaunchRequest): string[] {
  const machine = req.type === 'linux' ? 'microvm' : 'pc';
  const nicDevice = machine === 'microvm' ? 'virtio-net-device' : 'virtio-net-pci';
  const argv = [
    binary,
    '-name',
    optValue(`hcr-${req.containerId.slice(0, 12)}`),
    '-M',
    machine,
    '-accel',
    accel,
    ...(accel === 'kvm' ? ['-cpu', 'max'] : []),
    '-m',
    `${req.memoryMiB}M`,
    '-smp',
    String(req.vcpus),
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    // A guest reboot ends the VM: a unikernel that restarts itself is a container that exited.
    '-no-reboot',
    '-kernel',
    req.kernel,
    ...(req.initrd === null ? [] : ['-initrd', req.initrd]),
    '-append',
    req.cmdline,
    '-chardev',
    `file,id=console,path=${optValue(req.files.console)},append=on`,
    '-serial',
    'chardev:console',
    '-device',
    `isa-debug-exit,iobase=0x${DEBUG_EXIT_IOBASE.toString(16)},iosize=0x04`,
    '-qmp',
    // Relative to QEMU's working directory (the container dir): the absolute
    // path can be longer than a unix socket address allows.
    `unix:${optValue(basename(req.files.qmp))},server=on,wait=off`,
  ];
  if (req.nic !== null) {
    argv.push(
      '-netdev',
      `tap,id=net0,ifname=${req.nic.tap},script=no,downscript=no`,
      '-device',
      `${nicDevice},netdev=net0,mac=${req.nic.mac}${machine === 'pc' ? `,host_mtu=${req.nic.mtu}` : ''}`,
    );
  }
  argv.push('-sandbox', SANDBOX);
  return argv;
}

/**
 * Meaning of QEMU's exit: isa-debug-exit makes it exit `(code << 1) | 1`, a
 * guest power-off or reboot (with -no-reboot) makes it exit 0, and QEMU's own
 * failures exit 1 with a message on stderr — which is how status 1 is told
 * apart from a guest that wrote 0 to isa-debug-exit.
 */
export function decodeQemuExit(status: MonitorStatus, monitorLog: string): GuestExit {
  return match(status)
    .with({ kind: 'signal' }, (s) => signalExit(s.signal, 'QEMU'))
    .with({ kind: 'exit', code: 0 }, () => ({
      exitCode: 0,
      reason: 'Completed' as const,
      message: 'the guest powered off',
    }))
    .with({ kind: 'exit' }, (s) => {
      const qemuError = qemuErrorLines(monitorLog);
      if (s.code % 2 === 0 || (s.code === 1 && qemuError !== '')) {
        return {
          exitCode: s.code,
          reason: 'Error' as const,
          message: `QEMU failed: ${qemuError || `exit status ${s.code}`}`,
        };
      }
      const code = s.code >> 1;
      return {
        exitCode: code,
        reason: code === 0 ? ('Completed' as const) : ('Error' as const),
        message: `the guest exited through isa-debug-exit with code ${code}`,
      };
    })
    .exhaustive();
}

// QEMU's own error lines ("qemu-system-x86_64: …"), without its warnings and signal notices.
function qemuErrorLines(log: string): string {
  return log
    .split('\n')
    .filter((l) => /^qemu[\w-]*: /.test(l) && !/warning:|terminating on signal/.test(l))
    .join('\n')
    .trim();
}

/** The QEMU monitor: `qemu-system-x86_64`, KVM where a bounded probe shows it works, else TCG. */
export class QemuMonitor implements Monitor {
  readonly name = 'qemu' as const;
  readonly binary: string;
  private accelChoice: Promise<AccelChoice> | null = null;

  constructor(private readonly settings: QemuSettings) {
    this.binary = settings.binary;
  }

  supports(type: UnikernelType): boolean {
    return type === 'linux' || type === 'unikraft';
  }

  async available(): Promise<MonitorAvailability> {
    const path = await findOnPath(this.binary);
    if (path === null) {
      return { ok: false, message: `monitor binary ${this.binary} not found on PATH (Debian package qemu-system-x86)` };
    }
    const accel = await this.accel();
    return { ok: true, path, detail: `accelerator ${accel.accel}: ${accel.reason}` };
  }

  /** The accelerator VMs get; decided once per engine, by a bounded probe. */
  accel(): Promise<AccelChoice> {
    this.accelChoice ??= this.chooseAccel();
    return this.accelChoice;
  }

  async kernelParams(type: UnikernelType): Promise<readonly string[]> {
    return type === 'linux' && (await this.accel()).accel === 'tcg' ? LINUX_TCG_PARAMS : [];
  }

  launch(req: LaunchRequest): EngineResult<void> {
    return ResultAsync.fromPromise(this.launchVm(req), (e) =>
      errors.failedPrecondition(`starting QEMU for container ${req.containerId}: ${(e as Error).message}`),
    );
  }

  async requestShutdown(files: ContainerFiles): Promise<boolean> {
    if (!existsSync(files.qmp)) return false;
    try {
      await qmpCommand(files.qmp, 'system_powerdown');
      return true;
    } catch {
      return false;
    }
  }

  decodeExit(status: MonitorStatus, monitorLog: string): GuestExit {
    return decodeQemuExit(status, monitorLog);
  }

  private async launchVm(req: LaunchRequest): Promise<void> {
    const accel = await this.accel();
    const supervisor = await startSupervised(req.files, req.netnsPath, qemuArgv(this.binary, accel.accel, req));
    // Ready when QMP answers (the machine is built and running) or QEMU already
    // ended — a unikernel may finish before the socket is ever polled.
    const ready = await pollUntil(async () => {
      const status = await readMonitorStatus(req.files);
      if (status !== null) return { ended: status };
      if (!(await processAlive(supervisor))) {
        throw new Error(`the supervisor ended before QEMU: ${await monitorLogTail(req.files.monitorLog)}`);
      }
      if (!existsSync(req.files.qmp)) return undefined;
      try {
        (await QmpClient.connect(req.files.qmp, 1000)).close();
        return { ended: null };
      } catch {
        return undefined;
      }
    }, this.settings.startTimeoutMs);
    if (ready === undefined) {
      throw new Error(`QEMU did not bring the VM up within ${this.settings.startTimeoutMs} ms`);
    }
    if (ready.ended !== null) {
      const log = await monitorLogTail(req.files.monitorLog);
      const exit = decodeQemuExit(ready.ended, log);
      if (exit.message.startsWith('QEMU failed')) throw new Error(exit.message);
    }
  }

  private async chooseAccel(): Promise<AccelChoice> {
    const setting = this.settings.accel;
    if (setting === 'tcg') return { accel: 'tcg', reason: 'configured (accel = "tcg")' };
    if (!(await kvmDevicePresent())) {
      if (setting === 'kvm') return { accel: 'kvm', reason: 'configured (accel = "kvm"), but /dev/kvm is not usable' };
      return { accel: 'tcg', reason: '/dev/kvm is not usable; software emulation' };
    }
    if (setting === 'auto' && (await hostIsVirtualMachine())) {
      return {
        accel: 'tcg',
        reason:
          'this host is itself a VM: nested KVM runs trivial guests but hangs real kernels here; ' +
          'software emulation (set accel = "kvm" to force KVM)',
      };
    }
    const probe = await this.probeKvm();
    if (setting === 'kvm') return { accel: 'kvm', reason: `configured (accel = "kvm"); probe: ${probe.detail}` };
    return probe.ok
      ? { accel: 'kvm', reason: `KVM probe booted a guest in ${probe.ms} ms` }
      : { accel: 'tcg', reason: `KVM probe failed (${probe.detail}); software emulation` };
  }

  /** Boots {@link kvmProbeRom} under KVM, bounded by the probe timeout; never hangs. */
  private async probeKvm(): Promise<{ ok: boolean; ms: number; detail: string }> {
    const dir = await mkdtemp(join(tmpdir(), 'hcr-kvm-probe-'));
    const rom = join(dir, 'probe.rom');
    await writeFile(rom, kvmProbeRom());
    const started = Date.now();
    const argv = ['-M', 'microvm', '-accel', 'kvm', '-m', '16M', '-nodefaults', '-no-user-config', '-display', 'none'];
    argv.push('-bios', rom, '-device', `isa-debug-exit,iobase=0x${DEBUG_EXIT_IOBASE.toString(16)},iosize=0x01`);
    try {
      const result = await new Promise<{ code: number | null; stderr: string; timedOut: boolean }>((resolve) => {
        execFile(
          this.binary,
          argv,
          { timeout: this.settings.probeTimeoutMs, killSignal: 'SIGKILL' },
          (error, _stdout, stderr) => {
            const e = error as (Error & { code?: number | string; killed?: boolean }) | null;
            resolve({
              code: e === null ? 0 : typeof e.code === 'number' ? e.code : null,
              stderr: String(stderr),
              timedOut: e?.killed === true,
            });
          },
        );
      });
      const ms = Date.now() - started;
      if (result.code === ((PROBE_CODE << 1) | 1)) return { ok: true, ms, detail: 'guest ran' };
      if (result.timedOut) return { ok: false, ms, detail: `no exit within ${this.settings.probeTimeoutMs} ms` };
      return { ok: false, ms, detail: result.stderr.trim().split('\n').pop() || `exit status ${result.code}` };
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
}

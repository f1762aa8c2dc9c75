import { writeFile } from 'node:fs/promises';
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
import { readMonitorStatus, readPid, startSupervised, type MonitorStatus } from './supervisor.js';
import { pollUntil } from './wait.js';

// Firecracker has no ACPI: a Linux guest stops it by rebooting through the
// keyboard controller, and has no PCI bus to scan.
const LINUX_FIRECRACKER_PARAMS = ['reboot=k', 'pci=off'];

/** Firecracker's `--config-file` document (its API objects, by their API names). */
export function firecrackerConfig(req: LaunchRequest): Record<string, unknown> {
  return {
    'boot-source': {
      kernel_image_path: req.kernel,
      boot_args: req.cmdline,
      ...(req.initrd === null ? {} : { initrd_path: req.initrd }),
    },
    drives: [],
    'machine-config': { vcpu_count: req.vcpus, mem_size_mib: req.memoryMiB },
    'network-interfaces':
      req.nic === null ? [] : [{ iface_id: 'eth0', host_dev_name: req.nic.tap, guest_mac: req.nic.mac }],
  };
}

/** argv of Firecracker without its API socket: the whole VM comes from the config file. */
export function firecrackerArgv(binary: string, req: LaunchRequest): string[] {
  return [binary, '--no-api', '--config-file', req.files.monitorConfig, '--id', `hcr-${req.containerId.slice(0, 12)}`];
}

/**
 * Firecracker: runs `linux` and `unikraft` guests under KVM; console on its
 * stdout. It exits 0 when the guest reboots (its way of powering off).
 */
export class FirecrackerMonitor implements Monitor {
  readonly name = 'firecracker' as const;
  readonly binary = 'firecracker';

  supports(type: UnikernelType): boolean {
    return type === 'linux' || type === 'unikraft';
  }

  async available(): Promise<MonitorAvailability> {
    const path = await findOnPath(this.binary);
    if (path === null) return { ok: false, message: `monitor binary ${this.binary} not found on PATH` };
    if (!(await kvmDevicePresent()))
      return { ok: false, message: `${this.binary} needs KVM and /dev/kvm is not usable` };
    return { ok: true, path, detail: 'KVM' };
  }

  async kernelParams(type: UnikernelType): Promise<readonly string[]> {
    return type === 'linux' ? LINUX_FIRECRACKER_PARAMS : [];
  }

  launch(req: LaunchRequest): EngineResult<void> {
    const run = async () => {
      await writeFile(req.files.monitorConfig, JSON.stringify(firecrackerConfig(req), null, 2));
      await startSupervised(req.files, req.netnsPath, firecrackerArgv(this.binary, req));
      const up = await pollUntil(
        async () =>
          (await readPid(req.files.monitorPid)) !== null || (await readMonitorStatus(req.files)) !== null
            ? true
            : undefined,
        5000,
      );
      if (up === undefined) throw new Error('firecracker did not start within 5 s');
      const status = await readMonitorStatus(req.files);
      if (status !== null && !(status.kind === 'exit' && status.code === 0)) {
        throw new Error(await monitorLogTail(req.files.monitorLog));
      }
    };
    return ResultAsync.fromPromise(run(), (e) =>
      errors.failedPrecondition(`starting firecracker for container ${req.containerId}: ${(e as Error).message}`),
    );
  }

  // Without the API socket there is no Ctrl-Alt-Del; SIGTERM makes Firecracker exit.
  async requestShutdown(_files: ContainerFiles, pid: number): Promise<boolean> {
    try {
      process.kill(pid, 'SIGTERM');
      return true;
    } catch {
      return false;
    }
  }

  decodeExit(status: MonitorStatus, monitorLog: string): GuestExit {
    return match(status)
      .with({ kind: 'signal' }, (s) => signalExit(s.signal, 'firecracker'))
      .with({ kind: 'exit', code: 0 }, () => ({
        exitCode: 0,
        reason: 'Completed' as const,
        message: 'the guest shut down',
      }))
      .with({ kind: 'exit' }, (s) => ({
        exitCode: s.code,
        reason: 'Error' as const,
        message: `firecracker failed (exit ${s.code})${monitorLog ? `: ${monitorLog.split('\n').pop()}` : ''}`,
      }))
      .exhaustive();
  }
}

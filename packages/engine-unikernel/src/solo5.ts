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

/** Solo5 network device name urunc's images are built with (its `solo5NetDev` default). */
export const SOLO5_NET_DEVICE = 'service';

/**
 * argv of a Solo5 tender: memory, the TAP as the `service` network device
 * with the CNI MAC, then the unikernel and its command line. The console is
 * the tender's stdout.
 */
export function solo5Argv(binary: string, req: LaunchRequest): string[] {
  const argv = [binary, `--mem=${req.memoryMiB}`];
  if (req.nic !== null) {
    argv.push(`--net:${SOLO5_NET_DEVICE}=${req.nic.tap}`, `--net-mac:${SOLO5_NET_DEVICE}=${req.nic.mac}`);
  }
  argv.push('--', req.kernel, ...(req.cmdline === '' ? [] : req.cmdline.split(' ')));
  return argv;
}

/** A Solo5 tender's status is the guest's `solo5_exit` code; signals follow the shell convention. */
export function decodeSolo5Exit(status: MonitorStatus, monitorLog: string, tender: string): GuestExit {
  return match(status)
    .with({ kind: 'signal' }, (s) => signalExit(s.signal, tender))
    .with({ kind: 'exit' }, (s) => ({
      exitCode: s.code,
      reason: s.code === 0 ? ('Completed' as const) : ('Error' as const),
      message:
        s.code === 0
          ? 'the unikernel exited'
          : `the unikernel exited with code ${s.code}${monitorLog ? `: ${monitorLog.split('\n').pop()}` : ''}`,
    }))
    .exhaustive();
}

/**
 * Solo5's tenders: `hvt` (a KVM VM) and `spt` (a seccomp-sandboxed process,
 * no KVM needed). They run the Solo5-based frameworks, Rumprun and MirageOS.
 */
export class Solo5Monitor implements Monitor {
  readonly binary: string;

  constructor(readonly name: 'hvt' | 'spt') {
    this.binary = `solo5-${name}`;
  }

  supports(type: UnikernelType): boolean {
    return type === 'rumprun' || type === 'mirage';
  }

  async available(): Promise<MonitorAvailability> {
    const path = await findOnPath(this.binary);
    if (path === null)
      return { ok: false, message: `monitor binary ${this.binary} not found on PATH (Solo5's ${this.name} tender)` };
    if (this.name === 'hvt' && !(await kvmDevicePresent())) {
      return { ok: false, message: `${this.binary} needs KVM and /dev/kvm is not usable` };
    }
    return { ok: true, path, detail: this.name === 'hvt' ? 'KVM' : 'seccomp sandbox' };
  }

  async kernelParams(): Promise<readonly string[]> {
    return [];
  }

  launch(req: LaunchRequest): EngineResult<void> {
    const run = async () => {
      await startSupervised(req.files, req.netnsPath, solo5Argv(this.binary, req));
      const up = await pollUntil(
        async () =>
          (await readPid(req.files.monitorPid)) !== null || (await readMonitorStatus(req.files)) !== null
            ? true
            : undefined,
        5000,
      );
      if (up === undefined) throw new Error(`${this.binary} did not start within 5 s`);
      const status = await readMonitorStatus(req.files);
      if (status !== null && status.kind === 'exit' && status.code === 127) {
        throw new Error(await monitorLogTail(req.files.monitorLog));
      }
    };
    return ResultAsync.fromPromise(run(), (e) =>
      errors.failedPrecondition(`starting ${this.binary} for container ${req.containerId}: ${(e as Error).message}`),
    );
  }

  // Solo5 guests have no shutdown request channel; the engine falls back to signals.
  async requestShutdown(_files: ContainerFiles, pid: number): Promise<boolean> {
    try {
      process.kill(pid, 'SIGTERM');
      return true;
    } catch {
      return false;
    }
  }

  decodeExit(status: MonitorStatus, monitorLog: string): GuestExit {
    return decodeSolo5Exit(status, monitorLog, this.binary);
  }
}

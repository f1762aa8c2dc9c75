import { constants } from 'node:fs';
import { access, readFile } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import type { EngineResult } from '@hcr/core';
import type { MonitorName, UnikernelType } from './annotations.js';
import type { ContainerFiles } from './layout.js';
import type { MonitorStatus } from './supervisor.js';

/** The guest NIC: a TAP in the pod netns, redirected to the CNI interface. */
export interface GuestNic {
  readonly tap: string;
  /** The CNI interface's MAC, so the guest owns the address CNI's peers expect. */
  readonly mac: string;
  readonly mtu: number;
}

/** Everything a monitor needs to boot one container's VM. */
export interface LaunchRequest {
  readonly containerId: string;
  readonly files: ContainerFiles;
  /** The pod netns the monitor runs in; null for none. */
  readonly netnsPath: string | null;
  readonly type: UnikernelType;
  /** Host path of the kernel (inside the prepared rootfs). */
  readonly kernel: string;
  /** Host path of the initrd, or null. */
  readonly initrd: string | null;
  /** The full guest command line. */
  readonly cmdline: string;
  readonly memoryMiB: number;
  readonly vcpus: number;
  readonly nic: GuestNic | null;
}

/** How the guest ended, in CRI terms. */
export interface GuestExit {
  readonly exitCode: number;
  readonly reason: 'Completed' | 'Error';
  readonly message: string;
}

/** Whether a monitor can be used on this host, and if not why. */
export type MonitorAvailability =
  | { readonly ok: true; readonly path: string; readonly detail: string }
  | { readonly ok: false; readonly message: string };

/**
 * A unikernel monitor (QEMU, Firecracker, a Solo5 tender): the engine asks
 * it which unikernel types it runs, whether it is installed, and has it boot
 * a VM under the shared supervisor. Everything monitor-specific — argv,
 * console wiring, exit-status meaning, graceful stop — lives behind this.
 */
export interface Monitor {
  readonly name: MonitorName;
  /** Program looked up on PATH. */
  readonly binary: string;
  supports(type: UnikernelType): boolean;
  /** Bounded check that the monitor can run VMs here (binary found, accelerator usable). */
  available(): Promise<MonitorAvailability>;
  /** Kernel parameters this monitor needs for a guest type (e.g. TCG timing for Linux). */
  kernelParams(type: UnikernelType): Promise<readonly string[]>;
  /** Starts the VM under the supervisor; resolves once the guest runs (or already ended). */
  launch(request: LaunchRequest): EngineResult<void>;
  /** Asks the guest to shut down cleanly; false when the monitor has no such channel. */
  requestShutdown(files: ContainerFiles, pid: number): Promise<boolean>;
  /** Translates the monitor's end into the guest's exit code, reason and message. */
  decodeExit(status: MonitorStatus, monitorLog: string): GuestExit;
}

/** Finds `binary` on PATH (or takes it as a path when it contains a slash); null when absent. */
export async function findOnPath(binary: string, path = process.env['PATH'] ?? ''): Promise<string | null> {
  const candidates = binary.includes('/')
    ? [binary]
    : path
        .split(delimiter)
        .filter((d) => d !== '')
        .map((d) => join(d, binary));
  for (const c of candidates) {
    try {
      await access(c, constants.X_OK);
      return c;
    } catch {
      // keep looking
    }
  }
  return null;
}

/** Whether /dev/kvm can be opened for reading and writing. */
export async function kvmDevicePresent(): Promise<boolean> {
  try {
    await access('/dev/kvm', constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** The last `bytes` of a monitor's stderr, trimmed, for error messages. */
export async function monitorLogTail(path: string, bytes = 600): Promise<string> {
  try {
    const text = await readFile(path, 'utf8');
    return text.slice(-bytes).trim();
  } catch {
    return '';
  }
}

/** Exit code and message for a monitor killed by a signal (shell convention 128 + n). */
export function signalExit(signal: number, monitor: string): GuestExit {
  return {
    exitCode: 128 + signal,
    reason: 'Error',
    message:
      signal === 9 ? `the VM was killed (${monitor} got SIGKILL)` : `${monitor} was terminated by signal ${signal}`,
  };
}

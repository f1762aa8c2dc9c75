import type { HcrError, ResultAsync } from '@hcr/core';
import type { AgentTransport } from '../agent/transport.js';

/** Accelerator a VM runs on. */
export type Accel = 'kvm' | 'tcg';

/** A TAP device inside the pod's network namespace, and the MAC the guest NIC gets. */
export interface VmNic {
  readonly tap: string;
  readonly mac: string;
}

/** A host directory shared into the guest under a mount tag. */
export interface VmShare {
  readonly tag: string;
  readonly path: string;
}

/** Everything a driver needs to start one pod VM. */
export interface VmSpec {
  /** Name shown by the VMM (and in `ps`). */
  readonly name: string;
  /** Directory for the pidfile, control sockets and console log; survives an HCR restart. */
  readonly dir: string;
  readonly kernel: string;
  readonly initrd: string;
  /** Extra kernel command-line words, after the driver's own. */
  readonly cmdline: readonly string[];
  readonly vcpus: number;
  readonly memoryMiB: number;
  readonly accel: Accel;
  /** Network namespace the VMM runs in (where the TAP devices are), or null for the host's. */
  readonly netnsPath: string | null;
  readonly nics: readonly VmNic[];
  readonly shares: readonly VmShare[];
  /**
   * Guest RAM in a file instead of anonymous memory: `shared` for a template
   * VM (its RAM becomes the template's memory image), private
   * (copy-on-write, the file is never written) for a VM resumed from one.
   */
  readonly memoryFile?: VmMemoryFile;
  /** Start paused and wait for a saved state (see {@link VmDriver.restoreState}) instead of booting. */
  readonly incoming?: boolean;
  /** Run the VMM in a network namespace made for it and gone with it (a template VM), not in netnsPath. */
  readonly privateNetns?: boolean;
}

/** A file that holds a VM's RAM. */
export interface VmMemoryFile {
  readonly path: string;
  readonly shared: boolean;
}

/** A running VM: enough to find, control and reach it again after an HCR restart. */
export interface VmHandle {
  readonly pid: number;
  readonly dir: string;
  /** The serial console log, whose tail explains a VM that never came up. */
  readonly consoleLog: string;
}

/**
 * One VMM behind a small interface, so another one (Firecracker, Cloud
 * Hypervisor) can be added where present without touching the engine.
 */
export interface VmDriver {
  /** VMM name, for messages and health info. */
  readonly kind: string;
  /** Starts the VM detached from HCR (it outlives an HCR restart). */
  start(spec: VmSpec): ResultAsync<VmHandle, HcrError>;
  /** Finds the VM started in `dir` earlier; null when none is alive there. */
  reconnect(dir: string): ResultAsync<VmHandle | null, HcrError>;
  /** True while the VMM process of `handle` lives. */
  isAlive(handle: VmHandle): boolean;
  /** Asks the VMM to quit and waits up to `timeoutMs` for it to be gone. */
  stop(handle: VmHandle, timeoutMs: number): ResultAsync<void, HcrError>;
  /** SIGKILLs the VMM and waits for it to be gone. */
  kill(handle: VmHandle): ResultAsync<void, HcrError>;
  /**
   * Pauses the VM and writes its device state to `statePath`; its RAM is not
   * in that file but in its shared memory file. The VM stays paused.
   */
  saveState(handle: VmHandle, statePath: string, timeoutMs: number): ResultAsync<void, HcrError>;
  /** Loads a state written by saveState into a VM started with `incoming`, then resumes it. */
  restoreState(handle: VmHandle, statePath: string, timeoutMs: number): ResultAsync<void, HcrError>;
  /** The channel to the guest agent of this VM. */
  agentTransport(handle: VmHandle): AgentTransport;
  /** Files the driver keeps in a VM's dir (removed with the pod). */
  files(dir: string): readonly string[];
}

import { join } from 'node:path';

/**
 * Files of one container under `<engine runtime dir>/containers/<id>/`. They
 * are the engine's whole record of a VM, so an HCR restart (which keeps the
 * runtime dir) finds every running VM, its console position and its exit.
 */
export interface ContainerFiles {
  readonly dir: string;
  /** What createContainer resolved (kernel, command line parts, resources); JSON. */
  readonly launch: string;
  /** pid of the supervisor that waits for the monitor (written by the engine). */
  readonly supervisorPid: string;
  /** pid of the monitor process (written by the supervisor after fork). */
  readonly monitorPid: string;
  /** `exit <status>` or `signal <n>`, written atomically by the supervisor when the monitor ends. */
  readonly exit: string;
  /** Raw guest console (serial) output, appended by the monitor. */
  readonly console: string;
  /** How many bytes of {@link console} are already in the CRI log. */
  readonly consoleOffset: string;
  /** The monitor's own stderr (its error messages). */
  readonly monitorLog: string;
  /** QMP control socket (QEMU). */
  readonly qmp: string;
  /** Start time in Unix nanoseconds, written once the guest runs. */
  readonly started: string;
  /** Present once HCR asked the VM to stop: JSON `{ graceSeconds, killed }`. */
  readonly stop: string;
  /** Monitor config file (Firecracker). */
  readonly monitorConfig: string;
}

/** The file layout of container `id` under the engine's runtime dir. */
export function containerFiles(runtimeDir: string, id: string): ContainerFiles {
  const dir = join(runtimeDir, 'containers', id);
  return {
    dir,
    launch: join(dir, 'launch.json'),
    supervisorPid: join(dir, 'supervisor.pid'),
    monitorPid: join(dir, 'monitor.pid'),
    exit: join(dir, 'exit'),
    console: join(dir, 'console.log'),
    consoleOffset: join(dir, 'console.offset'),
    monitorLog: join(dir, 'monitor.log'),
    qmp: join(dir, 'qmp.sock'),
    started: join(dir, 'started'),
    stop: join(dir, 'stop.json'),
    monitorConfig: join(dir, 'monitor.json'),
  };
}

/** Directory holding one record file per sandbox. */
export function sandboxesDir(runtimeDir: string): string {
  return join(runtimeDir, 'sandboxes');
}

/** Directory holding one directory per container. */
export function containersDir(runtimeDir: string): string {
  return join(runtimeDir, 'containers');
}

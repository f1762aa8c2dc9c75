import { defineEngine, ENGINE_API_VERSION, errors, fieldSchema, type ConfigOf } from '@hcr/core';
import { errAsync, ResultAsync } from 'neverthrow';
import { UnikernelEngine } from './engine.js';
import { FirecrackerMonitor } from './firecracker.js';
import { QemuMonitor, type AccelSetting } from './qemu.js';
import { Solo5Monitor } from './solo5.js';
import { unikernelTypes, type UnikernelType } from './annotations.js';

/** Documented config keys of the unikernel engine (`[engines.<name>]`). */
export const unikernelConfigFields = [
  {
    key: 'qemu_binary',
    type: 'string',
    default: 'qemu-system-x86_64',
    description: 'QEMU system emulator (name on PATH or absolute path)',
  },
  {
    key: 'accel',
    type: 'string',
    default: 'auto',
    description:
      'QEMU accelerator: "auto" (KVM when /dev/kvm works, the host is not itself a VM and a probe guest boots; else TCG), "kvm" or "tcg"',
  },
  {
    key: 'default_memory_mib',
    type: 'number',
    default: 256,
    description: 'VM memory when the container sets no memory limit',
  },
  { key: 'default_vcpus', type: 'number', default: 1, description: 'vCPUs when the container sets no CPU quota' },
  { key: 'start_timeout_seconds', type: 'number', default: 20, description: 'Bound on a monitor bringing a VM up' },
  { key: 'kvm_probe_timeout_seconds', type: 'number', default: 5, description: 'Bound on the KVM probe boot' },
  {
    key: 'graceful_stop_types',
    type: 'string[]',
    default: ['linux'],
    description:
      'Unikernel types whose guests handle the ACPI power button: StopContainer presses it and kills the VM only when the grace period ends. Other types are stopped at once, as urunc does (their monitors have no guest to ask)',
  },
] as const;

/** The unikernel engine's parsed config. */
export type UnikernelConfigTable = ConfigOf<typeof unikernelConfigFields>;

const accelSettings: readonly AccelSetting[] = ['auto', 'kvm', 'tcg'];

/** The engine registration: kind `unikernel`, loaded by `hcr serve` like any plugin. */
export const registration = defineEngine<UnikernelConfigTable>({
  apiVersion: ENGINE_API_VERSION,
  kind: 'unikernel',
  description: 'unikernel images (urunc annotations) as single-application VMs on QEMU, Firecracker or Solo5',
  configSchema: fieldSchema(unikernelConfigFields),
  create(config, context) {
    if (!accelSettings.includes(config.accel as AccelSetting)) {
      return errAsync(
        errors.invalidArgument(`accel must be one of ${accelSettings.join(', ')}, got "${config.accel}"`, 'accel'),
      );
    }
    for (const key of [
      'default_memory_mib',
      'default_vcpus',
      'start_timeout_seconds',
      'kvm_probe_timeout_seconds',
    ] as const) {
      if (!(config[key] > 0))
        return errAsync(errors.invalidArgument(`${key} must be positive, got ${config[key]}`, key));
    }
    for (const t of config.graceful_stop_types) {
      if (!(unikernelTypes as readonly string[]).includes(t)) {
        return errAsync(
          errors.invalidArgument(
            `graceful_stop_types: "${t}" is not a unikernel type (known: ${unikernelTypes.join(', ')})`,
            'graceful_stop_types',
          ),
        );
      }
    }
    const monitors = [
      new QemuMonitor({
        binary: config.qemu_binary,
        accel: config.accel as AccelSetting,
        probeTimeoutMs: config.kvm_probe_timeout_seconds * 1000,
        startTimeoutMs: config.start_timeout_seconds * 1000,
      }),
      new FirecrackerMonitor(),
      new Solo5Monitor('hvt'),
      new Solo5Monitor('spt'),
    ];
    return ResultAsync.fromPromise(
      UnikernelEngine.create(
        context.name,
        {
          defaultMemoryMiB: config.default_memory_mib,
          defaultVcpus: config.default_vcpus,
          gracefulStopTypes: config.graceful_stop_types as readonly UnikernelType[],
        },
        context,
        monitors,
      ),
      (e) => errors.internal(`creating unikernel engine "${context.name}": ${(e as Error).message}`, e),
    );
  },
});

export default registration;

export { UnikernelEngine, unikernelCapabilities, mergeEnv, memoryMiB, vcpus } from './engine.js';
export * from './annotations.js';
export { buildCmdline, prefixToNetmask, type GuestNetwork, type CmdlineInput } from './cmdline.js';
export type { Monitor, LaunchRequest, GuestExit, GuestNic, MonitorAvailability } from './monitor.js';
export { QemuMonitor, qemuArgv, decodeQemuExit, kvmProbeRom, type AccelChoice, type AccelSetting } from './qemu.js';
export { Solo5Monitor, solo5Argv } from './solo5.js';
export { FirecrackerMonitor, firecrackerArgv, firecrackerConfig } from './firecracker.js';
export { resolveInRoot } from './rootfs-path.js';

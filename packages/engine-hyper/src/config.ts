import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { errors, fieldSchema, type ConfigOf, type HcrError, type Result, err, ok } from '@hcr/core';

/** Where scripts/setup-assets.sh points `current`. */
export const DEFAULT_ASSETS_DIR = '/var/lib/hcr/assets/hyper/current';

/** Documented config keys of the hyper engine (`[engines.NAME]` with `kind = "hyper"`). */
export const hyperConfigFields = [
  {
    key: 'qemu_binary',
    type: 'string',
    default: 'qemu-system-x86_64',
    description: 'QEMU system emulator (name on PATH or absolute path).',
  },
  {
    key: 'assets_dir',
    type: 'string',
    default: DEFAULT_ASSETS_DIR,
    description: 'Guest assets built by packages/engine-hyper/scripts/setup-assets.sh.',
  },
  {
    key: 'kernel',
    type: 'string',
    default: '',
    description: 'Guest kernel; empty = assets_dir/vmlinux (PVH boot) or, without it, assets_dir/vmlinuz.',
  },
  {
    key: 'initrd',
    type: 'string',
    default: '',
    description: 'Guest initramfs holding the agent; empty = assets_dir/initrd.img.',
  },
  {
    key: 'kvm',
    type: 'string',
    default: 'auto',
    description:
      '"auto": KVM when a bounded probe boots the guest kernel under it, else TCG; "on": always KVM; "off": always TCG.',
  },
  {
    key: 'kvm_probe_timeout_seconds',
    type: 'number',
    default: 10,
    description: 'Bound on the KVM probe boot (a working KVM reaches the guest userspace in about a second).',
  },
  {
    key: 'boot_timeout_seconds',
    type: 'number',
    default: 30,
    description: 'Watchdog of every VM start: no agent hello within this time kills the VM and fails the pod.',
  },
  {
    key: 'request_timeout_seconds',
    type: 'number',
    default: 60,
    description: 'Bound on one agent request (container setup over 9p under TCG can take seconds).',
  },
  { key: 'default_vcpus', type: 'number', default: 1, description: 'vCPUs of a pod that sets no CPU limit.' },
  {
    key: 'default_memory_mib',
    type: 'number',
    default: 256,
    description: 'Memory of a pod that sets no memory limit.',
  },
  {
    key: 'vcpu_overhead',
    type: 'number',
    default: 0,
    description: 'vCPUs added to a pod whose CPU limit sizes the VM.',
  },
  {
    key: 'memory_overhead_mib',
    type: 'number',
    default: 96,
    description: 'Memory added to a pod whose memory limit sizes the VM (guest kernel, agent, page cache).',
  },
  {
    key: 'max_vcpus',
    type: 'number',
    default: 0,
    description: 'Upper bound on vCPUs per VM; 0 = the host CPU count.',
  },
  {
    key: 'template',
    type: 'boolean',
    default: false,
    description:
      'Start pod VMs from a saved template VM (one per size, built once, kept under the engine state dir) instead of booting each kernel; a pod whose template is missing or broken boots normally.',
  },
] as const;

/** The raw parsed config table. */
export type HyperConfigTable = ConfigOf<typeof hyperConfigFields>;

/** The config schema `hcr serve` validates `[engines.NAME]` with. */
export const hyperConfigSchema = fieldSchema(hyperConfigFields);

/** KVM policy. */
export type KvmSetting = 'auto' | 'on' | 'off';

/** Validated config with paths resolved. */
export interface HyperConfig {
  readonly qemuBinary: string;
  readonly kernel: string;
  readonly initrd: string;
  readonly kvm: KvmSetting;
  readonly kvmProbeTimeoutMs: number;
  readonly bootTimeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly defaultVcpus: number;
  readonly defaultMemoryMiB: number;
  readonly vcpuOverhead: number;
  readonly memoryOverheadMiB: number;
  readonly maxVcpus: number;
  /** Whether pod VMs start from templates (see template.ts). */
  readonly template: boolean;
}

/** Checks values the schema cannot (enums, ranges) and resolves default paths. */
export function resolveConfig(t: HyperConfigTable, hostCpus: number): Result<HyperConfig, HcrError> {
  const kvm = t.kvm as KvmSetting;
  if (!['auto', 'on', 'off'].includes(kvm)) {
    return err(errors.invalidArgument(`kvm must be "auto", "on" or "off", got "${t.kvm}"`, 'kvm'));
  }
  const positive = [
    'kvm_probe_timeout_seconds',
    'boot_timeout_seconds',
    'request_timeout_seconds',
    'default_vcpus',
    'default_memory_mib',
  ] as const;
  for (const key of positive) {
    if (!(t[key] > 0)) return err(errors.invalidArgument(`${key} must be positive, got ${t[key]}`, key));
  }
  for (const key of ['vcpu_overhead', 'memory_overhead_mib', 'max_vcpus'] as const) {
    if (!(t[key] >= 0)) return err(errors.invalidArgument(`${key} must not be negative, got ${t[key]}`, key));
  }
  const vmlinux = join(t.assets_dir, 'vmlinux');
  return ok({
    qemuBinary: t.qemu_binary,
    kernel: t.kernel !== '' ? t.kernel : existsSync(vmlinux) ? vmlinux : join(t.assets_dir, 'vmlinuz'),
    initrd: t.initrd !== '' ? t.initrd : join(t.assets_dir, 'initrd.img'),
    kvm,
    kvmProbeTimeoutMs: t.kvm_probe_timeout_seconds * 1000,
    bootTimeoutMs: t.boot_timeout_seconds * 1000,
    requestTimeoutMs: t.request_timeout_seconds * 1000,
    defaultVcpus: Math.floor(t.default_vcpus),
    defaultMemoryMiB: Math.floor(t.default_memory_mib),
    vcpuOverhead: Math.floor(t.vcpu_overhead),
    memoryOverheadMiB: Math.floor(t.memory_overhead_mib),
    maxVcpus: t.max_vcpus > 0 ? Math.floor(t.max_vcpus) : hostCpus,
    template: t.template,
  });
}

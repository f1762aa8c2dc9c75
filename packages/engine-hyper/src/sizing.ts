import type { LinuxResources, SandboxSpec } from '@hcr/core';
import type { HyperConfig } from './config.js';

/** vCPUs and memory of a pod VM. */
export interface VmSize {
  readonly vcpus: number;
  readonly memoryMiB: number;
}

const MiB = 1024 * 1024;
/** Below this the guest kernel, the agent and a shell do not fit. */
const MIN_MEMORY_MIB = 128;

function cpus(r: LinuxResources | null): number {
  return r !== null && r.cpuQuota > 0 && r.cpuPeriod > 0 ? r.cpuQuota / r.cpuPeriod : 0;
}

/**
 * Sizes the VM from the pod's resources: the containers' CPU and memory
 * limits (what the kubelet passes as the pod's resources) plus the
 * RuntimeClass overhead plus the engine's configured overhead. A pod without
 * limits gets the configured defaults. vCPUs never exceed `maxVcpus`.
 */
export function vmSize(spec: SandboxSpec, config: HyperConfig): VmSize {
  const { resources, overhead } = spec.linux;
  const limitCpus = cpus(resources);
  const vcpus = limitCpus > 0 ? Math.ceil(limitCpus + cpus(overhead)) + config.vcpuOverhead : config.defaultVcpus;
  const limitMem = resources?.memoryLimitInBytes ?? 0;
  const memoryMiB =
    limitMem > 0
      ? Math.ceil((limitMem + (overhead?.memoryLimitInBytes ?? 0)) / MiB) + config.memoryOverheadMiB
      : config.defaultMemoryMiB;
  return {
    vcpus: Math.max(1, Math.min(vcpus, config.maxVcpus)),
    memoryMiB: Math.max(MIN_MEMORY_MIB, memoryMiB),
  };
}

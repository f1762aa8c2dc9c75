/**
 * Translation between CRI wire messages and core's domain types. Nothing else
 * in HCR sees protobuf shapes (the Kata "translation module" rule).
 */
import {
  emptyResources,
  errors,
  type ContainerSecurity,
  type ContainerSpec,
  type ContainerStats,
  type ContainerView,
  type HcrError,
  type ImageInfo,
  type LinuxResources,
  type NamespaceMode,
  type NamespaceOptions,
  type SandboxSpec,
  type SandboxStats,
  type SandboxView,
  type SecurityProfile,
} from '@hcr/core';
import type { ContainerConfig__Output } from './generated/runtime/v1/ContainerConfig.js';
import type { Container } from './generated/runtime/v1/Container.js';
import type { ContainerStats as WireContainerStats } from './generated/runtime/v1/ContainerStats.js';
import type { ContainerStatus } from './generated/runtime/v1/ContainerStatus.js';
import type { Image } from './generated/runtime/v1/Image.js';
import type {
  LinuxContainerResources__Output,
  LinuxContainerResources,
} from './generated/runtime/v1/LinuxContainerResources.js';
import type { NamespaceOption__Output } from './generated/runtime/v1/NamespaceOption.js';
import type { PodSandbox } from './generated/runtime/v1/PodSandbox.js';
import type { PodSandboxConfig__Output } from './generated/runtime/v1/PodSandboxConfig.js';
import type { PodSandboxStats as WirePodSandboxStats } from './generated/runtime/v1/PodSandboxStats.js';
import type { PodSandboxStatus } from './generated/runtime/v1/PodSandboxStatus.js';
import type { SecurityProfile__Output } from './generated/runtime/v1/SecurityProfile.js';
import type { ContainerRecord } from '@hcr/core';

/** Parses a wire int64 (a decimal string) into a safe number; refuses absurd values. */
export function int(v: string | number | undefined | null, field: string): number {
  if (v === undefined || v === null || v === '') return 0;
  const n = typeof v === 'number' ? v : Number(v);
  if (!Number.isSafeInteger(n)) throw errors.invalidArgument(`${field} is out of range`, field);
  return n;
}

function mode(m: string | undefined): NamespaceMode {
  switch (m) {
    case 'CONTAINER':
      return 'container';
    case 'NODE':
      return 'node';
    case 'TARGET':
      return 'target';
    default:
      return 'pod';
  }
}

function namespaces(n: NamespaceOption__Output | null | undefined, defaultPid: NamespaceMode): NamespaceOptions {
  return {
    network: mode(n?.network),
    pid: n === null || n === undefined ? defaultPid : mode(n.pid),
    ipc: mode(n?.ipc),
    targetId: n?.targetId ?? '',
  };
}

function profile(p: SecurityProfile__Output | null | undefined, legacy: string): SecurityProfile | null {
  if (p !== null && p !== undefined) {
    switch (p.profileType) {
      case 'Unconfined':
        return { type: 'unconfined', localhostRef: '' };
      case 'Localhost':
        return { type: 'localhost', localhostRef: p.localhostRef };
      default:
        return { type: 'runtimeDefault', localhostRef: '' };
    }
  }
  if (legacy === '') return null;
  if (legacy === 'unconfined') return { type: 'unconfined', localhostRef: '' };
  if (legacy === 'runtime/default' || legacy === 'docker/default') return { type: 'runtimeDefault', localhostRef: '' };
  if (legacy.startsWith('localhost/')) return { type: 'localhost', localhostRef: legacy.slice('localhost/'.length) };
  throw errors.invalidArgument(
    `security profile ${JSON.stringify(legacy)} is not one of "runtime/default", "docker/default", "unconfined" or "localhost/<path>"`,
  );
}

/** Wire resources → domain. */
export function resourcesFromWire(r: LinuxContainerResources__Output | null | undefined): LinuxResources {
  if (r === null || r === undefined) return emptyResources;
  return {
    cpuPeriod: int(r.cpuPeriod, 'resources.cpu_period'),
    cpuQuota: int(r.cpuQuota, 'resources.cpu_quota'),
    cpuShares: int(r.cpuShares, 'resources.cpu_shares'),
    memoryLimitInBytes: int(r.memoryLimitInBytes, 'resources.memory_limit_in_bytes'),
    oomScoreAdj: int(r.oomScoreAdj, 'resources.oom_score_adj'),
    cpusetCpus: r.cpusetCpus ?? '',
    cpusetMems: r.cpusetMems ?? '',
    memorySwapLimitInBytes: int(r.memorySwapLimitInBytes, 'resources.memory_swap_limit_in_bytes'),
    unified: r.unified ?? {},
  };
}

/** Domain resources → wire. */
export function resourcesToWire(r: LinuxResources): LinuxContainerResources {
  return {
    cpuPeriod: String(r.cpuPeriod),
    cpuQuota: String(r.cpuQuota),
    cpuShares: String(r.cpuShares),
    memoryLimitInBytes: String(r.memoryLimitInBytes),
    oomScoreAdj: String(r.oomScoreAdj),
    cpusetCpus: r.cpusetCpus,
    cpusetMems: r.cpusetMems,
    unified: { ...r.unified },
    memorySwapLimitInBytes: String(r.memorySwapLimitInBytes),
  };
}

/** RunPodSandboxRequest.config + runtime_handler → SandboxSpec. */
export function sandboxSpecFromWire(config: PodSandboxConfig__Output | null, runtimeHandler: string): SandboxSpec {
  if (config === null) throw errors.invalidArgument('config is required', 'config');
  const md = config.metadata;
  if (md === null)
    throw errors.invalidArgument('config.metadata is required (name, uid, namespace)', 'config.metadata');
  const linux = config.linux;
  const sc = linux?.securityContext ?? null;
  return {
    metadata: { name: md.name, uid: md.uid, namespace: md.namespace, attempt: md.attempt },
    hostname: config.hostname,
    logDirectory: config.logDirectory,
    dns:
      config.dnsConfig === null
        ? null
        : { servers: config.dnsConfig.servers, searches: config.dnsConfig.searches, options: config.dnsConfig.options },
    portMappings: config.portMappings.map((p) => ({
      protocol: p.protocol === 'UDP' ? 'udp' : p.protocol === 'SCTP' ? 'sctp' : 'tcp',
      containerPort: p.containerPort,
      hostPort: p.hostPort,
      hostIp: p.hostIp,
    })),
    labels: config.labels,
    annotations: config.annotations,
    runtimeHandler,
    linux: {
      cgroupParent: linux?.cgroupParent ?? '',
      sysctls: linux?.sysctls ?? {},
      namespaces: namespaces(sc?.namespaceOptions, 'pod'),
      privileged: sc?.privileged ?? false,
      runAsUser: sc?.runAsUser ? int(sc.runAsUser.value, 'run_as_user') : null,
      runAsGroup: sc?.runAsGroup ? int(sc.runAsGroup.value, 'run_as_group') : null,
      supplementalGroups: (sc?.supplementalGroups ?? []).map((g) => int(g, 'supplemental_groups')),
      readonlyRootfs: sc?.readonlyRootfs ?? false,
      seccomp: profile(sc?.seccomp, sc?.seccompProfilePath ?? ''),
      overhead: linux?.overhead ? resourcesFromWire(linux.overhead) : null,
      resources: linux?.resources ? resourcesFromWire(linux.resources) : null,
    },
  };
}

/** CreateContainerRequest.config → ContainerSpec. */
export function containerSpecFromWire(config: ContainerConfig__Output | null): ContainerSpec {
  if (config === null) throw errors.invalidArgument('config is required', 'config');
  if (config.metadata === null) throw errors.invalidArgument('config.metadata (name) is required', 'config.metadata');
  if (config.image === null || config.image.image === '') {
    throw errors.invalidArgument('config.image.image is required', 'config.image');
  }
  const sc = config.linux?.securityContext ?? null;
  if (sc?.runAsGroup && !sc.runAsUser && (sc.runAsUsername ?? '') === '') {
    throw errors.invalidArgument(
      'run_as_group is set without run_as_user or run_as_username; a group alone cannot pick the user to run as',
      'config.linux.security_context.run_as_group',
    );
  }
  const security: ContainerSecurity = {
    privileged: sc?.privileged ?? false,
    capabilities: {
      add: sc?.capabilities?.addCapabilities ?? [],
      drop: sc?.capabilities?.dropCapabilities ?? [],
    },
    namespaces: namespaces(sc?.namespaceOptions, 'container'),
    runAsUser: sc?.runAsUser ? int(sc.runAsUser.value, 'run_as_user') : null,
    runAsUsername: sc?.runAsUsername ?? '',
    runAsGroup: sc?.runAsGroup ? int(sc.runAsGroup.value, 'run_as_group') : null,
    supplementalGroups: (sc?.supplementalGroups ?? []).map((g) => int(g, 'supplemental_groups')),
    readonlyRootfs: sc?.readonlyRootfs ?? false,
    noNewPrivs: sc?.noNewPrivs ?? false,
    maskedPaths: sc?.maskedPaths ?? [],
    readonlyPaths: sc?.readonlyPaths ?? [],
    seccomp: profile(sc?.seccomp, sc?.seccompProfilePath ?? ''),
    apparmor: profile(sc?.apparmor, sc?.apparmorProfile ?? ''),
  };
  return {
    metadata: { name: config.metadata.name, attempt: config.metadata.attempt },
    image: config.image.image,
    command: config.command,
    args: config.args,
    workingDir: config.workingDir,
    envs: config.envs.map((e) => ({
      key: e.key,
      value: Buffer.isBuffer(e.value) ? e.value.toString('utf8') : String(e.value),
    })),
    mounts: config.mounts.map((m) => ({
      containerPath: m.containerPath,
      hostPath: m.hostPath,
      readonly: m.readonly,
      selinuxRelabel: m.selinuxRelabel,
      propagation:
        m.propagation === 'PROPAGATION_HOST_TO_CONTAINER'
          ? 'hostToContainer'
          : m.propagation === 'PROPAGATION_BIDIRECTIONAL'
            ? 'bidirectional'
            : 'private',
    })),
    devices: config.devices.map((d) => ({
      containerPath: d.containerPath,
      hostPath: d.hostPath,
      permissions: d.permissions,
    })),
    labels: config.labels,
    annotations: config.annotations,
    logPath: config.logPath,
    stdin: config.stdin,
    stdinOnce: config.stdinOnce,
    tty: config.tty,
    linux: { resources: resourcesFromWire(config.linux?.resources), security },
  };
}

const wireMode = (m: NamespaceMode): 'POD' | 'CONTAINER' | 'NODE' | 'TARGET' =>
  m === 'container' ? 'CONTAINER' : m === 'node' ? 'NODE' : m === 'target' ? 'TARGET' : 'POD';

/** SandboxView → PodSandboxStatus. */
export function sandboxStatusToWire(view: SandboxView): PodSandboxStatus {
  const r = view.record;
  const [primary, ...rest] = r.network.ips;
  return {
    id: r.id,
    metadata: { ...r.spec.metadata },
    state: view.state === 'ready' ? 'SANDBOX_READY' : 'SANDBOX_NOTREADY',
    createdAt: r.createdAt.toString(),
    network: { ip: primary ?? '', additionalIps: rest.map((ip) => ({ ip })) },
    linux: {
      namespaces: {
        options: {
          network: wireMode(r.spec.linux.namespaces.network),
          pid: wireMode(r.spec.linux.namespaces.pid),
          ipc: wireMode(r.spec.linux.namespaces.ipc),
          targetId: r.spec.linux.namespaces.targetId,
        },
      },
    },
    labels: { ...r.spec.labels },
    annotations: { ...r.spec.annotations },
    runtimeHandler: r.spec.runtimeHandler,
  };
}

/** Verbose PodSandboxStatus info: the engine, the router's reason, the network. */
export function sandboxInfo(view: SandboxView): Record<string, string> {
  const r = view.record;
  return {
    info: JSON.stringify({
      engine: r.engine,
      routing: r.routing,
      netns: r.network.netnsPath,
      network: { ips: r.network.ips, interfaces: r.network.interfaces, gateway: r.network.gateway },
      phase: r.phase,
      runtimeDir: r.runtimeDir,
      runtimeHandler: r.spec.runtimeHandler,
      config: r.spec,
    }),
  };
}

/** SandboxView → PodSandbox (ListPodSandbox). */
export function sandboxToWire(view: SandboxView): PodSandbox {
  const r = view.record;
  return {
    id: r.id,
    metadata: { ...r.spec.metadata },
    state: view.state === 'ready' ? 'SANDBOX_READY' : 'SANDBOX_NOTREADY',
    createdAt: r.createdAt.toString(),
    labels: { ...r.spec.labels },
    annotations: { ...r.spec.annotations },
    runtimeHandler: r.spec.runtimeHandler,
  };
}

const wireState = (s: ContainerView['state']) =>
  s === 'created'
    ? ('CONTAINER_CREATED' as const)
    : s === 'running'
      ? ('CONTAINER_RUNNING' as const)
      : s === 'exited'
        ? ('CONTAINER_EXITED' as const)
        : ('CONTAINER_UNKNOWN' as const);

/** Image name to report for a container: the tag the user asked for when the image has it. */
function imageName(r: ContainerRecord): string {
  return r.image.repoTags.find((t) => t === r.imageRef) ?? r.image.repoTags[0] ?? r.imageRef;
}

/** ContainerView → Container (ListContainers). */
export function containerToWire(view: ContainerView): Container {
  const r = view.record;
  return {
    id: r.id,
    podSandboxId: r.sandboxId,
    metadata: { ...r.spec.metadata },
    image: { image: imageName(r), annotations: {}, userSpecifiedImage: r.imageRef },
    imageRef: r.image.id,
    imageId: r.image.id,
    state: wireState(view.state),
    createdAt: r.createdAt.toString(),
    labels: { ...r.spec.labels },
    annotations: { ...r.spec.annotations },
  };
}

/** ContainerView → ContainerStatus. */
export function containerStatusToWire(view: ContainerView): ContainerStatus {
  const r = view.record;
  return {
    id: r.id,
    metadata: { ...r.spec.metadata },
    state: wireState(view.state),
    createdAt: r.createdAt.toString(),
    startedAt: r.startedAt.toString(),
    finishedAt: r.finishedAt.toString(),
    exitCode: r.exitCode,
    image: { image: imageName(r), annotations: {}, userSpecifiedImage: r.imageRef },
    imageRef: r.image.repoDigests[0] ?? r.image.id,
    imageId: r.image.id,
    reason: r.reason,
    message: r.message,
    labels: { ...r.spec.labels },
    annotations: { ...r.spec.annotations },
    mounts: r.spec.mounts.map((m) => ({
      containerPath: m.containerPath,
      hostPath: m.hostPath,
      readonly: m.readonly,
      selinuxRelabel: m.selinuxRelabel,
      propagation:
        m.propagation === 'hostToContainer'
          ? 'PROPAGATION_HOST_TO_CONTAINER'
          : m.propagation === 'bidirectional'
            ? 'PROPAGATION_BIDIRECTIONAL'
            : 'PROPAGATION_PRIVATE',
    })),
    logPath: r.logPath,
    resources: { linux: resourcesToWire(r.spec.linux.resources) },
  };
}

/** ImageInfo → Image. `uid`/`username` come from the image's USER, as kubelet expects. */
export function imageToWire(image: ImageInfo): Image {
  const user = image.config.user.split(':')[0] ?? '';
  const numeric = /^\d+$/.test(user);
  return {
    id: image.id,
    repoTags: [...image.repoTags],
    repoDigests: [...image.repoDigests],
    size: String(image.size),
    ...(numeric ? { uid: { value: user } } : {}),
    username: numeric ? '' : user,
    spec: { image: image.id, annotations: { ...image.config.annotations } },
    pinned: image.pinned,
  };
}

/** Container stats → wire. */
export function containerStatsToWire(record: ContainerRecord, s: ContainerStats): WireContainerStats {
  const ts = s.timestamp.toString();
  return {
    attributes: {
      id: record.id,
      metadata: { ...record.spec.metadata },
      labels: { ...record.spec.labels },
      annotations: { ...record.spec.annotations },
    },
    cpu: { timestamp: ts, usageCoreNanoSeconds: { value: s.cpuUsageCoreNanoSeconds.toString() } },
    memory: {
      timestamp: ts,
      workingSetBytes: { value: String(s.memoryWorkingSetBytes) },
      usageBytes: { value: String(s.memoryUsageBytes) },
    },
    writableLayer: {
      timestamp: ts,
      fsId: { mountpoint: '/' },
      usedBytes: { value: String(s.writableLayerBytes) },
    },
  };
}

/** Pod stats → wire. */
export function sandboxStatsToWire(
  view: SandboxView['record'],
  s: SandboxStats,
  containers: { record: ContainerRecord; stats: ContainerStats }[],
): WirePodSandboxStats {
  const ts = s.timestamp.toString();
  return {
    attributes: {
      id: view.id,
      metadata: { ...view.spec.metadata },
      labels: { ...view.spec.labels },
      annotations: { ...view.spec.annotations },
    },
    linux: {
      cpu: { timestamp: ts, usageCoreNanoSeconds: { value: s.cpuUsageCoreNanoSeconds.toString() } },
      memory: {
        timestamp: ts,
        workingSetBytes: { value: String(s.memoryWorkingSetBytes) },
        usageBytes: { value: String(s.memoryUsageBytes) },
      },
      ...(s.network === null
        ? {}
        : {
            network: {
              timestamp: ts,
              defaultInterface: {
                name: 'eth0',
                rxBytes: { value: String(s.network.rxBytes) },
                txBytes: { value: String(s.network.txBytes) },
              },
            },
          }),
      process: { timestamp: ts, processCount: { value: String(s.processes) } },
      containers: containers.map((c) => containerStatsToWire(c.record, c.stats)),
    },
  };
}

/** A gRPC-friendly throw helper for converters. */
export type ConvertError = HcrError;

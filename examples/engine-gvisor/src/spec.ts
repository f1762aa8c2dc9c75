import { posix } from 'node:path';
import {
  errors,
  type ContainerSpec,
  type HcrError,
  type ImageConfig,
  type LinuxResources,
  type NamespaceMode,
  type SandboxRef,
  type SandboxSpec,
  containerCapabilities,
} from '@hcr/core';
import { err, ok, type Result } from 'neverthrow';
import { match } from 'ts-pattern';
import {
  CriAnnotation,
  OCI_VERSION,
  type OciCapabilities,
  type OciMount,
  type OciNamespace,
  type OciResources,
  type OciSpec,
} from './oci.js';
import { PAUSE_PATH } from './pause.js';
import type { ResolvedUser } from './user.js';

/** PATH for containers whose image sets none (the one Docker and containerd use). */
export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Where the pause root filesystem lives and how the sandbox is confined on the host. */
export interface SandboxSpecOptions {
  readonly pauseRootfs: string;
  /** cgroupfs path of the pod, or null to leave cgroups alone. */
  readonly cgroupsPath: string | null;
}

/**
 * The OCI spec of a pod's first container: the pause program in the pod's
 * network namespace, marked as the sandbox so runsc starts a new gVisor
 * kernel for it. Pod-level limits go on it because the sandbox's cgroup holds
 * the whole gVisor kernel, and with it every container's memory.
 */
export function sandboxOciSpec(sandbox: SandboxRef, opts: SandboxSpecOptions): Result<OciSpec, HcrError> {
  const netns = sandbox.network.netnsPath;
  if (netns === null) {
    return err(errors.unsupported('gvisor', 'hostNetwork', 'the gvisor engine needs a pod network namespace'));
  }
  const spec = sandbox.spec;
  const resources = podResources(spec);
  return ok({
    ociVersion: OCI_VERSION,
    process: {
      terminal: false,
      // The pause program needs nothing: the id Kubernetes runs pause as, no capabilities.
      user: { uid: 65535, gid: 65535 },
      args: [PAUSE_PATH],
      env: [],
      cwd: '/',
      capabilities: capabilitySet([]),
      noNewPrivileges: true,
    },
    root: { path: opts.pauseRootfs, readonly: true },
    hostname: podHostname(spec),
    mounts: systemMounts(),
    annotations: {
      [CriAnnotation.containerType]: 'sandbox',
      [CriAnnotation.sandboxId]: sandbox.id,
      [CriAnnotation.sandboxName]: spec.metadata.name,
      [CriAnnotation.sandboxNamespace]: spec.metadata.namespace,
      [CriAnnotation.sandboxUid]: spec.metadata.uid,
    },
    linux: {
      namespaces: [
        { type: 'pid' },
        { type: 'ipc' },
        { type: 'uts' },
        { type: 'mount' },
        { type: 'network', path: netns },
      ],
      ...(opts.cgroupsPath === null ? {} : { cgroupsPath: opts.cgroupsPath }),
      ...(resources === null ? {} : { resources }),
    },
  });
}

/** The pod's resource limits: the sum the kubelet passed plus the RuntimeClass overhead; null when nothing is limited. */
export function podResources(spec: SandboxSpec): OciResources | null {
  const sum = spec.linux.resources;
  const overhead = spec.linux.overhead;
  if (sum === null && overhead === null) return null;
  const add = (f: (r: LinuxResources) => number): number =>
    (sum === null ? 0 : f(sum)) + (overhead === null ? 0 : f(overhead));
  const memory = sum !== null && sum.memoryLimitInBytes > 0 ? add((r) => r.memoryLimitInBytes) : 0;
  const period = (sum?.cpuPeriod || overhead?.cpuPeriod) ?? 0;
  const quota = sum !== null && sum.cpuQuota > 0 ? add((r) => r.cpuQuota) : 0;
  const shares = add((r) => r.cpuShares);
  const cpus = sum?.cpusetCpus ?? '';
  const mems = sum?.cpusetMems ?? '';
  const cpu = {
    ...(shares > 0 ? { shares } : {}),
    ...(quota > 0 ? { quota, period: period > 0 ? period : 100_000 } : {}),
    ...(cpus !== '' ? { cpus } : {}),
    ...(mems !== '' ? { mems } : {}),
  };
  const out: OciResources = {
    ...(memory > 0 ? { memory: { limit: memory } } : {}),
    ...(Object.keys(cpu).length > 0 ? { cpu } : {}),
  };
  return Object.keys(out).length === 0 ? null : out;
}

/** What a container spec is made from besides the CRI request. */
export interface ContainerSpecInput {
  readonly id: string;
  readonly sandbox: SandboxRef;
  readonly spec: ContainerSpec;
  readonly image: ImageConfig;
  /** The image name as the user gave it, for annotations. */
  readonly imageName: string;
  /** Mounted, writable root filesystem from the image service. */
  readonly rootfs: string;
  readonly user: ResolvedUser;
}

/**
 * The OCI spec of an application container: the CRI request applied on top
 * of the image config, the pod's hosts/resolv.conf/hostname files mounted in,
 * and the annotations that put it into its pod's gVisor sandbox.
 */
export function containerOciSpec(input: ContainerSpecInput): Result<OciSpec, HcrError> {
  const { spec, sandbox } = input;
  const security = spec.linux.security;
  const argv = resolveArgv(spec.command, spec.args, input.image);
  if (argv.isErr()) return err(argv.error);
  if (spec.devices.length > 0) {
    return err(
      errors.unsupported(
        'gvisor',
        'devices',
        'the gvisor engine cannot pass host devices into a sandbox (gVisor emulates its own /dev)',
      ),
    );
  }
  const namespaces = containerNamespaces(security.namespaces.pid, security.namespaces.ipc, sandbox);
  if (namespaces.isErr()) return err(namespaces.error);
  const mounts = containerMounts(input);
  if (mounts.isErr()) return err(mounts.error);
  const hostname = podHostname(sandbox.spec);
  const env = mergeEnv(input.image.env, spec.envs);
  if (!env.some((e) => e.startsWith('PATH='))) env.unshift(`PATH=${DEFAULT_PATH}`);
  if (!env.some((e) => e.startsWith('HOSTNAME='))) env.push(`HOSTNAME=${hostname}`);
  if (!env.some((e) => e.startsWith('HOME='))) env.push(`HOME=${input.user.home}`);
  const caps = capabilities(security.capabilities.add, security.capabilities.drop);
  if (caps.isErr()) return err(caps.error);
  return ok({
    ociVersion: OCI_VERSION,
    process: {
      terminal: false,
      user: {
        uid: input.user.uid,
        gid: input.user.gid,
        ...(input.user.additionalGids.length > 0 ? { additionalGids: input.user.additionalGids } : {}),
      },
      args: argv.value,
      env,
      cwd: spec.workingDir || input.image.workingDir || '/',
      capabilities: capabilitySet(caps.value),
      noNewPrivileges: security.noNewPrivs,
    },
    root: { path: input.rootfs, readonly: security.readonlyRootfs },
    hostname,
    mounts: mounts.value,
    annotations: {
      [CriAnnotation.containerType]: 'container',
      [CriAnnotation.sandboxId]: sandbox.id,
      [CriAnnotation.sandboxName]: sandbox.spec.metadata.name,
      [CriAnnotation.sandboxNamespace]: sandbox.spec.metadata.namespace,
      [CriAnnotation.sandboxUid]: sandbox.spec.metadata.uid,
      [CriAnnotation.containerName]: spec.metadata.name,
      [CriAnnotation.imageName]: input.imageName,
    },
    linux: {
      namespaces: namespaces.value,
      ...(security.maskedPaths.length > 0 ? { maskedPaths: security.maskedPaths } : {}),
      ...(security.readonlyPaths.length > 0 ? { readonlyPaths: security.readonlyPaths } : {}),
    },
  });
}

/**
 * The process arguments by the Kubernetes rules: `command` replaces the
 * image's ENTRYPOINT (and drops its CMD), `args` replace the image's CMD.
 */
export function resolveArgv(
  command: readonly string[],
  args: readonly string[],
  image: ImageConfig,
): Result<string[], HcrError> {
  const entrypoint = command.length > 0 ? command : image.entrypoint;
  const cmd = command.length > 0 || args.length > 0 ? args : image.cmd;
  const argv = [...entrypoint, ...cmd];
  if (argv.length === 0) {
    return err(
      errors.invalidArgument(
        'the container has no command: the image defines neither ENTRYPOINT nor CMD, so set command or args',
        'config.command',
      ),
    );
  }
  return ok(argv);
}

/** The image's environment with the CRI variables applied on top (CRI wins, image order kept). */
export function mergeEnv(image: readonly string[], cri: readonly { key: string; value: string }[]): string[] {
  const env = new Map<string, string>();
  for (const entry of image) {
    const eq = entry.indexOf('=');
    env.set(eq === -1 ? entry : entry.slice(0, eq), eq === -1 ? '' : entry.slice(eq + 1));
  }
  for (const { key, value } of cri) env.set(key, value);
  return [...env].map(([k, v]) => `${k}=${v}`);
}

/** The container's capability set under CRI rules (core's one implementation, as containerd orders it). */
export function capabilities(add: readonly string[], drop: readonly string[]): Result<string[], HcrError> {
  return containerCapabilities(add, drop);
}

function capabilitySet(caps: readonly string[]): OciCapabilities {
  // Inheritable stays empty (as in containerd since CVE-2022-24769): exec'd binaries get no file-cap boost.
  return { bounding: caps, effective: caps, permitted: caps, inheritable: [], ambient: [] };
}

/**
 * Namespaces inside the sandbox. gVisor implements them itself: a PID
 * namespace entry without a path gives the container its own PID namespace,
 * and leaving it out puts the container into the sandbox's root one, where
 * pause is PID 1 — Kubernetes' shareProcessNamespace. Network and UTS are the
 * sandbox's in any case.
 */
export function containerNamespaces(
  pid: NamespaceMode,
  ipc: NamespaceMode,
  sandbox: SandboxRef,
): Result<OciNamespace[], HcrError> {
  const refuse = (what: string) =>
    err(
      errors.unsupported(
        'gvisor',
        'namespaces',
        `the gvisor engine cannot give a container ${what}: a gVisor sandbox has its own kernel`,
      ),
    );
  const out: OciNamespace[] = [{ type: 'mount' }, { type: 'uts' }];
  const pidNs = match(pid)
    .with('container', () => ok<OciNamespace | null, HcrError>({ type: 'pid' }))
    .with('pod', () => ok<OciNamespace | null, HcrError>(null))
    .with('target', () => refuse("another container's PID namespace (target mode)"))
    .with('node', () => refuse('the host PID namespace'))
    .exhaustive();
  if (pidNs.isErr()) return err(pidNs.error);
  if (pidNs.value !== null) out.push(pidNs.value);
  const ipcNs = match(ipc)
    .with('container', () => ok<OciNamespace | null, HcrError>({ type: 'ipc' }))
    .with('pod', 'target', () => ok<OciNamespace | null, HcrError>(null))
    .with('node', () => refuse('the host IPC namespace'))
    .exhaustive();
  if (ipcNs.isErr()) return err(ipcNs.error);
  if (ipcNs.value !== null) out.push(ipcNs.value);
  if (sandbox.network.netnsPath !== null) out.push({ type: 'network', path: sandbox.network.netnsPath });
  return ok(out);
}

/** /proc, /dev, /sys and friends, all emulated by the gVisor kernel. */
function systemMounts(): OciMount[] {
  return [
    { destination: '/proc', type: 'proc', source: 'proc' },
    {
      destination: '/dev',
      type: 'tmpfs',
      source: 'tmpfs',
      options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'],
    },
    {
      destination: '/dev/pts',
      type: 'devpts',
      source: 'devpts',
      options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'],
    },
    { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777'] },
    { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
  ];
}

function containerMounts(input: ContainerSpecInput): Result<OciMount[], HcrError> {
  const { spec, sandbox } = input;
  const readonly = spec.linux.security.readonlyRootfs;
  const bind = (destination: string, source: string, ro: boolean, propagation = 'rprivate'): OciMount => ({
    destination,
    type: 'bind',
    source,
    options: ['rbind', propagation, ro ? 'ro' : 'rw'],
  });
  const userTargets = new Set(spec.mounts.map((m) => posix.normalize(m.containerPath)));
  const out = systemMounts().filter((m) => !userTargets.has(m.destination));
  // The pod files come before the CRI mounts so that a volume mounted over one of them wins, as with runc.
  const podFiles: [string, string][] = [
    ['/etc/hosts', sandbox.files.hosts],
    ['/etc/resolv.conf', sandbox.files.resolvConf],
    ['/etc/hostname', sandbox.files.hostname],
  ];
  for (const [target, source] of podFiles) if (!userTargets.has(target)) out.push(bind(target, source, readonly));
  for (const [i, m] of spec.mounts.entries()) {
    const propagation = match(m.propagation)
      .with('private', () => 'rprivate')
      // gVisor serves a bind mount through its gofer: what is mounted below the host path when the container
      // starts is visible, later host mounts are not. That is the one-way direction hostToContainer promises
      // at start, so it is accepted; bidirectional needs mounts flowing back to the host and is not.
      .with('hostToContainer', () => 'rslave')
      .with('bidirectional', () => null)
      .exhaustive();
    if (propagation === null) {
      return err(
        errors.unsupported(
          'gvisor',
          'hostPathMounts',
          `config.mounts[${i}] (${m.containerPath}) asks for bidirectional mount propagation, which a gVisor sandbox cannot give`,
        ),
      );
    }
    out.push(bind(m.containerPath, m.hostPath, m.readonly, propagation));
  }
  return ok(out);
}

function podHostname(spec: SandboxSpec): string {
  return spec.hostname !== '' ? spec.hostname : spec.metadata.name.slice(0, 63);
}

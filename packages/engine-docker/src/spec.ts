import {
  errors,
  type ContainerRef,
  type ContainerSecurity,
  type HcrError,
  type ImageConfig,
  type LinuxResources,
  type Mount,
  type SandboxRef,
  type SecurityProfile,
} from '@hcr/core';
import type Docker from 'dockerode';
import { err, ok, type Result } from 'neverthrow';
import { match } from 'ts-pattern';
import type { DeviceMapping } from './host.js';
import { containerLabels, dockerName, sandboxLabels } from './labels.js';

/** Where the pod's netns file is bind-mounted inside the pause container. */
export const NETNS_MOUNT = '/run/hcr-netns';
/** The pause program inside the pause image. */
export const PAUSE_PATH = '/pause';

/** Settings of dockerd's json-file log, which HCR copies into the CRI log. */
export interface DockerLogOptions {
  readonly maxSize: string;
  readonly maxFiles: number;
}

/** The subset of Docker's HostConfig that resource settings map to (create and update). */
export interface DockerResources {
  CpuShares?: number;
  CpuPeriod?: number;
  CpuQuota?: number;
  Memory?: number;
  MemorySwap?: number;
  CpusetCpus?: string;
  CpusetMems?: string;
}

/** A create request plus things worth a warning in the log (settings HCR had to adjust). */
export interface Built<T> {
  readonly value: T;
  readonly warnings: readonly string[];
}

const isHostNetwork = (sandbox: SandboxRef): boolean => sandbox.network.netnsPath === null;

function logConfig(log: DockerLogOptions): Docker.HostConfig['LogConfig'] {
  return { Type: 'json-file', Config: { 'max-size': log.maxSize, 'max-file': String(log.maxFiles) } };
}

/**
 * The pod's infra container. Docker cannot start a container in a netns given
 * by path, so pause gets no network of its own (`none`) and moves itself into
 * the pod netns with setns(2) — hence CAP_SYS_ADMIN and the read-only bind of
 * the netns file; every other capability is dropped. It owns the pod's IPC
 * namespace (`shareable`) and UTS namespace (hostname), and the PID namespace
 * that app containers join when the pod shares one.
 */
export function sandboxCreateOptions(
  sandbox: SandboxRef,
  opts: { readonly engine: string; readonly pauseImage: string; readonly log: DockerLogOptions },
): Docker.ContainerCreateOptions {
  const spec = sandbox.spec;
  const netns = sandbox.network.netnsPath;
  const ns = spec.linux.namespaces;
  // net.* sysctls belong to the pod netns, which core set up; the rest (IPC) belong to pause.
  const sysctls = Object.fromEntries(Object.entries(spec.linux.sysctls).filter(([k]) => !k.startsWith('net.')));
  const hostConfig: Docker.HostConfig = {
    NetworkMode: netns === null ? 'host' : 'none',
    UTSMode: netns === null ? 'host' : '',
    IpcMode: ns.ipc === 'node' ? 'host' : 'shareable',
    PidMode: ns.pid === 'node' ? 'host' : '',
    CapDrop: ['ALL'],
    CapAdd: netns === null ? [] : ['CAP_SYS_ADMIN'],
    SecurityOpt: ['no-new-privileges'],
    ReadonlyRootfs: true,
    RestartPolicy: { Name: 'no', MaximumRetryCount: 0 },
    AutoRemove: false,
    LogConfig: logConfig({ maxSize: '1m', maxFiles: 1 }),
    Mounts: netns === null ? [] : [{ Type: 'bind', Source: netns, Target: NETNS_MOUNT, ReadOnly: true }],
    ...(Object.keys(sysctls).length > 0 ? { Sysctls: sysctls } : {}),
    ...(spec.linux.cgroupParent === '' ? {} : { CgroupParent: spec.linux.cgroupParent }),
  };
  return {
    name: dockerName('sandbox', sandbox.id),
    Image: opts.pauseImage,
    Entrypoint: [PAUSE_PATH],
    Cmd: netns === null ? [] : ['--netns', NETNS_MOUNT],
    ...(netns !== null && spec.hostname !== '' ? { Hostname: spec.hostname } : {}),
    Labels: sandboxLabels(opts.engine, sandbox.id),
    StopSignal: 'SIGTERM',
    HostConfig: hostConfig,
  };
}

/**
 * ENTRYPOINT and CMD by the Kubernetes rules: `command` replaces the image's
 * ENTRYPOINT (and drops its CMD), `args` replace the image's CMD.
 */
export function resolveArgv(
  command: readonly string[],
  args: readonly string[],
  image: ImageConfig,
): Result<{ entrypoint: string[]; cmd: string[] }, HcrError> {
  const entrypoint = [...(command.length > 0 ? command : image.entrypoint)];
  const cmd = [...(command.length > 0 || args.length > 0 ? args : image.cmd)];
  if (entrypoint.length === 0 && cmd.length === 0)
    return err(
      errors.invalidArgument(
        'the container has no command: the image defines neither ENTRYPOINT nor CMD, so set command or args',
        'config.command',
      ),
    );
  return ok({ entrypoint, cmd });
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

/** A CRI capability name (`NET_ADMIN`, `CAP_NET_ADMIN`, `ALL`) in Docker's spelling. */
export function dockerCapability(name: string): string {
  const upper = name.trim().toUpperCase();
  return upper === 'ALL' || upper.startsWith('CAP_') ? upper : `CAP_${upper}`;
}

/** Docker's `User`: the CRI user (name or uid) and group, or '' to keep the image's user. */
export function dockerUser(sec: ContainerSecurity): Result<string, HcrError> {
  const user = sec.runAsUsername !== '' ? sec.runAsUsername : sec.runAsUser === null ? '' : String(sec.runAsUser);
  if (user === '') {
    return sec.runAsGroup === null
      ? ok('')
      : err(
          errors.invalidArgument(
            'run_as_group needs run_as_user or run_as_username in the same security context',
            'config.linux.security_context.run_as_group',
          ),
        );
  }
  return ok(sec.runAsGroup === null ? user : `${user}:${sec.runAsGroup}`);
}

/**
 * Docker security options for a container. An unset seccomp profile means
 * unconfined, as CRI defines it (the kubelet sends `RuntimeDefault` explicitly
 * when it wants Docker's default profile); `localhostProfile` is the already
 * read JSON of a `localhost/…` profile.
 */
export function securityOptions(sec: ContainerSecurity, localhostProfile: string | null): Result<string[], HcrError> {
  const opts: string[] = [];
  if (!sec.privileged) {
    const seccomp = seccompOption(sec.seccomp, localhostProfile);
    if (seccomp.isErr()) return err(seccomp.error);
    if (seccomp.value !== null) opts.push(seccomp.value);
  }
  if (sec.apparmor !== null) {
    const aa = match(sec.apparmor.type)
      .with('runtimeDefault', () => null)
      .with('unconfined', () => 'apparmor=unconfined')
      .with('localhost', () => `apparmor=${sec.apparmor!.localhostRef.replace(/^localhost\//, '')}`)
      .exhaustive();
    if (aa !== null) opts.push(aa);
  }
  if (sec.noNewPrivs) opts.push('no-new-privileges');
  return ok(opts);
}

function seccompOption(profile: SecurityProfile | null, localhost: string | null): Result<string | null, HcrError> {
  if (profile === null) return ok('seccomp=unconfined');
  return match(profile.type)
    .with('runtimeDefault', () => ok<string | null, HcrError>(null))
    .with('unconfined', () => ok('seccomp=unconfined'))
    .with('localhost', () =>
      localhost === null
        ? err(
            errors.invalidArgument(
              `seccomp profile ${profile.localhostRef} was not loaded`,
              'config.linux.security_context.seccomp',
            ),
          )
        : ok(`seccomp=${localhost}`),
    )
    .exhaustive();
}

/** CRI mount propagation in Docker's words. */
export function dockerPropagation(p: Mount['propagation']): 'rprivate' | 'rslave' | 'rshared' {
  return match(p)
    .with('private', () => 'rprivate' as const)
    .with('hostToContainer', () => 'rslave' as const)
    .with('bidirectional', () => 'rshared' as const)
    .exhaustive();
}

/**
 * Bind mounts of a container: its CRI mounts, plus the pod's hosts,
 * resolv.conf and hostname files unless a CRI mount already covers that path
 * (the kubelet mounts its own /etc/hosts). Those files are read-only when the
 * root filesystem is, as containerd does.
 */
export function containerMounts(c: ContainerRef): Docker.MountSettings[] {
  const sec = c.spec.linux.security;
  const cri: Docker.MountSettings[] = c.spec.mounts.map((m) => ({
    Type: 'bind',
    Source: m.hostPath,
    Target: m.containerPath,
    ReadOnly: m.readonly,
    BindOptions: { Propagation: dockerPropagation(m.propagation) },
  }));
  const taken = new Set(c.spec.mounts.map((m) => m.containerPath.replace(/\/+$/, '')));
  const podFiles: [string, string][] = [
    ['/etc/hosts', c.sandbox.files.hosts],
    ['/etc/resolv.conf', c.sandbox.files.resolvConf],
    ['/etc/hostname', c.sandbox.files.hostname],
  ];
  const pod: Docker.MountSettings[] = podFiles
    .filter(([target, source]) => source !== '' && !taken.has(target))
    .map(([target, source]) => ({ Type: 'bind', Source: source, Target: target, ReadOnly: sec.readonlyRootfs }));
  return [...pod, ...cri];
}

/** Docker namespace modes for an app container: it joins the pause container's namespaces. */
export function containerNamespaces(
  c: ContainerRef,
): Result<Pick<Docker.HostConfig, 'NetworkMode' | 'IpcMode' | 'PidMode' | 'UTSMode'>, HcrError> {
  const pause = `container:${dockerName('sandbox', c.sandbox.id)}`;
  const ns = c.spec.linux.security.namespaces;
  const host = isHostNetwork(c.sandbox);
  const pid = match(ns.pid)
    .with('pod', () => ok<string, HcrError>(pause))
    .with('node', () => ok('host'))
    .with('container', () => ok(''))
    .with('target', () =>
      ns.targetId === ''
        ? err(errors.invalidArgument('PID namespace mode TARGET needs a target_id', 'config.linux.security_context'))
        : ok(`container:${dockerName('container', ns.targetId)}`),
    )
    .exhaustive();
  if (pid.isErr()) return err(pid.error);
  return ok({
    NetworkMode: host ? 'host' : pause,
    // With `container:` networking Docker shares the pause container's UTS namespace (the pod hostname).
    UTSMode: host ? 'host' : '',
    IpcMode: ns.ipc === 'node' ? 'host' : pause,
    PidMode: pid.value,
  });
}

/** The range cgroup v1 `cpu.shares` accepts (the kubelet's own minimum is 2 as well). */
const CPU_SHARES_MIN = 2;
const CPU_SHARES_MAX = 262_144;

/**
 * Docker resource settings for CRI resources; `0`/empty stays unset. Swap is
 * limited to the memory limit unless CRI allows more, as the kubelet means it.
 * Settings Docker cannot express are reported as warnings, not failures.
 */
export function dockerResources(r: LinuxResources): Built<DockerResources> {
  const warnings: string[] = [];
  const out: DockerResources = {};
  if (r.cpuShares > 0) {
    // The kernel rounds cpu.shares into this range and runc then fails on the read-back mismatch.
    const shares = Math.min(CPU_SHARES_MAX, Math.max(CPU_SHARES_MIN, r.cpuShares));
    if (shares !== r.cpuShares)
      warnings.push(`cpu_shares ${r.cpuShares} clamped to ${shares}, the range cgroup cpu.shares takes`);
    out.CpuShares = shares;
  }
  if (r.cpuPeriod > 0) out.CpuPeriod = r.cpuPeriod;
  if (r.cpuQuota > 0) out.CpuQuota = r.cpuQuota;
  if (r.memoryLimitInBytes > 0) {
    out.Memory = r.memoryLimitInBytes;
    out.MemorySwap = r.memorySwapLimitInBytes >= r.memoryLimitInBytes ? r.memorySwapLimitInBytes : r.memoryLimitInBytes;
  }
  if (r.cpusetCpus !== '') out.CpusetCpus = r.cpusetCpus;
  if (r.cpusetMems !== '') out.CpusetMems = r.cpusetMems;
  if (Object.keys(r.unified).length > 0)
    warnings.push(
      `ignoring cgroup v2 unified settings ${Object.keys(r.unified).join(', ')}: the Docker API cannot set them`,
    );
  return { value: out, warnings };
}

/**
 * oom_score_adj for Docker. A negative value needs CAP_SYS_RESOURCE, which
 * this host's capability bounding set may lack (runc then fails the start),
 * so it is clamped to 0 with a warning instead of failing the container.
 */
export function dockerOomScoreAdj(value: number, canLower: boolean): Built<number> {
  if (value < 0 && !canLower)
    return {
      value: 0,
      warnings: [`oom_score_adj ${value} clamped to 0: HCR lacks CAP_SYS_RESOURCE to lower it`],
    };
  return { value, warnings: [] };
}

/**
 * How privileged containers are made. Docker's `Privileged` grants every
 * capability the kernel knows, and runc fails the start when the host's
 * capability bounding set lacks one (as on hosts without CAP_SYS_RESOURCE).
 * There the engine builds the same container from parts Docker does allow:
 * all capabilities but the ones the host lacks, every host device, no
 * seccomp, AppArmor, masked or read-only paths. What stays different: /sys
 * is read-only.
 */
export type PrivilegedMode =
  | { readonly kind: 'native' }
  | {
      readonly kind: 'emulated';
      /** Capabilities missing from the host's bounding set. */
      readonly dropCapabilities: readonly string[];
      readonly devices: readonly DeviceMapping[];
      /** Why native mode cannot work (for the warning). */
      readonly reason: string;
    };

/** Inputs to {@link containerCreateOptions} that need I/O or host facts. */
export interface ContainerBuildContext {
  readonly engine: string;
  readonly log: DockerLogOptions;
  /** JSON of the `localhost/…` seccomp profile, read by the caller; null when not used. */
  readonly seccompProfile: string | null;
  /** Whether a negative oom_score_adj can be applied on this host. */
  readonly canLowerOomScore: boolean;
  readonly privileged: PrivilegedMode;
}

/** HostConfig security settings of a privileged container (see {@link PrivilegedMode}). */
function privilegedHostConfig(
  mode: PrivilegedMode,
  sec: ContainerSecurity,
  devices: readonly DeviceMapping[],
): Built<Docker.HostConfig> {
  if (mode.kind === 'native') {
    return {
      value: { Privileged: true, Devices: [...devices], SecurityOpt: sec.noNewPrivs ? ['no-new-privileges'] : [] },
      warnings: [],
    };
  }
  const requested = new Set(devices.map((d) => d.PathInContainer));
  return {
    value: {
      Privileged: false,
      CapAdd: ['ALL'],
      CapDrop: [...mode.dropCapabilities],
      SecurityOpt: ['seccomp=unconfined', 'apparmor=unconfined', ...(sec.noNewPrivs ? ['no-new-privileges'] : [])],
      MaskedPaths: [],
      ReadonlyPaths: [],
      DeviceCgroupRules: ['a *:* rwm'],
      Devices: [...devices, ...mode.devices.filter((d) => !requested.has(d.PathInContainer))],
    },
    warnings: [`privileged container emulated (${mode.reason}); /sys is read-only in it`],
  };
}

/**
 * CapDrop for an unprivileged container. Docker expands `CapAdd: ALL` to every
 * capability the kernel knows; where the host's bounding set lacks some (see
 * {@link PrivilegedMode}), those are dropped again so runc can start it.
 */
function capDrop(sec: ContainerSecurity, mode: PrivilegedMode): string[] {
  const drop = sec.capabilities.drop.map(dockerCapability);
  const addsAll = sec.capabilities.add.some((c) => dockerCapability(c) === 'ALL');
  if (!addsAll || mode.kind === 'native' || drop.includes('ALL')) return drop;
  return [...new Set([...drop, ...mode.dropCapabilities])];
}

/** The Docker create request for an app container. */
export function containerCreateOptions(
  c: ContainerRef,
  ctx: ContainerBuildContext,
): Result<Built<Docker.ContainerCreateOptions>, HcrError> {
  const spec = c.spec;
  const sec = spec.linux.security;
  const argv = resolveArgv(spec.command, spec.args, c.image.config);
  if (argv.isErr()) return err(argv.error);
  const user = dockerUser(sec);
  if (user.isErr()) return err(user.error);
  const secOpts = securityOptions(sec, ctx.seccompProfile);
  if (secOpts.isErr()) return err(secOpts.error);
  const namespaces = containerNamespaces(c);
  if (namespaces.isErr()) return err(namespaces.error);
  const resources = dockerResources(spec.linux.resources);
  const oom = dockerOomScoreAdj(spec.linux.resources.oomScoreAdj, ctx.canLowerOomScore);
  const cgroupParent = c.sandbox.spec.linux.cgroupParent;
  const devices: DeviceMapping[] = spec.devices.map((d) => ({
    PathOnHost: d.hostPath,
    PathInContainer: d.containerPath,
    CgroupPermissions: d.permissions === '' ? 'rwm' : d.permissions,
  }));
  const security: Built<Docker.HostConfig> = sec.privileged
    ? privilegedHostConfig(ctx.privileged, sec, devices)
    : {
        value: {
          Privileged: false,
          Devices: devices,
          CapAdd: sec.capabilities.add.map(dockerCapability),
          CapDrop: capDrop(sec, ctx.privileged),
          SecurityOpt: secOpts.value,
          // Empty lists keep Docker's defaults: CRI cannot tell "unset" from "none" here.
          ...(sec.maskedPaths.length > 0 ? { MaskedPaths: [...sec.maskedPaths] } : {}),
          ...(sec.readonlyPaths.length > 0 ? { ReadonlyPaths: [...sec.readonlyPaths] } : {}),
        },
        warnings: [],
      };

  const hostConfig: Docker.HostConfig = {
    ...namespaces.value,
    Mounts: containerMounts(c),
    ...security.value,
    GroupAdd: sec.supplementalGroups.map(String),
    ReadonlyRootfs: sec.readonlyRootfs,
    ...resources.value,
    ...(oom.value !== 0 ? { OomScoreAdj: oom.value } : {}),
    ...(cgroupParent === '' ? {} : { CgroupParent: cgroupParent }),
    RestartPolicy: { Name: 'no', MaximumRetryCount: 0 },
    AutoRemove: false,
    LogConfig: logConfig(ctx.log),
    Init: false,
  };
  const workingDir = spec.workingDir !== '' ? spec.workingDir : c.image.config.workingDir;
  const options: Docker.ContainerCreateOptions = {
    name: dockerName('container', c.id),
    Image: c.image.id,
    Entrypoint: argv.value.entrypoint,
    Cmd: argv.value.cmd,
    Env: mergeEnv(c.image.config.env, spec.envs),
    ...(workingDir === '' ? {} : { WorkingDir: workingDir }),
    ...(user.value === '' ? {} : { User: user.value }),
    Tty: spec.tty,
    OpenStdin: spec.stdin,
    StdinOnce: spec.stdinOnce,
    AttachStdin: false,
    AttachStdout: false,
    AttachStderr: false,
    Labels: containerLabels(ctx.engine, c.sandbox.id, c.id, c.logPath),
    HostConfig: hostConfig,
  };
  return ok({ value: options, warnings: [...security.warnings, ...resources.warnings, ...oom.warnings] });
}

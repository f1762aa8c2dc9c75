/**
 * Domain (CRI-shaped) types to agent protocol bodies and back. Wire types end
 * here: the engine hands this module ContainerSpecs and gets statuses back.
 */
import {
  DEFAULT_CAPABILITIES,
  LINUX_CAPABILITIES,
  containerCapabilities,
  err,
  errors,
  ok,
  type ContainerSpec,
  type EngineContainerStatus,
  type HcrError,
  type ImageInfo,
  type LinuxResources,
  type Result,
} from '@hcr/core';
import { match } from 'ts-pattern';
import { ContainerStatus, type ContainerInfo, type Process, type Resources } from './protocol/wire.gen.js';
import { NO_SECCOMP } from './seccomp.js';

/** Every capability the guest kernel knows, by number (the agent's table has the same order): core's table. */
export const ALL_CAPABILITIES = LINUX_CAPABILITIES;

/** The capabilities a container gets unless the spec adds or drops some (core's default set). */
export { DEFAULT_CAPABILITIES };

/** The capability set of a container: the defaults, `ALL` expanded, then the spec's adds and drops (core's rule). */
export function capabilitySet(add: readonly string[], drop: readonly string[]): Result<string[], HcrError> {
  return containerCapabilities(add, drop);
}

/** The argv of a container, the way containerd combines CRI command/args with the image's entrypoint/cmd. */
export function commandLine(spec: ContainerSpec, image: ImageInfo): Result<string[], HcrError> {
  const command = spec.command.length > 0 ? spec.command : image.config.entrypoint;
  const args = spec.command.length > 0 || spec.args.length > 0 ? spec.args : image.config.cmd;
  const argv = [...command, ...args];
  return argv.length > 0
    ? ok(argv)
    : err(errors.invalidArgument('no command: the container and its image give neither command nor args', 'command'));
}

/** The image's environment overridden by the spec's, plus HOSTNAME (as containerd sets it). */
export function environment(spec: ContainerSpec, image: ImageInfo, hostname: string): string[] {
  const env = new Map<string, string>();
  for (const kv of image.config.env) {
    const eq = kv.indexOf('=');
    if (eq > 0) env.set(kv.slice(0, eq), kv.slice(eq + 1));
  }
  for (const { key, value } of spec.envs) env.set(key, value);
  if (!env.has('HOSTNAME') && hostname !== '') env.set('HOSTNAME', hostname);
  return [...env].map(([k, v]) => `${k}=${v}`);
}

/**
 * The `user[:group]` the agent resolves against the container's own
 * /etc/passwd and /etc/group: the CRI username, else the CRI uid (and gid),
 * else the image's USER. Empty means root.
 */
export function userSpec(spec: ContainerSpec, image: ImageInfo): string {
  const sec = spec.linux.security;
  const group = sec.runAsGroup !== null ? `:${sec.runAsGroup}` : '';
  if (sec.runAsUsername !== '') return `${sec.runAsUsername}${group}`;
  if (sec.runAsUser !== null) return `${sec.runAsUser}${group}`;
  if (image.config.user === '') return group === '' ? '' : `0${group}`;
  if (group === '') return image.config.user;
  // A CRI group overrides the image's, as with runc.
  return `${image.config.user.split(':')[0] ?? ''}${group}`;
}

const nonNegative = (n: number) => BigInt(Math.max(0, Math.trunc(n)));

/** CRI resources as the agent's cgroup v2 settings. */
export function wireResources(r: LinuxResources): Resources {
  return {
    cpuPeriod: nonNegative(r.cpuPeriod),
    cpuQuota: nonNegative(r.cpuQuota),
    cpuShares: nonNegative(r.cpuShares),
    memoryLimit: nonNegative(r.memoryLimitInBytes),
    memorySwapLimit: nonNegative(r.memorySwapLimitInBytes),
    cpusetCpus: r.cpusetCpus,
    cpusetMems: r.cpusetMems,
    unified: Object.entries(r.unified).map(([key, value]) => ({ key, value })),
  };
}

/**
 * How a container's processes run: its main process, and every exec in it
 * (same env, user, caps, seccomp). Without a seccomp filter: the engine
 * resolves the CRI profile (seccomp.ts) against the capabilities set here.
 */
export function containerProcess(spec: ContainerSpec, image: ImageInfo, hostname: string): Result<Process, HcrError> {
  const argv = commandLine(spec, image);
  if (argv.isErr()) return err(argv.error);
  const caps = capabilitySet(spec.linux.security.capabilities.add, spec.linux.security.capabilities.drop);
  if (caps.isErr()) return err(caps.error);
  return ok({
    args: argv.value,
    env: environment(spec, image, hostname),
    cwd: spec.workingDir !== '' ? spec.workingDir : image.config.workingDir !== '' ? image.config.workingDir : '/',
    uid: 0,
    gid: 0,
    additionalGids: spec.linux.security.supplementalGroups,
    tty: spec.tty,
    stdin: spec.stdin,
    rows: 0,
    cols: 0,
    noNewPrivileges: spec.linux.security.noNewPrivs,
    capabilities: caps.value,
    username: userSpec(spec, image),
    seccomp: NO_SECCOMP,
  });
}

/** An exec in a container: the container's identity and environment, a new command and streams. */
export function execProcess(base: Process, cmd: readonly string[], streams: { tty: boolean; stdin: boolean }): Process {
  return { ...base, args: [...cmd], tty: streams.tty, stdin: streams.stdin, rows: 0, cols: 0 };
}

/** The agent's view of a container as the engine status core expects. */
export function containerStatus(info: ContainerInfo): EngineContainerStatus {
  const base = { startedAt: info.startedAt, finishedAt: info.finishedAt, exitCode: 0, reason: '', message: '' };
  return match(info.status)
    .returnType<EngineContainerStatus>()
    .with(ContainerStatus.CREATED, () => ({ ...base, state: 'created', pid: 0 }))
    .with(ContainerStatus.RUNNING, () => ({ ...base, state: 'running', pid: info.pid }))
    .with(ContainerStatus.EXITED, () => ({
      ...base,
      state: 'exited',
      pid: 0,
      exitCode: info.exitCode,
      reason: info.oomKilled ? 'OOMKilled' : info.exitCode === 0 ? 'Completed' : 'Error',
      message: info.signal !== 0 ? `killed by signal ${info.signal}` : '',
    }))
    .otherwise(() => ({ ...base, state: 'unknown', pid: 0, message: `the agent reports status ${info.status}` }));
}

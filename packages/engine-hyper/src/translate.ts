/**
 * Domain (CRI-shaped) types to agent protocol bodies and back. Wire types end
 * here: the engine hands this module ContainerSpecs and gets statuses back.
 */
import {
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

/** Every capability the guest kernel knows, by number (the agent's table has the same order). */
export const ALL_CAPABILITIES = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_DAC_READ_SEARCH',
  'CAP_FOWNER',
  'CAP_FSETID',
  'CAP_KILL',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETPCAP',
  'CAP_LINUX_IMMUTABLE',
  'CAP_NET_BIND_SERVICE',
  'CAP_NET_BROADCAST',
  'CAP_NET_ADMIN',
  'CAP_NET_RAW',
  'CAP_IPC_LOCK',
  'CAP_IPC_OWNER',
  'CAP_SYS_MODULE',
  'CAP_SYS_RAWIO',
  'CAP_SYS_CHROOT',
  'CAP_SYS_PTRACE',
  'CAP_SYS_PACCT',
  'CAP_SYS_ADMIN',
  'CAP_SYS_BOOT',
  'CAP_SYS_NICE',
  'CAP_SYS_RESOURCE',
  'CAP_SYS_TIME',
  'CAP_SYS_TTY_CONFIG',
  'CAP_MKNOD',
  'CAP_LEASE',
  'CAP_AUDIT_WRITE',
  'CAP_AUDIT_CONTROL',
  'CAP_SETFCAP',
  'CAP_MAC_OVERRIDE',
  'CAP_MAC_ADMIN',
  'CAP_SYSLOG',
  'CAP_WAKE_ALARM',
  'CAP_BLOCK_SUSPEND',
  'CAP_AUDIT_READ',
  'CAP_PERFMON',
  'CAP_BPF',
  'CAP_CHECKPOINT_RESTORE',
] as const;

/** The capabilities a container gets unless the spec adds or drops some (Docker's and containerd's default). */
export const DEFAULT_CAPABILITIES: readonly string[] = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FSETID',
  'CAP_FOWNER',
  'CAP_MKNOD',
  'CAP_NET_RAW',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETFCAP',
  'CAP_SETPCAP',
  'CAP_NET_BIND_SERVICE',
  'CAP_SYS_CHROOT',
  'CAP_KILL',
  'CAP_AUDIT_WRITE',
];

function capName(raw: string): Result<string, HcrError> {
  const upper = raw.trim().toUpperCase();
  const name = upper.startsWith('CAP_') ? upper : `CAP_${upper}`;
  return (ALL_CAPABILITIES as readonly string[]).includes(name)
    ? ok(name)
    : err(errors.invalidArgument(`unknown capability "${raw}"`, 'linux.securityContext.capabilities'));
}

/** The capability set of a container: the defaults, `ALL` expanded, then the spec's adds and drops. */
export function capabilitySet(add: readonly string[], drop: readonly string[]): Result<string[], HcrError> {
  const isAll = (c: string) => c.trim().toUpperCase() === 'ALL';
  const caps = new Set<string>(add.some(isAll) ? ALL_CAPABILITIES : DEFAULT_CAPABILITIES);
  if (drop.some(isAll)) caps.clear();
  for (const c of add.filter((x) => !isAll(x))) {
    const n = capName(c);
    if (n.isErr()) return err(n.error);
    caps.add(n.value);
  }
  for (const c of drop.filter((x) => !isAll(x))) {
    const n = capName(c);
    if (n.isErr()) return err(n.error);
    caps.delete(n.value);
  }
  return ok(ALL_CAPABILITIES.filter((c) => caps.has(c)));
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

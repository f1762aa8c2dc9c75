/**
 * Seccomp for hyper containers. The CRI names a profile (RuntimeDefault,
 * Localhost: a JSON file in the OCI/Docker profile format, or Unconfined);
 * the host resolves it here, against the container's capabilities and the
 * guest's architecture and kernel, into the compact filter the agent builds
 * with libseccomp right before exec (Seccomp in protocol/agent.json).
 */
import { readFile } from 'node:fs/promises';
import { isAbsolute } from 'node:path';
import {
  err,
  errAsync,
  errors,
  ok,
  okAsync,
  ResultAsync,
  type HcrError,
  type Result,
  type SecurityProfile,
} from '@hcr/core';
import { SeccompAction, SeccompOp, type Seccomp, type SeccompArg, type SeccompRule } from './protocol/wire.gen.js';

/** No filter: the process runs unconfined. */
export const NO_SECCOMP: Seccomp = {
  defaultAction: SeccompAction.NONE,
  defaultErrnoRet: 0,
  architectures: [],
  rules: [],
};

const EPERM = 1;
const ENOSYS = 38;

// Namespace flags of clone(2); a filter sees clone's flags (clone3 keeps them in memory it cannot read).
const CLONE_NEWNS = 0x00020000;
const CLONE_NEWCGROUP = 0x02000000;
const CLONE_NEWUTS = 0x04000000;
const CLONE_NEWIPC = 0x08000000;
const CLONE_NEWUSER = 0x10000000;
const CLONE_NEWPID = 0x20000000;
const CLONE_NEWNET = 0x40000000;

/**
 * HCR's RuntimeDefault profile for hyper containers, in the profile format a
 * Localhost profile uses. A deny-list with the effect of Docker's default on
 * this guest: what no container needs (kernel keyrings, kexec, obsolete
 * interfaces) fails with EPERM, and what a capability grants (mounts and
 * namespaces, modules, raw I/O, the clock, NUMA policy, ...) fails with EPERM
 * unless the container holds that capability, which the kernel checks as
 * well. clone3 answers ENOSYS without CAP_SYS_ADMIN, so libc falls back to
 * clone, whose namespace flags the filter can see.
 */
export const RUNTIME_DEFAULT_PROFILE = {
  defaultAction: 'SCMP_ACT_ALLOW',
  architectures: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32'],
  syscalls: [
    {
      comment: 'Not namespaced, or never used by containers: keyrings, kexec, obsolete and unused calls.',
      names: [
        'add_key',
        'keyctl',
        'request_key',
        'kexec_load',
        'kexec_file_load',
        'create_module',
        'get_kernel_syms',
        'query_module',
        'nfsservctl',
        'uselib',
        'ustat',
        'sysfs',
        '_sysctl',
        'vm86',
        'vm86old',
        'lookup_dcookie',
      ],
      action: 'SCMP_ACT_ERRNO',
    },
    {
      comment: 'Mounts, namespaces, swap and quotas need CAP_SYS_ADMIN.',
      names: [
        'mount',
        'umount',
        'umount2',
        'pivot_root',
        'unshare',
        'setns',
        'fsopen',
        'fsconfig',
        'fsmount',
        'fspick',
        'open_tree',
        'move_mount',
        'mount_setattr',
        'swapon',
        'swapoff',
        'quotactl',
        'quotactl_fd',
      ],
      action: 'SCMP_ACT_ERRNO',
      excludes: { caps: ['CAP_SYS_ADMIN'] },
    },
    ...[CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET].map(
      (flag) => ({
        comment: 'clone into new namespaces needs CAP_SYS_ADMIN.',
        names: ['clone'],
        action: 'SCMP_ACT_ERRNO',
        args: [{ index: 0, value: flag, valueTwo: flag, op: 'SCMP_CMP_MASKED_EQ' }],
        excludes: { caps: ['CAP_SYS_ADMIN'] },
      }),
    ),
    {
      comment: 'clone3 passes its flags in memory; ENOSYS sends libc back to clone.',
      names: ['clone3'],
      action: 'SCMP_ACT_ERRNO',
      errnoRet: ENOSYS,
      excludes: { caps: ['CAP_SYS_ADMIN'] },
    },
    { names: ['bpf'], action: 'SCMP_ACT_ERRNO', excludes: { caps: ['CAP_SYS_ADMIN', 'CAP_BPF'] } },
    { names: ['perf_event_open'], action: 'SCMP_ACT_ERRNO', excludes: { caps: ['CAP_SYS_ADMIN', 'CAP_PERFMON'] } },
    { names: ['userfaultfd'], action: 'SCMP_ACT_ERRNO', excludes: { caps: ['CAP_SYS_PTRACE'] } },
    {
      names: ['init_module', 'finit_module', 'delete_module'],
      action: 'SCMP_ACT_ERRNO',
      excludes: { caps: ['CAP_SYS_MODULE'] },
    },
    { names: ['iopl', 'ioperm'], action: 'SCMP_ACT_ERRNO', excludes: { caps: ['CAP_SYS_RAWIO'] } },
    { names: ['acct'], action: 'SCMP_ACT_ERRNO', excludes: { caps: ['CAP_SYS_PACCT'] } },
    {
      names: ['settimeofday', 'stime', 'clock_settime', 'clock_adjtime'],
      action: 'SCMP_ACT_ERRNO',
      excludes: { caps: ['CAP_SYS_TIME'] },
    },
    { names: ['reboot'], action: 'SCMP_ACT_ERRNO', excludes: { caps: ['CAP_SYS_BOOT'] } },
    {
      names: ['name_to_handle_at', 'open_by_handle_at'],
      action: 'SCMP_ACT_ERRNO',
      excludes: { caps: ['CAP_DAC_READ_SEARCH'] },
    },
    {
      names: ['get_mempolicy', 'set_mempolicy', 'mbind', 'move_pages', 'migrate_pages'],
      action: 'SCMP_ACT_ERRNO',
      excludes: { caps: ['CAP_SYS_NICE'] },
    },
    { names: ['syslog'], action: 'SCMP_ACT_ERRNO', excludes: { caps: ['CAP_SYSLOG'] } },
    { names: ['vhangup'], action: 'SCMP_ACT_ERRNO', excludes: { caps: ['CAP_SYS_TTY_CONFIG'] } },
  ],
} as const;

/** The guest the filter is for: what a profile's conditions are checked against. */
export interface SeccompTarget {
  /** The engine's name (for Unsupported errors). */
  readonly engine: string;
  /** The capabilities the process keeps (CAP_… names). */
  readonly capabilities: readonly string[];
  /** The guest kernel's release (for `minKernel`), e.g. "6.1.0-56-amd64". */
  readonly kernelRelease: string;
}

const FIELD = 'linux.security_context.seccomp';

/** The filter for a container's CRI seccomp profile; null (unset) runs unconfined, as with containerd. */
export function seccompFor(profile: SecurityProfile | null, target: SeccompTarget): ResultAsync<Seccomp, HcrError> {
  if (profile === null || profile.type === 'unconfined') return okAsync(NO_SECCOMP);
  if (profile.type === 'runtimeDefault') {
    const resolved = resolveProfile(RUNTIME_DEFAULT_PROFILE, target);
    return resolved.isOk() ? okAsync(resolved.value) : errAsync(resolved.error);
  }
  const path = profile.localhostRef.replace(/^localhost\//, '');
  if (!isAbsolute(path)) {
    return errAsync(
      errors.invalidArgument(`seccomp profile "${profile.localhostRef}" must be an absolute path on the node`, FIELD),
    );
  }
  return ResultAsync.fromPromise(readFile(path, 'utf8'), (e) =>
    errors.invalidArgument(`cannot read seccomp profile ${path}: ${(e as Error).message}`, FIELD),
  ).andThen((text) => {
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      return err(errors.invalidArgument(`seccomp profile ${path} is not JSON: ${(e as Error).message}`, FIELD));
    }
    return resolveProfile(json, target).mapErr((e) => e.withContext(`seccomp profile ${path}`));
  });
}

// Maps, not object literals: a profile's strings must not reach Object.prototype.
const ACTIONS = new Map<unknown, SeccompAction>([
  ['SCMP_ACT_ALLOW', SeccompAction.ALLOW],
  ['SCMP_ACT_ERRNO', SeccompAction.ERRNO],
  ['SCMP_ACT_KILL', SeccompAction.KILL_THREAD],
  ['SCMP_ACT_KILL_THREAD', SeccompAction.KILL_THREAD],
  ['SCMP_ACT_KILL_PROCESS', SeccompAction.KILL_PROCESS],
  ['SCMP_ACT_TRAP', SeccompAction.TRAP],
  ['SCMP_ACT_TRACE', SeccompAction.TRACE],
  ['SCMP_ACT_LOG', SeccompAction.LOG],
]);

const OPS = new Map<unknown, SeccompOp>([
  ['SCMP_CMP_NE', SeccompOp.NE],
  ['SCMP_CMP_LT', SeccompOp.LT],
  ['SCMP_CMP_LE', SeccompOp.LE],
  ['SCMP_CMP_EQ', SeccompOp.EQ],
  ['SCMP_CMP_GE', SeccompOp.GE],
  ['SCMP_CMP_GT', SeccompOp.GT],
  ['SCMP_CMP_MASKED_EQ', SeccompOp.MASKED_EQ],
]);

/** Profile architectures the x86_64 guest runs, as libseccomp names them. */
const GUEST_ARCHES = new Map<string, string>([
  ['SCMP_ARCH_X86_64', 'x86_64'],
  ['SCMP_ARCH_X86', 'x86'],
  ['SCMP_ARCH_X32', 'x32'],
]);

/** Names `includes.arches` / `excludes.arches` use for the guest (Go's and the kernel's spellings). */
const GUEST_ARCH_NAMES = new Set(['amd64', 'x86_64', 'SCMP_ARCH_X86_64']);

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

function stringList(v: unknown, what: string): Result<string[], HcrError> {
  if (v === undefined || v === null) return ok([]);
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) {
    return err(errors.invalidArgument(`${what} must be a list of strings`, FIELD));
  }
  return ok(v);
}

function action(
  name: unknown,
  errnoRet: unknown,
  where: string,
  target: SeccompTarget,
): Result<[SeccompAction, number], HcrError> {
  if (name === 'SCMP_ACT_NOTIFY') {
    return err(
      errors.unsupported(target.engine, 'seccompNotify', `${where}: SCMP_ACT_NOTIFY is not supported in a hyper pod`),
    );
  }
  const a = ACTIONS.get(name);
  if (a === undefined) return err(errors.invalidArgument(`${where}: unknown action ${JSON.stringify(name)}`, FIELD));
  if (errnoRet !== undefined && (!Number.isInteger(errnoRet) || (errnoRet as number) < 0)) {
    return err(errors.invalidArgument(`${where}: errnoRet must be a non-negative integer`, FIELD));
  }
  return ok([a, (errnoRet as number | undefined) ?? EPERM]);
}

/** Compares dotted kernel versions numerically: "6.1.0-56-amd64" >= "4.8". */
function kernelAtLeast(release: string, min: string): boolean {
  const nums = (s: string) => (s.match(/^\d+(\.\d+)*/)?.[0] ?? '0').split('.').map(Number);
  const have = nums(release);
  const want = nums(min);
  for (let i = 0; i < Math.max(have.length, want.length); i++) {
    const h = have[i] ?? 0;
    const w = want[i] ?? 0;
    if (h !== w) return h > w;
  }
  return true;
}

/** Whether a rule applies to this guest and container (Docker's `includes` / `excludes`). */
function applies(rule: Json, target: SeccompTarget, where: string): Result<boolean, HcrError> {
  for (const key of ['includes', 'excludes'] as const) {
    const cond = rule[key];
    if (cond === undefined || cond === null) continue;
    if (!isObject(cond)) return err(errors.invalidArgument(`${where}.${key} must be an object`, FIELD));
    const caps = stringList(cond['caps'], `${where}.${key}.caps`);
    if (caps.isErr()) return err(caps.error);
    const arches = stringList(cond['arches'], `${where}.${key}.arches`);
    if (arches.isErr()) return err(arches.error);
    const minKernel = cond['minKernel'];
    if (minKernel !== undefined && typeof minKernel !== 'string') {
      return err(errors.invalidArgument(`${where}.${key}.minKernel must be a string`, FIELD));
    }
    const has = (c: string) => target.capabilities.includes(c.toUpperCase().startsWith('CAP_') ? c : `CAP_${c}`);
    if (key === 'includes') {
      // Every listed capability, one of the listed architectures, at least that kernel.
      if (!caps.value.every(has)) return ok(false);
      if (arches.value.length > 0 && !arches.value.some((a) => GUEST_ARCH_NAMES.has(a))) return ok(false);
      if (minKernel !== undefined && !kernelAtLeast(target.kernelRelease, minKernel)) return ok(false);
    } else {
      // Any listed capability or architecture excludes the rule.
      if (caps.value.some(has)) return ok(false);
      if (arches.value.some((a) => GUEST_ARCH_NAMES.has(a))) return ok(false);
      if (minKernel !== undefined && kernelAtLeast(target.kernelRelease, minKernel)) return ok(false);
    }
  }
  return ok(true);
}

function argOf(a: unknown, where: string): Result<SeccompArg, HcrError> {
  if (!isObject(a)) return err(errors.invalidArgument(`${where} must be an object`, FIELD));
  const index = a['index'];
  if (!Number.isInteger(index) || (index as number) < 0 || (index as number) > 5) {
    return err(errors.invalidArgument(`${where}.index must be 0..5`, FIELD));
  }
  const op = OPS.get(a['op']);
  if (op === undefined) return err(errors.invalidArgument(`${where}: unknown op ${JSON.stringify(a['op'])}`, FIELD));
  const u64 = (v: unknown, name: string): Result<bigint, HcrError> =>
    v === undefined
      ? ok(0n)
      : Number.isInteger(v) && (v as number) >= 0
        ? ok(BigInt(v as number))
        : err(errors.invalidArgument(`${where}.${name} must be a non-negative integer`, FIELD));
  const value = u64(a['value'], 'value');
  if (value.isErr()) return err(value.error);
  const valueTwo = u64(a['valueTwo'], 'valueTwo');
  if (valueTwo.isErr()) return err(valueTwo.error);
  return ok({ index: index as number, value: value.value, valueTwo: valueTwo.value, op });
}

/**
 * Resolves a profile in the OCI/Docker format for one container: the rules
 * that apply to it, the guest's architectures, actions and errno values.
 * Rules for other architectures and syscall names are kept to the guest's
 * share; names the guest's libseccomp does not know are skipped there.
 */
export function resolveProfile(profile: unknown, target: SeccompTarget): Result<Seccomp, HcrError> {
  if (!isObject(profile)) return err(errors.invalidArgument('a seccomp profile is a JSON object', FIELD));
  const def = action(profile['defaultAction'], profile['defaultErrnoRet'], 'defaultAction', target);
  if (def.isErr()) return err(def.error);
  if (profile['listenerPath'] !== undefined && profile['listenerPath'] !== '') {
    return err(
      errors.unsupported(target.engine, 'seccompNotify', 'seccomp listenerPath is not supported in a hyper pod'),
    );
  }

  const arches = new Set<string>();
  const listed = stringList(profile['architectures'], 'architectures');
  if (listed.isErr()) return err(listed.error);
  for (const a of listed.value) {
    const name = GUEST_ARCHES.get(a);
    if (name !== undefined) arches.add(name);
  }
  const archMap = profile['archMap'];
  if (archMap !== undefined && archMap !== null) {
    if (!Array.isArray(archMap)) return err(errors.invalidArgument('archMap must be a list', FIELD));
    for (const [i, m] of archMap.entries()) {
      if (!isObject(m)) return err(errors.invalidArgument(`archMap[${i}] must be an object`, FIELD));
      if (m['architecture'] !== 'SCMP_ARCH_X86_64') continue;
      const subs = stringList(m['subArchitectures'], `archMap[${i}].subArchitectures`);
      if (subs.isErr()) return err(subs.error);
      for (const a of ['SCMP_ARCH_X86_64', ...subs.value]) {
        const name = GUEST_ARCHES.get(a);
        if (name !== undefined) arches.add(name);
      }
    }
  }

  const syscalls = profile['syscalls'];
  if (syscalls !== undefined && syscalls !== null && !Array.isArray(syscalls)) {
    return err(errors.invalidArgument('syscalls must be a list', FIELD));
  }
  const rules: SeccompRule[] = [];
  for (const [i, s] of ((syscalls as unknown[] | null | undefined) ?? []).entries()) {
    const where = `syscalls[${i}]`;
    if (!isObject(s)) return err(errors.invalidArgument(`${where} must be an object`, FIELD));
    const names = stringList(s['names'], `${where}.names`);
    if (names.isErr()) return err(names.error);
    if (typeof s['name'] === 'string') names.value.push(s['name']);
    if (names.value.length === 0) return err(errors.invalidArgument(`${where} names no system call`, FIELD));
    const act = action(s['action'], s['errnoRet'], where, target);
    if (act.isErr()) return err(act.error);
    const rawArgs = s['args'];
    if (rawArgs !== undefined && rawArgs !== null && !Array.isArray(rawArgs)) {
      return err(errors.invalidArgument(`${where}.args must be a list`, FIELD));
    }
    const args: SeccompArg[] = [];
    for (const [j, a] of ((rawArgs as unknown[] | null | undefined) ?? []).entries()) {
      const arg = argOf(a, `${where}.args[${j}]`);
      if (arg.isErr()) return err(arg.error);
      args.push(arg.value);
    }
    const use = applies(s, target, where);
    if (use.isErr()) return err(use.error);
    if (!use.value) continue;
    rules.push({ names: names.value, action: act.value[0], errnoRet: act.value[1], args });
  }
  return ok({ defaultAction: def.value[0], defaultErrnoRet: def.value[1], architectures: [...arches], rules });
}

/**
 * Refuses a filter the pod's agent cannot install: an agent built before
 * seccomp support skips the field it does not know and would run the process
 * unconfined without a word.
 */
export function requireSeccompSupport(
  filter: Seccomp,
  agentFeatures: ReadonlySet<string>,
  podId: string,
): Result<void, HcrError> {
  if (filter.defaultAction === SeccompAction.NONE || agentFeatures.has('seccomp')) return ok(undefined);
  return err(
    errors.failedPrecondition(
      `the guest agent of pod ${podId} predates seccomp support, so it cannot apply the container's seccomp ` +
        'profile; recreate the pod (its VM then boots the current guest assets)',
    ),
  );
}

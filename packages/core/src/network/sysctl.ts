import { err, errAsync, ok, okAsync, type Result, ResultAsync } from 'neverthrow';
import { errors, type HcrError, toHcrError } from '../errors.js';
import { runProcess, hostTool, tail } from './exec.js';

const SEGMENT_RE = /^[A-Za-z0-9_-]+$/;
const SEGMENT_WITH_DOTS_RE = /^[A-Za-z0-9_.-]+$/;

/**
 * The `/proc/sys` path of a sysctl name. Like the kubelet and runc, a name
 * containing `/` uses `/` as separator (so `net/ipv4/conf/eth0.100/forwarding`
 * keeps its dotted interface name); otherwise `.` separates.
 */
export function sysctlPath(name: string): Result<string, HcrError> {
  const slashed = name.includes('/');
  const segments = slashed ? name.split('/') : name.split('.');
  const segmentOk = (s: string) =>
    slashed ? SEGMENT_WITH_DOTS_RE.test(s) && s !== '.' && s !== '..' : SEGMENT_RE.test(s);
  if (segments.length < 2 || !segments.every(segmentOk)) {
    return err(errors.invalidArgument(`sysctl "${name}" is not a valid sysctl name`, 'linux.sysctls'));
  }
  return ok(`/proc/sys/${segments.join('/')}`);
}

/** Refuses values that would write more than one setting or nothing at all. */
function checkValue(name: string, value: string): Result<string, HcrError> {
  if (value.trim() === '' || /[\n\r\0]/.test(value)) {
    return err(
      errors.invalidArgument(`sysctl "${name}" has an invalid value ${JSON.stringify(value)}`, 'linux.sysctls'),
    );
  }
  return ok(value);
}

/**
 * Writes one sysctl inside a network namespace. `/proc/sys/net` shows the
 * namespace of the process that opens it, so a helper entered into the
 * namespace writes it (tee, because procps sysctl reports success for some
 * refused writes). The kernel's refusal becomes an InvalidArgument naming the
 * key: absent (not namespaced or unknown), read-only, or a rejected value.
 */
function writeSysctl(netnsPath: string, name: string, value: string, timeoutMs: number): ResultAsync<void, HcrError> {
  const path = checkValue(name, value).andThen(() => sysctlPath(name));
  if (path.isErr()) return errAsync(path.error);
  return ResultAsync.fromPromise(
    runProcess(hostTool('nsenter'), [`--net=${netnsPath}`, '--', hostTool('tee'), path.value], {
      input: value,
      timeoutMs,
    }),
    (e) => toHcrError(e, `setting sysctl ${name}`),
  ).andThen((o): Result<void, HcrError> => {
    if (o.kind === 'exited' && o.code === 0) return ok(undefined);
    if (o.kind === 'spawnError') return err(errors.internal(`setting sysctl ${name}: ${o.error.message}`, o.error));
    if (o.kind === 'timeout') return err(errors.deadlineExceeded(`setting sysctl ${name} took over ${timeoutMs} ms`));
    const said = o.stderr;
    const field = 'linux.sysctls';
    if (said.includes('No such file or directory')) {
      return err(errors.invalidArgument(`sysctl "${name}" does not exist in a pod network namespace`, field));
    }
    if (said.includes('Permission denied') || said.includes('Read-only')) {
      return err(errors.invalidArgument(`sysctl "${name}" cannot be set in a pod network namespace`, field));
    }
    if (said.includes('Invalid argument') || said.includes('Numerical result out of range')) {
      return err(errors.invalidArgument(`sysctl "${name}" rejected the value ${JSON.stringify(value)}`, field));
    }
    return err(errors.internal(`setting sysctl ${name}=${value} in ${netnsPath} failed: ${tail(said) || 'no output'}`));
  });
}

/** Checks every name and value, so that a typo is refused before anything is written. */
export function validateSysctls(sysctls: Readonly<Record<string, string>>): Result<void, HcrError> {
  for (const [name, value] of Object.entries(sysctls)) {
    const checked = sysctlPath(name).andThen(() => checkValue(name, value));
    if (checked.isErr()) return err(checked.error);
  }
  return ok(undefined);
}

/**
 * Splits sysctls into those set before CNI ADD (so `default` settings reach
 * the interface CNI creates) and those naming the pod interface itself, which
 * exist only after ADD. Names must be valid ({@link validateSysctls}).
 */
export function splitInterfaceSysctls(
  sysctls: Readonly<Record<string, string>>,
  ifName: string,
): { readonly beforeAdd: Record<string, string>; readonly afterAdd: Record<string, string> } {
  const beforeAdd: Record<string, string> = {};
  const afterAdd: Record<string, string> = {};
  for (const [name, value] of Object.entries(sysctls)) {
    const path = sysctlPath(name).unwrapOr('');
    const onIface = path.includes(`/conf/${ifName}/`) || path.includes(`/neigh/${ifName}/`);
    (onIface ? afterAdd : beforeAdd)[name] = value;
  }
  return { beforeAdd, afterAdd };
}

/** Applies sysctls inside the namespace, in the order given, after validating them all. */
export function applySysctls(
  netnsPath: string,
  sysctls: Readonly<Record<string, string>>,
  timeoutMs: number,
): ResultAsync<void, HcrError> {
  const valid = validateSysctls(sysctls);
  if (valid.isErr()) return errAsync(valid.error);
  return Object.entries(sysctls).reduce<ResultAsync<void, HcrError>>(
    (acc, [name, value]) => acc.andThen(() => writeSysctl(netnsPath, name, value, timeoutMs)),
    okAsync(undefined),
  );
}

import { isAbsolute, normalize } from 'node:path';
import { err, ok, type Result } from 'neverthrow';
import { errors, type HcrError } from '../errors.js';
import type { ContainerSpec, SandboxSpec, StringMap } from '../types.js';

/** Upper bound on the total size of a pod's or container's labels plus annotations. */
export const MAX_METADATA_BYTES = 256 * 1024;

const NAME_RE = /^[^/\0]+$/;

/** Checks a name or namespace: non-empty, no `/` or NUL, at most 253 bytes. */
function checkName(value: string, field: string): HcrError | null {
  if (value === '') return errors.invalidArgument(`${field} is required`, field);
  if (!NAME_RE.test(value))
    return errors.invalidArgument(`${field} ${JSON.stringify(value)} must not contain "/" or NUL`, field);
  if (Buffer.byteLength(value) > 253) return errors.invalidArgument(`${field} is longer than 253 bytes`, field);
  return null;
}

/** Pod identity travels to CNI plugins in CNI_ARGS (`K=V;K=V`), which has no escaping. */
function checkCniArg(value: string, field: string): HcrError | null {
  return /[;=]/.test(value)
    ? errors.invalidArgument(
        `${field} ${JSON.stringify(value)} must not contain ";" or "=" (it is passed to CNI plugins in CNI_ARGS)`,
        field,
      )
    : null;
}

function checkMaps(labels: StringMap, annotations: StringMap, what: string): HcrError | null {
  let size = 0;
  for (const [k, v] of [...Object.entries(labels), ...Object.entries(annotations)]) {
    if (k === '') return errors.invalidArgument(`${what} has a label or annotation with an empty key`);
    if (k.includes('\0') || v.includes('\0'))
      return errors.invalidArgument(`${what} label/annotation ${JSON.stringify(k)} contains NUL`);
    size += Buffer.byteLength(k) + Buffer.byteLength(v);
  }
  if (size > MAX_METADATA_BYTES) {
    return errors.invalidArgument(
      `${what} labels and annotations total ${size} bytes; the limit is ${MAX_METADATA_BYTES}`,
    );
  }
  return null;
}

/** Validates a normalised RunPodSandbox request before anything is created. */
export function validateSandboxSpec(spec: SandboxSpec): Result<SandboxSpec, HcrError> {
  const problem =
    checkName(spec.metadata.name, 'metadata.name') ??
    checkName(spec.metadata.namespace, 'metadata.namespace') ??
    (spec.metadata.uid.includes('\0') || spec.metadata.uid.includes('/')
      ? errors.invalidArgument('metadata.uid must not contain "/" or NUL', 'metadata.uid')
      : null) ??
    checkCniArg(spec.metadata.name, 'metadata.name') ??
    checkCniArg(spec.metadata.namespace, 'metadata.namespace') ??
    checkCniArg(spec.metadata.uid, 'metadata.uid') ??
    (spec.metadata.attempt < 0 ? errors.invalidArgument('metadata.attempt must be >= 0', 'metadata.attempt') : null) ??
    (spec.logDirectory !== '' && (!isAbsolute(spec.logDirectory) || spec.logDirectory.includes('\0'))
      ? errors.invalidArgument(
          `log_directory ${JSON.stringify(spec.logDirectory)} must be an absolute path`,
          'log_directory',
        )
      : null) ??
    (spec.hostname.length > 64 || spec.hostname.includes('\0') || spec.hostname.includes('/')
      ? errors.invalidArgument(`hostname ${JSON.stringify(spec.hostname)} is not a valid host name`, 'hostname')
      : null) ??
    checkMaps(spec.labels, spec.annotations, 'pod') ??
    checkPorts(spec) ??
    checkSysctls(spec.linux.sysctls);
  return problem === null ? ok(spec) : err(problem);
}

function checkPorts(spec: SandboxSpec): HcrError | null {
  for (const p of spec.portMappings) {
    if (p.containerPort <= 0 || p.containerPort > 65535) {
      return errors.invalidArgument(`port_mappings: container_port ${p.containerPort} is out of range 1-65535`);
    }
    if (p.hostPort < 0 || p.hostPort > 65535) {
      return errors.invalidArgument(`port_mappings: host_port ${p.hostPort} is out of range 0-65535`);
    }
  }
  return null;
}

const SYSCTL_RE = /^[a-z0-9_]+([./][a-zA-Z0-9_-]+)+$/;

function checkSysctls(sysctls: StringMap): HcrError | null {
  for (const [k, v] of Object.entries(sysctls)) {
    if (!SYSCTL_RE.test(k) || k.includes('..'))
      return errors.invalidArgument(`sysctl name ${JSON.stringify(k)} is not valid`);
    if (v.includes('\n') || v.includes('\0')) return errors.invalidArgument(`sysctl ${k} has an invalid value`);
  }
  return null;
}

/** Validates a normalised CreateContainer request. */
export function validateContainerSpec(spec: ContainerSpec, sandbox: SandboxSpec): Result<ContainerSpec, HcrError> {
  const problem =
    checkName(spec.metadata.name, 'config.metadata.name') ??
    (spec.image === '' ? errors.invalidArgument('config.image.image is required', 'config.image') : null) ??
    checkLogPath(spec.logPath, sandbox.logDirectory) ??
    checkMaps(spec.labels, spec.annotations, 'container') ??
    checkMounts(spec) ??
    (spec.envs.some((e) => e.key === '' || e.key.includes('=') || e.key.includes('\0') || e.value.includes('\0'))
      ? errors.invalidArgument('config.envs: every variable needs a non-empty key without "=" or NUL')
      : null) ??
    ([...spec.command, ...spec.args].some((a) => a.includes('\0'))
      ? errors.invalidArgument('config.command/args must not contain NUL')
      : null) ??
    (spec.workingDir !== '' && !isAbsolute(spec.workingDir)
      ? errors.invalidArgument(`config.working_dir ${JSON.stringify(spec.workingDir)} must be absolute`)
      : null);
  return problem === null ? ok(spec) : err(problem);
}

function checkLogPath(logPath: string, logDirectory: string): HcrError | null {
  if (logPath === '') return null;
  if (logDirectory === '') {
    return errors.invalidArgument(
      `config.log_path ${JSON.stringify(logPath)} is set but the pod has no log_directory to put it in`,
      'config.log_path',
    );
  }
  if (isAbsolute(logPath) || logPath.includes('\0')) {
    return errors.invalidArgument(
      `config.log_path ${JSON.stringify(logPath)} must be relative to the pod's log_directory`,
      'config.log_path',
    );
  }
  const n = normalize(logPath);
  if (n === '..' || n.startsWith('../') || n === '.' || n.endsWith('/')) {
    return errors.invalidArgument(
      `config.log_path ${JSON.stringify(logPath)} escapes the pod's log_directory`,
      'config.log_path',
    );
  }
  return null;
}

function checkMounts(spec: ContainerSpec): HcrError | null {
  for (const [i, m] of spec.mounts.entries()) {
    const field = `config.mounts[${i}]`;
    if (!isAbsolute(m.containerPath) || m.containerPath.includes('\0')) {
      return errors.invalidArgument(
        `${field}.container_path ${JSON.stringify(m.containerPath)} must be an absolute path`,
        field,
      );
    }
    if (!isAbsolute(m.hostPath) || m.hostPath.includes('\0')) {
      return errors.invalidArgument(`${field}.host_path ${JSON.stringify(m.hostPath)} must be an absolute path`, field);
    }
    if (normalize(m.containerPath) === '/')
      return errors.invalidArgument(`${field}: cannot mount over the container's root`, field);
  }
  return null;
}

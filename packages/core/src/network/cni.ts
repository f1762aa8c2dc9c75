import { err, errAsync, ok, okAsync, type Result, ResultAsync } from 'neverthrow';
import { match } from 'ts-pattern';
import { errors, type HcrError, toHcrError } from '../errors.js';
import type { SandboxSpec } from '../types.js';
import { compareVersions, findPlugin, type NetworkConfList, type PluginConf } from './config.js';
import { runProcess, type ExecOutcome, systemPath, tail } from './exec.js';

/** The CNI operations a runtime performs on an attachment. */
export type CniCommand = 'ADD' | 'DEL' | 'CHECK';

/** The per-attachment parameters; CHECK and DEL must repeat those of the ADD. */
export interface Attachment {
  /** CNI_CONTAINERID: the sandbox id. */
  readonly containerId: string;
  /** CNI_IFNAME. */
  readonly ifName: string;
  /** CNI_NETNS; null only for a DEL after the namespace is gone. */
  readonly netnsPath: string | null;
  /** CNI_ARGS as ordered key/value pairs. */
  readonly args: readonly (readonly [string, string])[];
  /** Capability arguments, offered to plugins that declare the capability. */
  readonly capabilityArgs: Readonly<Record<string, unknown>>;
}

/** Where plugins live and how long each may run. */
export interface PluginExecOptions {
  readonly binDirs: readonly string[];
  /** Per plugin execution. */
  readonly timeoutMs: number;
}

/** The interface name CNI creates in every pod. */
export const POD_IFNAME = 'eth0';

/** CNI_ARGS for a Kubernetes pod, in the form the kubelet's runtimes pass them. */
export function kubernetesCniArgs(sandboxId: string, spec: SandboxSpec): [string, string][] {
  return [
    ['K8S_POD_NAMESPACE', spec.metadata.namespace],
    ['K8S_POD_NAME', spec.metadata.name],
    ['K8S_POD_INFRA_CONTAINER_ID', sandboxId],
    ['K8S_POD_UID', spec.metadata.uid],
    // Plugins refuse CNI_ARGS keys they do not know unless told to ignore them.
    ['IgnoreUnknown', '1'],
  ];
}

/** Encodes CNI_ARGS; `;` and `=` are the separators, so values must not contain them. */
export function formatCniArgs(args: readonly (readonly [string, string])[]): Result<string, HcrError> {
  for (const [k, v] of args) {
    if (/[;=]/.test(k) || /[;=]/.test(v)) {
      return err(errors.invalidArgument(`CNI argument ${k}="${v}" must not contain ";" or "="`, 'metadata'));
    }
  }
  return ok(args.map(([k, v]) => `${k}=${v}`).join(';'));
}

/**
 * Capability arguments (CNI conventions) for a pod: host port mappings for
 * plugins declaring `portMappings`, and the pod's DNS for those declaring `dns`.
 */
export function capabilityArgs(spec: SandboxSpec): Record<string, unknown> {
  const caps: Record<string, unknown> = {};
  const ports = spec.portMappings
    .filter((p) => p.hostPort > 0)
    .map((p) => ({
      hostPort: p.hostPort,
      containerPort: p.containerPort,
      protocol: p.protocol.toLowerCase(),
      ...(p.hostIp === '' ? {} : { hostIP: p.hostIp }),
    }));
  if (ports.length > 0) caps['portMappings'] = ports;
  if (spec.dns !== null) {
    caps['dns'] = { servers: [...spec.dns.servers], searches: [...spec.dns.searches], options: [...spec.dns.options] };
  }
  return caps;
}

/**
 * The request configuration one plugin receives on stdin (CNI spec §3): the
 * plugin's own config with the list's `name` and `cniVersion`, `runtimeConfig`
 * holding the capabilities it declares and the runtime provides,
 * `prevResult` when there is one, and `capabilities` removed.
 */
export function requestConfig(
  list: NetworkConfList,
  plugin: PluginConf,
  capabilityArguments: Readonly<Record<string, unknown>>,
  prevResult: unknown,
): Record<string, unknown> {
  const { capabilities, ...rest } = plugin as Record<string, unknown>;
  const conf: Record<string, unknown> = { ...rest, cniVersion: list.cniVersion, name: list.name };
  const runtimeConfig: Record<string, unknown> = {};
  if (typeof capabilities === 'object' && capabilities !== null) {
    for (const [cap, declared] of Object.entries(capabilities)) {
      if (declared === true && capabilityArguments[cap] !== undefined) runtimeConfig[cap] = capabilityArguments[cap];
    }
  }
  if (Object.keys(runtimeConfig).length > 0) conf['runtimeConfig'] = runtimeConfig;
  if (prevResult !== null && prevResult !== undefined) conf['prevResult'] = prevResult;
  return conf;
}

/** The environment of a plugin execution: ours without stale CNI_* variables, plus the protocol parameters. */
export function pluginEnv(
  command: CniCommand,
  attachment: Attachment,
  binDirs: readonly string[],
  base: NodeJS.ProcessEnv = process.env,
): Result<NodeJS.ProcessEnv, HcrError> {
  const args = formatCniArgs(attachment.args);
  if (args.isErr()) return err(args.error);
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(base)) if (!k.startsWith('CNI_')) env[k] = v;
  // Plugins such as portmap and firewall run iptables by name.
  env['PATH'] = systemPath(base['PATH'] ?? '');
  env['CNI_COMMAND'] = command;
  env['CNI_CONTAINERID'] = attachment.containerId;
  env['CNI_IFNAME'] = attachment.ifName;
  env['CNI_PATH'] = binDirs.join(':');
  if (attachment.netnsPath !== null) env['CNI_NETNS'] = attachment.netnsPath;
  if (args.value !== '') env['CNI_ARGS'] = args.value;
  return ok(env);
}

/** CNI well-known error codes that mean "not now" rather than "broken". */
const TRANSIENT_CNI_CODES = new Set([11, 50, 51]);

/** Turns a failed plugin execution into the error class a caller can act on. */
export function pluginFailure(
  command: CniCommand,
  list: NetworkConfList,
  plugin: string,
  outcome: Exclude<ExecOutcome, { kind: 'exited'; code: 0 }>,
  timeoutMs: number,
): HcrError {
  const where = `CNI ${command} of network "${list.name}" failed in plugin "${plugin}"`;
  return match(outcome)
    .with({ kind: 'spawnError' }, (o) => errors.unavailable(`${where}: cannot execute it: ${o.error.message}`, o.error))
    .with({ kind: 'timeout' }, (o) => {
      const said = tail(o.stderr, 500);
      return errors.deadlineExceeded(`${where}: no answer within ${timeoutMs} ms${said === '' ? '' : `: ${said}`}`);
    })
    .with({ kind: 'exited' }, (o) => {
      const parsed = parseCniError(o.stdout);
      if (parsed === null) {
        const why = o.signal !== null ? `killed by ${o.signal}` : `exit status ${o.code ?? '?'}`;
        const said = tail(o.stderr) || tail(o.stdout) || 'no output';
        return errors.internal(`${where} (${why}): ${said}`);
      }
      const text = `${where}: ${parsed.msg}${parsed.details === '' ? '' : `: ${parsed.details}`} (CNI error code ${parsed.code})`;
      return TRANSIENT_CNI_CODES.has(parsed.code) ? errors.unavailable(text) : errors.internal(text);
    })
    .exhaustive();
}

/** A CNI error result, as plugins print it on stdout. */
export interface CniError {
  readonly code: number;
  readonly msg: string;
  readonly details: string;
}

/** Reads a CNI error result (`{code, msg, details}`); null when the output is not one. */
export function parseCniError(stdout: string): CniError | null {
  let v: unknown;
  try {
    v = JSON.parse(stdout);
  } catch {
    return null;
  }
  if (typeof v !== 'object' || v === null) return null;
  const o = v as Record<string, unknown>;
  if (typeof o['code'] !== 'number' || typeof o['msg'] !== 'string') return null;
  return { code: o['code'], msg: o['msg'], details: typeof o['details'] === 'string' ? o['details'] : '' };
}

/** Runs one plugin; for ADD returns its result, for DEL and CHECK null. */
export function invokePlugin(
  command: CniCommand,
  list: NetworkConfList,
  plugin: PluginConf,
  attachment: Attachment,
  prevResult: unknown,
  options: PluginExecOptions,
): ResultAsync<unknown, HcrError> {
  const binary = findPlugin(plugin.type, options.binDirs);
  if (binary === null) {
    return errAsync(
      errors.unavailable(
        `CNI ${command} of network "${list.name}": plugin "${plugin.type}" not found in ${options.binDirs.join(', ')}`,
      ),
    );
  }
  const env = pluginEnv(command, attachment, options.binDirs);
  if (env.isErr()) return errAsync(env.error);
  const input = JSON.stringify(requestConfig(list, plugin, attachment.capabilityArgs, prevResult));
  return ResultAsync.fromPromise(runProcess(binary, [], { input, env: env.value, timeoutMs: options.timeoutMs }), (e) =>
    toHcrError(e, `running CNI plugin ${plugin.type}`),
  ).andThen((outcome): Result<unknown, HcrError> => {
    if (outcome.kind !== 'exited' || outcome.code !== 0) {
      return err(pluginFailure(command, list, plugin.type, outcome, options.timeoutMs));
    }
    if (command !== 'ADD') return ok(null);
    try {
      const result: unknown = JSON.parse(outcome.stdout);
      if (typeof result === 'object' && result !== null && !Array.isArray(result)) return ok(result);
    } catch {
      // reported below
    }
    return err(
      errors.internal(
        `CNI ADD of network "${list.name}": plugin "${plugin.type}" succeeded but printed no JSON result: ${
          tail(outcome.stdout, 500) || '(empty)'
        }`,
      ),
    );
  });
}

function sequence<T>(
  items: readonly T[],
  initial: unknown,
  step: (item: T, prev: unknown) => ResultAsync<unknown, HcrError>,
): ResultAsync<unknown, HcrError> {
  return items.reduce<ResultAsync<unknown, HcrError>>(
    (acc, item) => acc.andThen((prev) => step(item, prev)),
    okAsync<unknown, HcrError>(initial),
  );
}

/** ADD: runs the plugins in order, each getting the previous one's result; returns the final result. */
export function addNetworkList(
  list: NetworkConfList,
  attachment: Attachment,
  options: PluginExecOptions,
): ResultAsync<unknown, HcrError> {
  return sequence(list.plugins, null, (plugin, prev) => invokePlugin('ADD', list, plugin, attachment, prev, options));
}

/**
 * DEL: runs the plugins in reverse order, each getting the ADD result (when
 * known and the version carries `prevResult` on DEL, i.e. 0.4.0+).
 */
export function delNetworkList(
  list: NetworkConfList,
  attachment: Attachment,
  addResult: unknown,
  options: PluginExecOptions,
): ResultAsync<void, HcrError> {
  const prev = compareVersions(list.cniVersion, '0.4.0') >= 0 ? addResult : null;
  return sequence([...list.plugins].reverse(), null, (plugin) =>
    invokePlugin('DEL', list, plugin, attachment, prev, options),
  ).map(() => undefined);
}

/** CHECK: runs the plugins in order against the ADD result; a list with `disableCheck` always passes. */
export function checkNetworkList(
  list: NetworkConfList,
  attachment: Attachment,
  addResult: unknown,
  options: PluginExecOptions,
): ResultAsync<void, HcrError> {
  if (list.disableCheck) return okAsync(undefined);
  if (compareVersions(list.cniVersion, '0.4.0') < 0) {
    return errAsync(
      errors.failedPrecondition(
        `CNI CHECK needs cniVersion 0.4.0 or later; network "${list.name}" (${list.source || 'cached'}) uses ${list.cniVersion}`,
      ),
    );
  }
  return sequence(list.plugins, null, (plugin) =>
    invokePlugin('CHECK', list, plugin, attachment, addResult, options),
  ).map(() => undefined);
}

import { resolve, sep } from 'node:path';
import type { Duplex } from 'node:stream';
import { err, errAsync, ok, okAsync, type Result, ResultAsync } from 'neverthrow';
import { errors, type HcrError, toHcrError } from '../errors.js';
import { type Logger, silentLogger } from '../logger.js';
import type { PodNetwork, SandboxSpec } from '../types.js';
import { type CacheRead, type CniCacheEntry, readCache, removeCache, writeCache } from './cache.js';
import {
  addNetworkList,
  type Attachment,
  capabilityArgs,
  checkNetworkList,
  delNetworkList,
  formatCniArgs,
  kubernetesCniArgs,
  POD_IFNAME,
  type PluginExecOptions,
} from './cni.js';
import { loadNetworkConfig, missingPlugins, type NetworkConfList } from './config.js';
import { connectInNamespace } from './connect.js';
import { createNamespace, isNamespaceFile, listNamespaces, removeNamespace } from './netns.js';
import { resolveCniOptions } from './options.js';
import { podNetworkFromResult } from './result.js';
import { applySysctls, splitInterfaceSysctls, validateSysctls } from './sysctl.js';
import { type CniOptions, type NetworkManager, type NetworkReadiness, networkSysctls } from './types.js';

/** Options of {@link CniNetworkManager}: where CNI lives, plus timeouts and a logger. */
export interface CniNetworkManagerOptions extends Partial<CniOptions> {
  /** Limit for one plugin execution (default 60 s). */
  readonly pluginTimeoutMs?: number;
  /** Limit for one host helper such as unshare, umount or a sysctl write (default 10 s). */
  readonly helperTimeoutMs?: number;
  /** Limit for {@link CniNetworkManager.connect} to get a connection up (default 10 s). */
  readonly connectTimeoutMs?: number;
  readonly logger?: Logger;
}

/** The CRI NetworkReady reason when pods cannot get a network yet. */
export const NETWORK_NOT_READY_REASON = 'NetworkPluginNotReady';

// CNI's container id rule (spec §2); the id also names files, so it is capped.
const SANDBOX_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

function checkSandboxId(sandboxId: string): Result<string, HcrError> {
  return SANDBOX_ID_RE.test(sandboxId)
    ? ok(sandboxId)
    : err(
        errors.invalidArgument(
          `sandbox id "${sandboxId}" is not usable as a CNI container id (letters, digits, "_", "." and "-", starting with a letter or digit, at most 128)`,
          'sandboxId',
        ),
      );
}

/** Serialises operations per key: CNI forbids concurrent operations on one container. */
class KeyedQueue {
  readonly #tails = new Map<string, Promise<unknown>>();

  run<T>(key: string, task: () => ResultAsync<T, HcrError>): ResultAsync<T, HcrError> {
    const before = this.#tails.get(key) ?? Promise.resolve();
    const result = before
      .then(async (): Promise<Result<T, HcrError>> => await task())
      .catch((e: unknown): Result<T, HcrError> => err(toHcrError(e)));
    this.#tails.set(key, result);
    void result.then(() => {
      if (this.#tails.get(key) === result) this.#tails.delete(key);
    });
    return new ResultAsync(result);
  }
}

function fromPromise<T>(p: Promise<T>, context: string): ResultAsync<T, HcrError> {
  return ResultAsync.fromPromise(p, (e) => toHcrError(e, context));
}

/**
 * The {@link NetworkManager} every engine shares: network namespaces
 * bind-mounted under `netnsDir`, and CNI (spec 1.0) run with the first config
 * of `confDir` and the plugins of `binDirs`.
 *
 * Every ADD is recorded under `cacheDir` — the config it ran with, its
 * parameters and its result — before and after it runs, so that CHECK and DEL
 * repeat exactly what ADD did even after a restart or a config change. All
 * calls are idempotent and serialised per sandbox; the caller records which
 * steps are done (`SandboxRecord.networkPhase`).
 */
export class CniNetworkManager implements NetworkManager {
  /** The locations in use, defaults filled in. */
  readonly options: CniOptions;
  readonly #exec: PluginExecOptions;
  readonly #helperTimeoutMs: number;
  readonly #connectTimeoutMs: number;
  readonly #log: Logger;
  readonly #queue = new KeyedQueue();

  /** Creates a manager; nothing is touched on the host until it is used. */
  constructor(options: CniNetworkManagerOptions = {}) {
    this.options = resolveCniOptions(options);
    this.#exec = { binDirs: this.options.binDirs, timeoutMs: options.pluginTimeoutMs ?? 60_000 };
    this.#helperTimeoutMs = options.helperTimeoutMs ?? 10_000;
    this.#connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    this.#log = (options.logger ?? silentLogger).child({ component: 'cni' });
  }

  createNetns(sandboxId: string): ResultAsync<string, HcrError> {
    const id = checkSandboxId(sandboxId);
    if (id.isErr()) return errAsync(id.error);
    const path = resolve(this.options.netnsDir, sandboxId);
    return this.#queue.run(`netns:${path}`, () =>
      createNamespace(this.options.netnsDir, sandboxId, this.#helperTimeoutMs),
    );
  }

  attach(sandboxId: string, netnsPath: string, spec: SandboxSpec): ResultAsync<PodNetwork, HcrError> {
    const id = checkSandboxId(sandboxId);
    if (id.isErr()) return errAsync(id.error);
    const sysctls = networkSysctls(spec.linux.sysctls);
    const valid = validateSysctls(sysctls);
    if (valid.isErr()) return errAsync(valid.error);
    const args = kubernetesCniArgs(sandboxId, spec);
    const argsOk = formatCniArgs(args);
    if (argsOk.isErr()) return errAsync(argsOk.error);

    return this.#queue.run(`cni:${sandboxId}`, () =>
      this.#requireNamespace(netnsPath)
        .andThen(() => this.#currentConfig('ADD'))
        .andThen((config) =>
          // A record left by an earlier ADD (a retry, or a crash before the caller
          // noted success) is undone first: CNI forbids a second ADD without DEL.
          this.#undoEarlierAdd(sandboxId, netnsPath).map(() => config),
        )
        .andThen((config) => {
          const { beforeAdd, afterAdd } = splitInterfaceSysctls(sysctls, POD_IFNAME);
          const entry: CniCacheEntry = {
            sandboxId,
            ifName: POD_IFNAME,
            netnsPath,
            args,
            capabilityArgs: capabilityArgs(spec),
            config,
            result: null,
          };
          return applySysctls(netnsPath, beforeAdd, this.#helperTimeoutMs)
            .andThen(() => fromPromise(writeCache(this.options.cacheDir, entry), 'recording the CNI attachment'))
            .andThen(() => this.#add(entry, afterAdd));
        }),
    );
  }

  check(sandboxId: string, netnsPath: string, spec: SandboxSpec, network: PodNetwork): ResultAsync<void, HcrError> {
    const id = checkSandboxId(sandboxId);
    if (id.isErr()) return errAsync(id.error);
    return this.#queue.run(`cni:${sandboxId}`, () =>
      this.#requireNamespace(netnsPath)
        .andThen(() => this.#readCache(sandboxId))
        .andThen((cached) => {
          if (cached.kind === 'found' && cached.entry.result !== null) {
            const e = cached.entry;
            return okAsync({ config: e.config, attachment: { ...attachmentOf(e), netnsPath }, result: e.result });
          }
          if (network.cniResult === null || network.cniResult === undefined) {
            return errAsync(errors.failedPrecondition(`sandbox ${sandboxId} has no CNI ADD result to check against`));
          }
          return this.#currentConfig('CHECK').map((config) => ({
            config,
            attachment: this.#attachment(sandboxId, netnsPath, spec),
            result: network.cniResult,
          }));
        })
        .andThen(({ config, attachment, result }) => checkNetworkList(config, attachment, result, this.#exec)),
    );
  }

  detach(
    sandboxId: string,
    netnsPath: string | null,
    spec: SandboxSpec,
    lastNetwork: PodNetwork | null = null,
  ): ResultAsync<void, HcrError> {
    const id = checkSandboxId(sandboxId);
    if (id.isErr()) return errAsync(id.error);
    return this.#queue.run(`cni:${sandboxId}`, () =>
      this.#readCache(sandboxId).andThen((cached) => {
        if (cached.kind === 'found') {
          const { entry } = cached;
          // An ADD that never recorded its result may still have reached the caller's record.
          const result = entry.result ?? lastNetwork?.cniResult ?? null;
          return this.#del({ ...entry, result }, netnsPath);
        }
        const { config, skipped } = loadNetworkConfig(this.options.confDir);
        if (config === null) {
          // Nothing recorded and nothing configured: no plugin could have been run for this pod.
          this.#log.warn(
            { sandboxId, confDir: this.options.confDir, skipped },
            'CNI DEL skipped: no cached attachment and no network config',
          );
          return fromPromise(removeCache(this.options.cacheDir, sandboxId), 'removing the CNI record');
        }
        const missing = missingPlugins(config, this.options.binDirs);
        const args = kubernetesCniArgs(sandboxId, spec);
        const argsError = formatCniArgs(args).match(
          () => null,
          (e) => e.message,
        );
        if ((missing.length > 0 || argsError !== null) && (lastNetwork?.cniResult ?? null) === null) {
          // The record is written before any ADD, so none ran; and no DEL could run either.
          this.#log.warn({ sandboxId, missing, argsError }, 'CNI DEL skipped: no cached attachment and DEL cannot run');
          return okAsync(undefined);
        }
        const entry: CniCacheEntry = {
          sandboxId,
          ifName: POD_IFNAME,
          netnsPath,
          args,
          capabilityArgs: capabilityArgs(spec),
          config,
          result: lastNetwork?.cniResult ?? null,
        };
        return this.#del(entry, netnsPath);
      }),
    );
  }

  removeNetns(netnsPath: string): ResultAsync<void, HcrError> {
    const path = resolve(netnsPath);
    return this.#queue.run(`netns:${path}`, () =>
      fromPromise(isNamespaceFile(path), `inspecting ${path}`).andThen((isNs) => {
        const dir = resolve(this.options.netnsDir);
        // Anywhere else, only an actual namespace mount may go: a wrong path must not delete a file.
        if (!isNs && !path.startsWith(dir + sep)) {
          return errAsync(
            errors.invalidArgument(`refusing to remove ${path}: it is not a network namespace and not under ${dir}`),
          );
        }
        return removeNamespace(path, this.#helperTimeoutMs);
      }),
    );
  }

  connect(netnsPath: string, port: number): ResultAsync<Duplex, HcrError> {
    if (!Number.isInteger(port) || port < 1 || port > 65_535) {
      return errAsync(errors.invalidArgument(`port ${port} is not a TCP port (1-65535)`, 'port'));
    }
    return this.#requireNamespace(netnsPath).andThen(() => connectInNamespace(netnsPath, port, this.#connectTimeoutMs));
  }

  readiness(): NetworkReadiness {
    const usable = this.#usableConfig();
    return usable.isOk()
      ? { ready: true, reason: '', message: `CNI network "${usable.value.name}" from ${usable.value.source}` }
      : { ready: false, reason: NETWORK_NOT_READY_REASON, message: usable.error };
  }

  listNetns(): ResultAsync<readonly string[], HcrError> {
    return listNamespaces(this.options.netnsDir);
  }

  #requireNamespace(netnsPath: string): ResultAsync<void, HcrError> {
    return fromPromise(isNamespaceFile(netnsPath), `inspecting ${netnsPath}`).andThen((isNs) =>
      isNs ? okAsync(undefined) : errAsync(errors.failedPrecondition(`network namespace ${netnsPath} does not exist`)),
    );
  }

  /** The config pods get now, provided every plugin it names is present; else why the network is not ready. */
  #usableConfig(): Result<NetworkConfList, string> {
    const { config, skipped } = loadNetworkConfig(this.options.confDir);
    if (config === null) {
      const why = skipped.map((s) => `${s.file}: ${s.reason}`).join('; ');
      return err(`no usable CNI network config in ${this.options.confDir}${why === '' ? '' : ` (${why})`}`);
    }
    const missing = missingPlugins(config, this.options.binDirs);
    if (missing.length > 0) {
      return err(
        `CNI network "${config.name}" (${config.source}) needs plugins not found in ${this.options.binDirs.join(', ')}: ${missing.join(', ')}`,
      );
    }
    return ok(config);
  }

  #currentConfig(command: string): ResultAsync<NetworkConfList, HcrError> {
    const usable = this.#usableConfig();
    return usable.isOk()
      ? okAsync(usable.value)
      : errAsync(errors.unavailable(`cannot run CNI ${command}: ${usable.error}`));
  }

  #readCache(sandboxId: string): ResultAsync<CacheRead, HcrError> {
    return fromPromise(readCache(this.options.cacheDir, sandboxId), `reading the CNI record of ${sandboxId}`).map(
      (cached) => {
        if (cached.kind === 'unreadable') {
          this.#log.warn({ sandboxId, reason: cached.reason }, 'ignoring an unreadable CNI record');
        }
        return cached;
      },
    );
  }

  #attachment(sandboxId: string, netnsPath: string | null, spec: SandboxSpec): Attachment {
    return {
      containerId: sandboxId,
      ifName: POD_IFNAME,
      netnsPath,
      args: kubernetesCniArgs(sandboxId, spec),
      capabilityArgs: capabilityArgs(spec),
    };
  }

  #undoEarlierAdd(sandboxId: string, netnsPath: string): ResultAsync<void, HcrError> {
    return this.#readCache(sandboxId).andThen((cached) => {
      if (cached.kind !== 'found') return okAsync(undefined);
      this.#log.info({ sandboxId }, 'undoing an earlier CNI ADD before adding again');
      return this.#del(cached.entry, netnsPath);
    });
  }

  /** Runs ADD for a recorded attachment; on any failure undoes it so nothing stays allocated. */
  #add(entry: CniCacheEntry, afterAdd: Record<string, string>): ResultAsync<PodNetwork, HcrError> {
    const netnsPath = entry.netnsPath as string;
    // Known once ADD succeeded, so that an undo after a later failure hands it to DEL.
    let added: unknown = null;
    return addNetworkList(entry.config, attachmentOf(entry), this.#exec)
      .andThen((result): Result<PodNetwork, HcrError> => {
        added = result;
        const network = podNetworkFromResult(result, netnsPath, entry.ifName);
        return network.mapErr((why) =>
          errors.internal(`CNI ADD of network "${entry.config.name}" returned an unusable result: ${why}`),
        );
      })
      .andThen((network) =>
        applySysctls(netnsPath, afterAdd, this.#helperTimeoutMs)
          .andThen(() =>
            fromPromise(writeCache(this.options.cacheDir, { ...entry, result: added }), 'recording the CNI result'),
          )
          .map(() => network),
      )
      .orElse((addError) =>
        // The spec asks for a DEL of the whole list after a failed ADD.
        this.#del({ ...entry, result: added }, netnsPath)
          .orElse((delError) => {
            this.#log.warn(
              { sandboxId: entry.sandboxId, error: delError.message },
              'CNI DEL after a failed ADD failed; the record is kept for the next DEL',
            );
            return okAsync(undefined);
          })
          .andThen(() => errAsync(addError)),
      );
  }

  /** Runs DEL for an attachment and forgets it. The namespace is passed only while it exists. */
  #del(entry: CniCacheEntry, netnsPath: string | null): ResultAsync<void, HcrError> {
    const candidate = netnsPath ?? entry.netnsPath;
    const present =
      candidate === null ? okAsync(false) : fromPromise(isNamespaceFile(candidate), `inspecting ${candidate}`);
    return present
      .andThen((isNs) =>
        delNetworkList(
          entry.config,
          { ...attachmentOf(entry), netnsPath: isNs ? candidate : null },
          entry.result,
          this.#exec,
        ),
      )
      .andThen(() => fromPromise(removeCache(this.options.cacheDir, entry.sandboxId), 'removing the CNI record'));
  }
}

function attachmentOf(entry: CniCacheEntry): Attachment {
  return {
    containerId: entry.sandboxId,
    ifName: entry.ifName,
    netnsPath: entry.netnsPath,
    args: entry.args,
    capabilityArgs: entry.capabilityArgs,
  };
}

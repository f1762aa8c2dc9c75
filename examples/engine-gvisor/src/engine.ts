import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, rm } from 'node:fs/promises';
import { join, posix } from 'node:path';
import type { Duplex } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  errors,
  HcrError,
  nowNanos,
  toHcrError,
  type ContainerCreated,
  type ContainerRef,
  type ContainerStats,
  type EngineCapabilities,
  type EngineContainerStatus,
  type EngineContext,
  type EngineEvent,
  type EngineHealth,
  type EngineInventory,
  type EngineResult,
  type EngineSandboxStatus,
  type ExecSyncResult,
  type LinuxResources,
  type Logger,
  type RuntimeEngine,
  type SandboxCreated,
  type SandboxRef,
  type SandboxSpec,
  type SandboxStats,
  type StreamIO,
} from '@hcr/core';
import { ResultAsync } from 'neverthrow';
import { match } from 'ts-pattern';
import type { GvisorEngineConfig } from './config.js';
import { diskUsage, netnsCounters, overlayUpperDir, waitRunscGone } from './host.js';
import { closeFds, LogPump, makeFifos, openFifoWriters } from './logs.js';
import { CriAnnotation, type OciProcess, type OciSpec } from './oci.js';
import { installPauseRootfs } from './pause.js';
import {
  RecordFile,
  Records,
  type ContainerMeta,
  type ExitRecord,
  type SandboxMeta,
  type StartRecord,
} from './records.js';
import { Runsc, runscError, runscMessage, type RunscOutcome } from './runsc.js';
import { containerOciSpec, podResources, sandboxOciSpec } from './spec.js';
import * as streams from './streams.js';
import { resolveUser } from './user.js';

/** How long an exit waits for the container's last output to reach its log. */
const LOG_DRAIN_MS = 5_000;
/** How long a stop waits for SIGKILL to take effect, and removal for runsc's processes to go. */
const KILL_WAIT_MS = 10_000;
/** How often a failed start-up probe is retried by health(). */
const REPROBE_INTERVAL_MS = 60_000;

/** Result of the start-up probe: can runsc run a process on the configured platform? */
interface Probe {
  readonly ok: boolean;
  readonly reason: string;
  readonly message: string;
  readonly version: string;
  readonly at: number;
}

/** A started container whose output and exit the engine follows. */
interface Followed {
  readonly pump: LogPump;
  /** Settles with the exit once it is recorded (after the log has drained). */
  readonly exited: Promise<ExitRecord>;
  /** Stops following without recording anything (the engine closes, or the container is removed). */
  readonly abandon: () => void;
}

/** Rejection of {@link Followed.exited} when the engine closes before the container exits. */
class EngineClosing extends Error {}

/**
 * The gvisor engine: each pod is one gVisor sandbox — one application kernel
 * in user space — started by a tiny pause container in the pod network
 * namespace HCR made; each CRI container is a further container inside that
 * sandbox (runsc's multi-container mode, selected with the CRI annotations
 * containerd uses). Root filesystems come from HCR's image service, output is
 * copied from FIFOs into the CRI log, exits come from `runsc wait`.
 *
 * State lives in runsc's root directory and in one directory per sandbox and
 * per container under the engine's runtime directory, so a restarted HCR
 * resumes following every running container.
 */
export class GvisorEngine implements RuntimeEngine {
  readonly kind = 'gvisor';
  readonly name: string;
  readonly capabilities: EngineCapabilities;

  private readonly log: Logger;
  private readonly listeners = new Set<(event: EngineEvent) => void>();
  private readonly followed = new Map<string, Followed>();
  /** Resumptions in flight, so that concurrent callers share one pump and one waiter. */
  private readonly resuming = new Map<string, Promise<Followed | null>>();
  /** Containers being removed: an exit seen now must not recreate their directory. */
  private readonly removing = new Set<string>();
  private probe: Probe;
  private probing: Promise<Probe> | null = null;
  private closed = false;

  private constructor(
    private readonly config: GvisorEngineConfig,
    private readonly context: EngineContext,
    private readonly runsc: Runsc,
    private readonly records: Records,
    private readonly pauseRootfs: string,
    probe: Probe,
  ) {
    this.name = context.name;
    this.log = context.logger.child({ engine: context.name });
    this.probe = probe;
    this.capabilities = {
      hostNetwork: false,
      hostPid: false,
      hostIpc: false,
      privileged: false,
      exec: true,
      execSync: true,
      attach: false,
      attachStdin: false,
      // To the pod's IP: gVisor's network stack keeps the pod's loopback to itself (see portForward).
      portForward: true,
      tty: false,
      hostPathMounts: true,
      updateResources: false,
      stats: true,
      reopenLog: true,
      imageKinds: ['oci'],
    };
  }

  /**
   * Validates the config, installs the pause program, probes runsc on the
   * configured platform and resumes following containers a previous HCR
   * started. A host where runsc cannot run yields an engine that reports
   * itself unready (with the reason) rather than no engine at all.
   */
  static async open(config: GvisorEngineConfig, context: EngineContext): Promise<GvisorEngine> {
    if (!/^[a-z0-9_-]+$/.test(config.platform)) {
      throw errors.invalidArgument(`platform ${JSON.stringify(config.platform)} is not a platform name`, 'platform');
    }
    if (!posix.isAbsolute(config.cgroupParent)) {
      throw errors.invalidArgument(
        `cgroupParent ${JSON.stringify(config.cgroupParent)} must be an absolute cgroupfs path`,
        'cgroupParent',
      );
    }
    const root = config.root !== '' ? config.root : join(context.runtimeDir, 'runsc');
    await mkdir(root, { recursive: true, mode: 0o700 });
    const runsc = new Runsc({
      binary: config.runsc,
      root,
      platform: config.platform,
      network: 'sandbox',
      debugLogDir: config.debugLogDir,
      timeoutMs: config.commandTimeoutMs,
    });
    const pauseRootfs = await installPauseRootfs(join(context.runtimeDir, 'pause'));
    const records = new Records(context.runtimeDir);
    const probe = await runProbe(config, context.runtimeDir);
    const engine = new GvisorEngine(config, context, runsc, records, pauseRootfs, probe);
    if (!probe.ok) engine.log.warn({ reason: probe.reason, err: probe.message }, 'runsc is not usable; engine unready');
    await engine.resumeFollowing();
    return engine;
  }

  // ------------------------------------------------------------------ health

  health(): EngineResult<EngineHealth> {
    return this.run('health', async () => {
      let probe = this.probe;
      if (!probe.ok && Date.now() - probe.at > REPROBE_INTERVAL_MS) probe = await this.reprobe();
      return {
        ready: probe.ok,
        reason: probe.reason,
        message: probe.message,
        info: {
          runsc: probe.version,
          platform: this.config.platform,
          network: 'sandbox (gVisor network stack)',
          netSysctlMask: String(this.runsc.masksNetSysctls),
          root: this.runsc.root,
        },
      };
    });
  }

  inventory(): EngineResult<EngineInventory> {
    return this.run('inventory', async () => {
      const sandboxIds = new Set(await this.records.sandboxIds());
      const containerIds = new Set(await this.records.containerIds());
      for (const c of await this.runsc.list()) {
        if (c.annotations[CriAnnotation.containerType] === 'sandbox') sandboxIds.add(c.id);
        else containerIds.add(c.id);
      }
      return { sandboxIds: [...sandboxIds], containerIds: [...containerIds] };
    });
  }

  // --------------------------------------------------------------- sandboxes

  createSandbox(sandbox: SandboxRef): EngineResult<SandboxCreated> {
    return this.run(`create pod sandbox ${sandbox.id}`, async () => {
      this.requireReady();
      const dir = this.records.sandboxDir(sandbox.id);
      const cgroupsPath = this.cgroupsPath(sandbox.spec, sandbox.id);
      const spec = sandboxOciSpec(sandbox, { pauseRootfs: this.pauseRootfs, cgroupsPath });
      if (spec.isErr()) throw spec.error;
      await this.records.put(dir, RecordFile.meta, { cgroupsPath: cgroupsPath ?? '' } satisfies SandboxMeta);
      await this.records.put(dir, RecordFile.bundle, spec.value);
      try {
        await this.runsc.create(sandbox.id, dir, join(dir, 'runsc-create.log'));
        await this.runsc.startSandbox(sandbox.id);
      } catch (e) {
        await this.destroySandbox(sandbox.id).catch((ce: unknown) =>
          this.log.error({ podSandboxId: sandbox.id, err: String(ce) }, 'cleanup of a failed sandbox failed'),
        );
        throw e;
      }
      const state = await this.runsc.state(sandbox.id);
      this.log.info({ podSandboxId: sandbox.id, pid: state?.pid ?? 0, cgroupsPath }, 'gVisor sandbox started');
      return { engineData: { sandboxPid: state?.pid ?? 0, cgroupsPath: cgroupsPath ?? '' } };
    });
  }

  stopSandbox(sandbox: SandboxRef, gracePeriodSeconds: number): EngineResult<void> {
    return this.run(`stop pod sandbox ${sandbox.id}`, async () => {
      const state = await this.runsc.state(sandbox.id);
      if (state === null || state.status === 'stopped') return;
      // Containers still running get SIGTERM and the grace period; then SIGKILL to pause ends the whole
      // sandbox (runsc stops a sandbox when its first container's process dies), which kills the rest.
      const running: string[] = [];
      for (const id of await this.containersOf(sandbox.id)) {
        const st = await this.runsc.state(id).catch(() => null);
        if (st?.status === 'running') running.push(id);
      }
      const followed = await Promise.all(running.map((id) => this.followedEntry(id)));
      const exits = Promise.all(followed.map((f) => f?.exited.catch(() => undefined)));
      await Promise.all(running.map((id) => this.runsc.kill(id, 'TERM').catch(() => false)));
      await within(exits, gracePeriodSeconds * 1000);
      await this.runsc.kill(sandbox.id, 'KILL', { all: true });
      if (!(await this.waitStopped(sandbox.id, KILL_WAIT_MS))) {
        throw errors.internal(`gVisor sandbox ${sandbox.id} still runs ${KILL_WAIT_MS} ms after SIGKILL`);
      }
      // The killed containers' exits are recorded once their waiters see the sandbox gone.
      await within(exits, KILL_WAIT_MS + LOG_DRAIN_MS);
    });
  }

  removeSandbox(sandbox: SandboxRef): EngineResult<void> {
    return this.run(`remove pod sandbox ${sandbox.id}`, () => this.destroySandbox(sandbox.id));
  }

  sandboxStatus(sandbox: SandboxRef): EngineResult<EngineSandboxStatus> {
    return this.run(`status of pod sandbox ${sandbox.id}`, async () => {
      const state = await this.runsc.state(sandbox.id);
      const meta = await this.records.get<SandboxMeta>(this.records.sandboxDir(sandbox.id), RecordFile.meta);
      return {
        alive: state?.status === 'running',
        info: {
          runscStatus: state?.status ?? 'absent',
          sandboxPid: state?.pid ?? 0,
          platform: this.config.platform,
          cgroupsPath: meta?.cgroupsPath ?? '',
        },
      };
    });
  }

  // -------------------------------------------------------------- containers

  createContainer(container: ContainerRef): EngineResult<ContainerCreated> {
    return this.run(`create container ${container.id}`, async () => {
      this.requireReady();
      const sandbox = await this.runsc.state(container.sandbox.id);
      if (sandbox?.status !== 'running') {
        throw errors.failedPrecondition(
          `the gVisor sandbox of pod ${container.sandbox.id} is ${sandbox?.status ?? 'gone'}, so no container can join it`,
        );
      }
      const dir = this.records.containerDir(container.id);
      // The record comes first, so that removal finds (and releases) whatever the next steps make.
      await this.records.put(dir, RecordFile.meta, {
        sandboxId: container.sandbox.id,
        logPath: container.logPath,
        rootfs: '',
      } satisfies ContainerMeta);
      try {
        const rootfs = await unwrap(this.context.images.prepareRootfs(container.image.id, container.id));
        await this.records.put(dir, RecordFile.meta, {
          sandboxId: container.sandbox.id,
          logPath: container.logPath,
          rootfs: rootfs.path,
        } satisfies ContainerMeta);
        const user = await resolveUser(rootfs.path, container.spec.linux.security, container.image.config.user);
        const spec = containerOciSpec({
          id: container.id,
          sandbox: container.sandbox,
          spec: container.spec,
          image: container.image.config,
          imageName: container.spec.image,
          rootfs: rootfs.path,
          user,
        });
        if (spec.isErr()) throw spec.error;
        await this.records.put(dir, RecordFile.bundle, spec.value);
        await makeFifos(dir);
        await this.runsc.create(container.id, dir, join(dir, 'runsc-create.log'));
      } catch (e) {
        await this.destroyContainer(container.id).catch((ce: unknown) =>
          this.log.error({ containerId: container.id, err: String(ce) }, 'cleanup of a failed container failed'),
        );
        throw e;
      }
      return { engineData: {} };
    });
  }

  startContainer(container: ContainerRef): EngineResult<void> {
    return this.run(`start container ${container.id}`, async () => {
      const dir = this.records.containerDir(container.id);
      const meta = await this.requireMeta(container.id);
      // Writers first: a reader that opens a FIFO nobody holds for writing may see end-of-file at once.
      const fds = await openFifoWriters(dir);
      let pump: LogPump | undefined;
      let outcome: RunscOutcome;
      try {
        pump = await LogPump.open(dir, meta.logPath);
        outcome = await this.runsc.start(container.id, ['ignore', fds.stdout, fds.stderr]);
      } catch (e) {
        pump?.close();
        throw e;
      } finally {
        await closeFds(fds);
      }
      if (outcome.code !== 0) {
        // runsc wrote why to the container's stderr (it is runsc's own stderr); collect it from the pump.
        await pump.drained(1_000);
        const why = pump.stderrText();
        pump.close();
        throw runscError(`start container ${container.id}`, why, outcome);
      }
      await this.records.put(dir, RecordFile.started, { startedAt: nowNanos().toString() } satisfies StartRecord);
      this.follow(container.id, pump);
    });
  }

  stopContainer(container: ContainerRef, timeoutSeconds: number): EngineResult<void> {
    return this.run(`stop container ${container.id}`, async () => {
      const state = await this.runsc.state(container.id);
      if (state === null || state.status !== 'running') {
        await this.settledExit(container.id);
        return;
      }
      const followed = await this.followedEntry(container.id);
      const exited: Promise<unknown> =
        followed?.exited.catch(() => undefined) ?? this.waitStopped(container.id, KILL_WAIT_MS);
      if ((await this.runsc.kill(container.id, 'TERM')) && (await within(exited, timeoutSeconds * 1000))) return;
      await this.runsc.kill(container.id, 'KILL', { all: true });
      if (!(await within(exited, KILL_WAIT_MS + LOG_DRAIN_MS))) {
        throw errors.internal(`container ${container.id} still runs ${KILL_WAIT_MS} ms after SIGKILL`);
      }
    });
  }

  removeContainer(container: ContainerRef): EngineResult<void> {
    return this.run(`remove container ${container.id}`, () => this.destroyContainer(container.id));
  }

  containerStatus(container: ContainerRef): EngineResult<EngineContainerStatus> {
    return this.run(`status of container ${container.id}`, async () => {
      const dir = this.records.containerDir(container.id);
      await this.requireMeta(container.id);
      let started = await this.records.get<StartRecord>(dir, RecordFile.started);
      const recorded = await this.records.get<ExitRecord>(dir, RecordFile.exit);
      const state = recorded === null ? await this.runsc.state(container.id) : null;
      const exited = (exit: ExitRecord): EngineContainerStatus => ({
        state: 'exited',
        pid: 0,
        startedAt: started === null ? 0n : BigInt(started.startedAt),
        finishedAt: BigInt(exit.finishedAt),
        exitCode: exit.exitCode,
        reason: exit.reason,
        message: exit.message,
      });
      if (recorded !== null) return exited(recorded);
      return match(state?.status ?? 'absent')
        .with('created', 'creating', () => idle('created'))
        .with('running', 'paused', async () => {
          if (started === null) {
            // HCR stopped between `runsc start` and the record: the container runs, so it started.
            started = { startedAt: nowNanos().toString() };
            await this.records.put(dir, RecordFile.started, started);
          }
          await this.followedEntry(container.id);
          return { ...idle('running'), pid: state?.pid ?? 0, startedAt: BigInt(started.startedAt) };
        })
        .with('stopped', 'absent', async () => {
          if (started === null) {
            if (state === null) throw errors.notFound(`container ${container.id} has no runsc state`);
            return exited(neverStarted());
          }
          const exit = await this.settledExit(container.id);
          if (exit === null) throw errors.internal(`container ${container.id} stopped but its exit was not recorded`);
          return exited(exit);
        })
        .exhaustive();
    });
  }

  // ------------------------------------------------------------------ streams

  execSync(container: ContainerRef, cmd: readonly string[], timeoutSeconds: number): EngineResult<ExecSyncResult> {
    return this.run(`exec in container ${container.id}`, async () =>
      streams.execSync(this.runsc, container.id, cmd, timeoutSeconds, {
        dir: this.records.containerDir(container.id),
        process: await this.containerProcess(container.id),
        maxBytes: this.config.execSyncMaxOutputBytes,
      }),
    );
  }

  exec(container: ContainerRef, cmd: readonly string[], io: StreamIO): EngineResult<{ readonly exitCode: number }> {
    return this.run(`exec in container ${container.id}`, async () => {
      if (io.tty) throw errors.unsupported(this.name, 'tty', `engine "${this.name}" does not support a TTY for exec`);
      const exitCode = await streams.runExec(this.runsc, container.id, cmd, io, {
        dir: this.records.containerDir(container.id),
        process: await this.containerProcess(container.id),
      });
      return { exitCode };
    });
  }

  attach(container: ContainerRef, _io: StreamIO): EngineResult<void> {
    return this.run(`attach to container ${container.id}`, async () => {
      // The container's stdout and stderr belong to its log FIFOs; runsc has no attach of its own.
      throw errors.unsupported(this.name, 'attach');
    });
  }

  /**
   * Forwards to the pod's primary IP from the node. gVisor's network stack
   * owns the pod's interfaces and loopback inside the sandbox, so unlike a
   * runc pod there is no host-side loopback to enter: a server listening
   * only on 127.0.0.1 inside the pod cannot be reached, one on the pod IP
   * (or all addresses) can.
   */
  portForward(sandbox: SandboxRef, port: number, stream: Duplex): EngineResult<void> {
    return this.run(`port-forward to port ${port} of pod ${sandbox.id}`, async () => {
      const ip = sandbox.network.ips[0];
      if (ip === undefined) throw errors.failedPrecondition(`pod ${sandbox.id} has no IP to forward to`);
      await streams.portForward(ip, port, stream);
    });
  }

  // -------------------------------------------------------------------- stats

  containerStats(container: ContainerRef): EngineResult<ContainerStats> {
    return this.run(`stats of container ${container.id}`, async () => {
      const meta = await this.requireMeta(container.id);
      const [stats, writable] = await Promise.all([this.runsc.stats(container.id), this.writableLayerBytes(meta)]);
      // gVisor accounts memory per sandbox (one kernel, one memory file), so a container's figure is its pod's.
      return {
        timestamp: nowNanos(),
        cpuUsageCoreNanoSeconds: stats.cpuNanos,
        memoryWorkingSetBytes: stats.sandboxMemoryBytes,
        memoryUsageBytes: stats.sandboxMemoryBytes,
        writableLayerBytes: writable,
      };
    });
  }

  sandboxStats(sandbox: SandboxRef, containers: readonly ContainerRef[]): EngineResult<SandboxStats> {
    return this.run(`stats of pod sandbox ${sandbox.id}`, async () => {
      const [pod, state] = await Promise.all([this.runsc.stats(sandbox.id), this.runsc.state(sandbox.id)]);
      const cpu = await Promise.all(
        containers.map((c) =>
          this.runsc.stats(c.id).then(
            (s) => s.cpuNanos,
            () => 0n,
          ),
        ),
      );
      return {
        timestamp: nowNanos(),
        cpuUsageCoreNanoSeconds: cpu.reduce((a, b) => a + b, pod.cpuNanos),
        memoryWorkingSetBytes: pod.sandboxMemoryBytes,
        memoryUsageBytes: pod.sandboxMemoryBytes,
        network: await netnsCounters(state?.pid ?? 0),
        processes: pod.pids,
      };
    });
  }

  updateContainerResources(container: ContainerRef, _resources: LinuxResources): EngineResult<void> {
    return this.run(`update resources of container ${container.id}`, async () => {
      // This runsc has no `update`; pod limits are set once, on the sandbox's cgroup.
      throw errors.unsupported(this.name, 'updateResources');
    });
  }

  reopenContainerLog(container: ContainerRef): EngineResult<void> {
    return this.run(`reopen log of container ${container.id}`, async () => {
      const followed = await this.followedEntry(container.id);
      if (followed === null) throw errors.failedPrecondition(`container ${container.id} is not running`);
      followed.pump.reopen();
    });
  }

  // ------------------------------------------------------------------ events

  subscribe(listener: (event: EngineEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const f of this.followed.values()) {
      f.abandon();
    }
    this.followed.clear();
    this.listeners.clear();
  }

  // ---------------------------------------------------------------- internals

  private run<T>(what: string, fn: () => Promise<T>): ResultAsync<T, HcrError> {
    return ResultAsync.fromPromise((async () => fn())(), (e) => {
      const err = toHcrError(e, what);
      return err.details.engine !== undefined
        ? err
        : new HcrError(err.code, err.message, { cause: err.cause, details: { ...err.details, engine: this.name } });
    });
  }

  private requireReady(): void {
    if (!this.probe.ok) throw errors.unavailable(`engine "${this.name}" is not ready: ${this.probe.message}`);
  }

  private async requireMeta(id: string): Promise<ContainerMeta> {
    const meta = await this.records.get<ContainerMeta>(this.records.containerDir(id), RecordFile.meta);
    if (meta === null) throw errors.notFound(`engine "${this.name}" has no container ${id}`);
    return meta;
  }

  /** The process section of a container's bundle, the template of its execs. */
  private async containerProcess(id: string): Promise<OciProcess> {
    const spec = await this.records.get<OciSpec>(this.records.containerDir(id), RecordFile.bundle);
    if (spec === null) throw errors.notFound(`engine "${this.name}" has no bundle for container ${id}`);
    return spec.process;
  }

  private async reprobe(): Promise<Probe> {
    this.probing ??= runProbe(this.config, this.context.runtimeDir).finally(() => (this.probing = null));
    this.probe = await this.probing;
    return this.probe;
  }

  /** The pod's cgroup: under the kubelet's parent, or the configured one when the pod has limits; else none. */
  private cgroupsPath(spec: SandboxSpec, id: string): string | null {
    const parent = spec.linux.cgroupParent;
    if (parent === '') return podResources(spec) === null ? null : posix.join(this.config.cgroupParent, id);
    if (parent.endsWith('.slice') || parent.includes(':')) {
      throw errors.failedPrecondition(
        `cgroup parent ${JSON.stringify(parent)} is a systemd slice; the gvisor engine supports the cgroupfs driver only (kubelet --cgroup-driver=cgroupfs)`,
      );
    }
    return posix.join(parent, id);
  }

  /** Container ids whose record names `sandboxId` as their pod. */
  private async containersOf(sandboxId: string): Promise<string[]> {
    const out: string[] = [];
    for (const id of await this.records.containerIds()) {
      const meta = await this.records.get<ContainerMeta>(this.records.containerDir(id), RecordFile.meta);
      if (meta?.sandboxId === sandboxId) out.push(id);
    }
    return out;
  }

  /** Resolves true once runsc reports `id` stopped or gone, false after `timeoutMs`. */
  private async waitStopped(id: string, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (let delay = 20; ; delay = Math.min(delay * 2, 250)) {
      const st = await this.runsc.state(id).catch(() => null);
      if (st === null || st.status === 'stopped') return true;
      if (Date.now() > deadline) return false;
      await sleep(delay);
    }
  }

  /** Removes a container's runsc state, root filesystem and records; absent parts are fine. */
  private async destroyContainer(id: string): Promise<void> {
    this.removing.add(id);
    try {
      const dir = this.records.containerDir(id);
      await this.runsc.delete(id);
      const followed = this.followed.get(id);
      if (followed !== undefined) {
        await within(
          followed.exited.catch(() => undefined),
          LOG_DRAIN_MS,
        );
        followed.abandon();
        this.followed.delete(id);
      }
      if (!(await waitRunscGone(dir, KILL_WAIT_MS))) {
        throw errors.internal(`runsc processes of container ${id} are still running after runsc delete`);
      }
      await unwrap(this.context.images.releaseRootfs(id));
      await this.records.remove(dir);
    } finally {
      this.removing.delete(id);
    }
  }

  /** Removes a sandbox, every container of it, its runsc state and records; absent parts are fine. */
  private async destroySandbox(id: string): Promise<void> {
    for (const cid of await this.containersOf(id)) await this.destroyContainer(cid);
    // Containers runsc knows in this sandbox without a record (a crash between runsc create and the record).
    for (const c of await this.runsc.list()) {
      if (c.id !== id && c.annotations[CriAnnotation.sandboxId] === id) await this.runsc.delete(c.id);
    }
    await this.runsc.delete(id);
    const dir = this.records.sandboxDir(id);
    if (!(await waitRunscGone(dir, KILL_WAIT_MS))) {
      throw errors.internal(`runsc processes of sandbox ${id} are still running after runsc delete`);
    }
    await this.records.remove(dir);
  }

  /** Follows every container a previous engine started and did not see end. */
  private async resumeFollowing(): Promise<void> {
    for (const id of await this.records.containerIds()) {
      const followed = await this.followedEntry(id).catch((e: unknown) => {
        this.log.warn({ containerId: id, err: String(e) }, 'cannot resume following container');
        return null;
      });
      if (followed !== null) this.log.info({ containerId: id }, 'resumed following container');
    }
  }

  /**
   * The followed entry of a started container whose exit is not recorded yet,
   * (re)attaching its log pump and waiter if this engine has none; null for
   * containers that were never started or have ended.
   */
  private async followedEntry(id: string): Promise<Followed | null> {
    const existing = this.followed.get(id);
    if (existing !== undefined) return existing;
    if (this.closed) return null;
    let pending = this.resuming.get(id);
    if (pending === undefined) {
      pending = (async () => {
        const dir = this.records.containerDir(id);
        const [meta, started, exit] = await Promise.all([
          this.records.get<ContainerMeta>(dir, RecordFile.meta),
          this.records.get<StartRecord>(dir, RecordFile.started),
          this.records.get<ExitRecord>(dir, RecordFile.exit),
        ]);
        if (meta === null || started === null || exit !== null) return null;
        return this.follow(id, await LogPump.open(dir, meta.logPath));
      })().finally(() => this.resuming.delete(id));
      this.resuming.set(id, pending);
    }
    return pending;
  }

  /**
   * The exit of a container runsc reports stopped: recorded already, or
   * recorded by its waiter shortly (`runsc wait` answers at once for a stopped
   * container while its sandbox lives, and reports a dead sandbox as such).
   */
  private async settledExit(id: string): Promise<ExitRecord | null> {
    const dir = this.records.containerDir(id);
    const recorded = await this.records.get<ExitRecord>(dir, RecordFile.exit);
    if (recorded !== null) return recorded;
    const followed = await this.followedEntry(id);
    if (followed === null) return this.records.get<ExitRecord>(dir, RecordFile.exit);
    return (await within(followed.exited, KILL_WAIT_MS + LOG_DRAIN_MS))
      ? this.records.get<ExitRecord>(dir, RecordFile.exit)
      : null;
  }

  /** Follows a started container: its output into the log, its exit into a record and an event. */
  private follow(id: string, pump: LogPump): Followed {
    const current: { waiter: ChildProcess | null } = { waiter: null };
    const exited = (async (): Promise<ExitRecord> => {
      const { exitCode, message } = await this.waitExit(id, (child) => (current.waiter = child));
      if (!(await pump.drained(LOG_DRAIN_MS))) {
        // A process outside the container's PID namespace (shared-PID pods) may still hold its stdout.
        this.log.warn({ containerId: id }, 'container output still open after its exit; log closed');
      }
      pump.close();
      if (this.closed) throw new EngineClosing();
      const exit: ExitRecord = {
        exitCode,
        finishedAt: nowNanos().toString(),
        reason: exitCode === 0 ? 'Completed' : 'Error',
        message,
      };
      if (!this.removing.has(id)) await this.records.put(this.records.containerDir(id), RecordFile.exit, exit);
      this.followed.delete(id);
      this.emit({
        type: 'container-exited',
        containerId: id,
        exitCode,
        finishedAt: BigInt(exit.finishedAt),
        reason: exit.reason,
      });
      return exit;
    })();
    exited.catch((e: unknown) => {
      if (!(e instanceof EngineClosing)) {
        this.log.error({ containerId: id, err: String(e) }, 'following a container failed');
      }
    });
    const entry: Followed = {
      pump,
      exited,
      abandon: () => {
        current.waiter?.kill('SIGKILL');
        pump.close();
      },
    };
    this.followed.set(id, entry);
    return entry;
  }

  /**
   * Waits for a container's first process to end with `runsc wait`. When the
   * wait itself fails, runsc's view decides: a container whose sandbox is gone
   * was killed with it; one that still runs is waited for again.
   */
  private async waitExit(
    id: string,
    onSpawn: (waiter: ChildProcess | null) => void,
  ): Promise<{ exitCode: number; message: string }> {
    for (let attempt = 1; ; attempt++) {
      const r = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
        const child = spawn(this.runsc.binary, [...this.runsc.globalArgs(), 'wait', id], {
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        onSpawn(child);
        let stdout = '';
        let stderr = '';
        child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
        child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
        child.once('error', (e) => resolve({ code: null, stdout, stderr: e.message }));
        child.once('close', (code) => resolve({ code, stdout, stderr }));
      });
      onSpawn(null);
      if (this.closed) throw new EngineClosing();
      if (r.code === 0) {
        const status = (JSON.parse(r.stdout) as { exitStatus?: unknown }).exitStatus;
        if (typeof status === 'number') return { exitCode: status, message: '' };
      }
      const state = await this.runsc.state(id).catch(() => null);
      if (state === null || state.status === 'stopped') {
        return {
          exitCode: 137,
          message: `killed with its gVisor sandbox (${runscMessage(r.stderr) || 'no exit status'})`,
        };
      }
      await sleep(Math.min(attempt, 5) * 1000);
    }
  }

  private async writableLayerBytes(meta: ContainerMeta): Promise<number> {
    if (meta.rootfs === '') return 0;
    const upper = await overlayUpperDir(meta.rootfs);
    return upper === null ? 0 : diskUsage(upper);
  }

  private emit(event: EngineEvent): void {
    for (const l of this.listeners) {
      try {
        l(event);
      } catch (e) {
        this.log.error({ err: String(e) }, 'engine event listener threw');
      }
    }
  }
}

/** Creates a gvisor engine from its parsed config (the registration's `create`). */
export function createGvisorEngine(
  config: GvisorEngineConfig,
  context: EngineContext,
): ResultAsync<RuntimeEngine, HcrError> {
  return ResultAsync.fromPromise(GvisorEngine.open(config, context), (e) =>
    toHcrError(e, `engine ${context.name} (gvisor)`),
  );
}

/**
 * Checks that runsc exists, knows the platform and can run a process on it
 * (`runsc do true` without network, in a scratch state directory). Bounded:
 * the kvm platform hangs outright where nested virtualisation is broken.
 */
async function runProbe(config: GvisorEngineConfig, runtimeDir: string): Promise<Probe> {
  const at = Date.now();
  const root = join(runtimeDir, 'probe');
  const runsc = new Runsc({
    binary: config.runsc,
    root,
    platform: config.platform,
    network: 'none',
    debugLogDir: '',
    timeoutMs: config.probeTimeoutMs,
  });
  const fail = (reason: string, message: string, version = ''): Probe => ({ ok: false, reason, message, version, at });
  let version: string;
  try {
    version = await runsc.version(config.probeTimeoutMs);
  } catch (e) {
    return fail('RunscUnavailable', toHcrError(e).message);
  }
  const platforms = await runsc.platforms(config.probeTimeoutMs).catch((): string[] => []);
  if (platforms.length > 0 && !platforms.includes(config.platform)) {
    return fail(
      'PlatformUnknown',
      `runsc (${version}) has no platform ${JSON.stringify(config.platform)}; it offers ${platforms.join(', ')}`,
      version,
    );
  }
  try {
    await mkdir(root, { recursive: true, mode: 0o700 });
    const r = await runsc.run(['do', 'true'], { stdio: ['ignore', 'ignore', 'pipe'], cwd: '/' });
    if (r.code !== 0) {
      return fail(
        'ProbeFailed',
        `runsc could not run a process on platform ${config.platform}: ${runscMessage(r.stderr) || `exit ${r.code ?? r.signal}`}`,
        version,
      );
    }
  } catch (e) {
    const err = toHcrError(e);
    return fail(
      err.code === 'DeadlineExceeded' ? 'ProbeTimeout' : 'ProbeFailed',
      err.code === 'DeadlineExceeded'
        ? `runsc did not run a process on platform ${config.platform} within ${config.probeTimeoutMs} ms (kvm hangs under nested virtualisation; ptrace works everywhere)`
        : err.message,
      version,
    );
  } finally {
    await rm(root, { recursive: true, force: true });
  }
  return {
    ok: true,
    reason: '',
    message: `runsc ${version} runs processes on platform ${config.platform}`,
    version,
    at,
  };
}

/** A status without an exit: `created`, or the base of a `running` one. */
function idle(state: 'created' | 'running'): EngineContainerStatus {
  return { state, pid: 0, startedAt: 0n, finishedAt: 0n, exitCode: 0, reason: '', message: '' };
}

/** The exit of a container that never started (its sandbox ended first). */
function neverStarted(): ExitRecord {
  return {
    exitCode: 255,
    finishedAt: '0',
    reason: 'Unknown',
    message: 'the pod sandbox ended before the container was started',
  };
}

/** Resolves true when `p` settles within `ms`, false otherwise. */
async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), Math.max(0, ms));
  });
  try {
    return await Promise.race([p.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function unwrap<T>(r: ResultAsync<T, HcrError>): Promise<T> {
  const v = await r;
  if (v.isErr()) throw v.error;
  return v.value;
}

import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import {
  connectTapToPodInterface,
  disconnectTapFromPodInterface,
  errors,
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
  type HcrError,
  type LinuxResources,
  type Logger,
  type Nanos,
  type RuntimeEngine,
  type SandboxCreated,
  type SandboxRef,
  type SandboxStats,
} from '@hcr/core';
import { err, errAsync, ok, okAsync, ResultAsync, type Result } from 'neverthrow';
import { loadUnikernelConfig, UruncKey, type MonitorName, type UnikernelType } from './annotations.js';
import { buildCmdline, type GuestNetwork } from './cmdline.js';
import { ConsoleFollower, watchContainerDir } from './console.js';
import { containerFiles, containersDir, sandboxesDir, type ContainerFiles } from './layout.js';
import { monitorLogTail, type GuestExit, type Monitor } from './monitor.js';
import { podAttachment, tapName } from './network.js';
import { resolveInRoot } from './rootfs-path.js';
import { liveMonitorPid, processAlive, readMonitorStatus, readPid } from './supervisor.js';
import { pollUntil } from './wait.js';

/** Engine settings, parsed from the `[engines.<name>]` table. */
export interface UnikernelEngineSettings {
  readonly defaultMemoryMiB: number;
  readonly defaultVcpus: number;
  /** Types whose guests get the ACPI power button and the grace period on stop (default: linux). */
  readonly gracefulStopTypes?: readonly UnikernelType[];
}

/** What createContainer resolved, persisted as the container's `launch.json`. */
interface LaunchRecord {
  readonly containerId: string;
  readonly sandboxId: string;
  readonly monitor: MonitorName;
  readonly type: UnikernelType;
  readonly kernel: string;
  readonly initrd: string | null;
  readonly argv: readonly string[];
  readonly env: readonly string[];
  readonly version: string;
  readonly appName: string;
  readonly memoryMiB: number;
  readonly vcpus: number;
  readonly logPath: string;
  /** Set by startContainer: where the TAP lives, for teardown without the sandbox ref. */
  readonly netnsPath?: string;
  readonly ifname?: string;
}

/** What stopContainer recorded about a stop it made. */
interface StopRecord {
  readonly graceSeconds: number;
  readonly killed: boolean;
  /** Killed without asking the guest: its type has no graceful shutdown (urunc's behaviour). */
  readonly immediate?: boolean;
}

/** A running container's console follower and exit watch. */
interface Watch {
  readonly follower: ConsoleFollower;
  readonly unwatch: () => void;
  finished: Promise<void> | null;
}

// Linux reports process CPU times in USER_HZ ticks, fixed at 100 on every architecture HCR runs on.
const USER_HZ = 100n;
const KILL_WAIT_MS = 5000;
const MIN_MEMORY_MIB = 16;
const UNSUPPORTED_PROCESSES =
  'a unikernel has no processes to exec into or attach to: the whole container is one single-purpose VM ' +
  '(its console is in the container log)';

/** Capabilities of the unikernel engine: a VM per container, console output only. */
export const unikernelCapabilities: EngineCapabilities = Object.freeze<EngineCapabilities>({
  hostNetwork: false,
  hostPid: false,
  hostIpc: false,
  privileged: false,
  exec: false,
  execSync: false,
  attach: false,
  attachStdin: false,
  portForward: false,
  tty: false,
  hostPathMounts: false,
  updateResources: false,
  stats: true,
  reopenLog: true,
  imageKinds: ['unikernel'],
});

/**
 * Runs unikernel images (urunc's format) as pods: the sandbox is only the
 * pod's network namespace, each container is one VM booted by the monitor
 * the image asks for, started in that namespace behind a TAP.
 *
 * All state lives in files under the engine's runtime dir (see
 * {@link containerFiles}); VMs run under a detached supervisor, so HCR can
 * restart without touching them and picks their consoles and exits up again.
 */
export class UnikernelEngine implements RuntimeEngine {
  readonly kind = 'unikernel';
  readonly capabilities = unikernelCapabilities;
  private readonly listeners = new Set<(event: EngineEvent) => void>();
  private readonly watches = new Map<string, Watch>();
  private readonly log: Logger;

  private constructor(
    readonly name: string,
    private readonly settings: UnikernelEngineSettings,
    private readonly context: EngineContext,
    private readonly monitors: ReadonlyMap<MonitorName, Monitor>,
  ) {
    this.log = context.logger.child({ engine: name });
  }

  /** Creates the engine and resumes following every VM a previous HCR process left running. */
  static async create(
    name: string,
    settings: UnikernelEngineSettings,
    context: EngineContext,
    monitors: readonly Monitor[],
  ): Promise<UnikernelEngine> {
    await mkdir(containersDir(context.runtimeDir), { recursive: true });
    await mkdir(sandboxesDir(context.runtimeDir), { recursive: true });
    const engine = new UnikernelEngine(name, settings, context, new Map(monitors.map((m) => [m.name, m])));
    for (const id of await readdir(containersDir(context.runtimeDir))) {
      const files = engine.files(id);
      const launch = await readLaunch(files);
      if (launch !== null && (await exists(files.started)) && !(await exists(join(files.dir, 'finished')))) {
        await engine.watch(id, files, launch);
      }
    }
    return engine;
  }

  health(): EngineResult<EngineHealth> {
    return ResultAsync.fromSafePromise(
      (async () => {
        const info: Record<string, string> = {};
        for (const m of this.monitors.values()) {
          const a = await m.available();
          info[`monitor.${m.name}`] = a.ok ? `${a.path} (${a.detail})` : `unavailable: ${a.message}`;
        }
        const qemu = this.monitors.get('qemu');
        const qemuOk = qemu !== undefined && (await qemu.available()).ok;
        return {
          ready: qemuOk,
          reason: qemuOk ? '' : 'MonitorMissing',
          message: qemuOk ? '' : (info['monitor.qemu'] ?? 'no QEMU monitor configured'),
          info,
        };
      })(),
    );
  }

  inventory(): EngineResult<EngineInventory> {
    return ResultAsync.fromPromise(
      (async () => ({
        sandboxIds: (await readdir(sandboxesDir(this.context.runtimeDir))).map((f) => f.replace(/\.json$/, '')),
        containerIds: await readdir(containersDir(this.context.runtimeDir)),
      }))(),
      (e) => toHcrError(e, 'listing unikernel engine state'),
    );
  }

  // The sandbox is the pod netns core already made: nothing runs until a container starts.
  createSandbox(sandbox: SandboxRef): EngineResult<SandboxCreated> {
    const record = { netnsPath: sandbox.network.netnsPath };
    return ResultAsync.fromPromise(writeFile(this.sandboxRecord(sandbox.id), JSON.stringify(record)), (e) =>
      toHcrError(e, `recording sandbox ${sandbox.id}`),
    ).map(() => ({ engineData: {} }));
  }

  stopSandbox(sandbox: SandboxRef, gracePeriodSeconds: number): EngineResult<void> {
    return ResultAsync.fromPromise(
      (async () => {
        for (const id of await this.containersOf(sandbox.id)) {
          const r = await this.stopById(id, gracePeriodSeconds);
          if (r.isErr()) throw r.error;
        }
      })(),
      (e) => toHcrError(e, `stopping the VMs of sandbox ${sandbox.id}`),
    );
  }

  removeSandbox(sandbox: SandboxRef): EngineResult<void> {
    return this.stopSandbox(sandbox, 0).andThen(() =>
      ResultAsync.fromPromise(rm(this.sandboxRecord(sandbox.id), { force: true }), (e) =>
        toHcrError(e, `removing sandbox ${sandbox.id}`),
      ),
    );
  }

  sandboxStatus(sandbox: SandboxRef): EngineResult<EngineSandboxStatus> {
    return ResultAsync.fromPromise(
      (async () => {
        const running: string[] = [];
        for (const id of await this.containersOf(sandbox.id)) {
          if ((await liveMonitorPid(this.files(id))) !== null) running.push(id);
        }
        return { alive: await exists(this.sandboxRecord(sandbox.id)), info: { runningVms: running } };
      })(),
      (e) => toHcrError(e, `status of sandbox ${sandbox.id}`),
    );
  }

  createContainer(container: ContainerRef): EngineResult<ContainerCreated> {
    const files = this.files(container.id);
    return ResultAsync.fromPromise(mkdir(files.dir, { recursive: true }), (e) => toHcrError(e, `creating ${files.dir}`))
      .andThen(() => this.context.images.prepareRootfs(container.image.id, container.id))
      .andThen((rootfs) => ResultAsync.fromPromise(this.resolveLaunch(container, rootfs.path), (e) => toHcrError(e)))
      .andThen((r) => r)
      .andThen((launch) =>
        ResultAsync.fromPromise(writeFile(files.launch, JSON.stringify(launch, null, 2)), (e) =>
          toHcrError(e, `writing ${files.launch}`),
        ).map(() => ({ engineData: { monitor: launch.monitor, type: launch.type, dir: files.dir } })),
      )
      .orElse((error) =>
        // Leave nothing half-made: the rootfs mount and the directory go with a refused create.
        this.context.images
          .releaseRootfs(container.id)
          .orElse(() => okAsync(undefined))
          .andThen(() => ResultAsync.fromSafePromise(rm(files.dir, { recursive: true, force: true })))
          .andThen(() => errAsync<ContainerCreated, HcrError>(error)),
      );
  }

  startContainer(container: ContainerRef): EngineResult<void> {
    return ResultAsync.fromPromise(this.start(container), (e) => toHcrError(e)).andThen((r) => r);
  }

  stopContainer(container: ContainerRef, timeoutSeconds: number): EngineResult<void> {
    return ResultAsync.fromPromise(this.stopById(container.id, timeoutSeconds), (e) => toHcrError(e)).andThen((r) => r);
  }

  removeContainer(container: ContainerRef): EngineResult<void> {
    const files = this.files(container.id);
    return this.stopContainer(container, 0)
      .andThen(() => ResultAsync.fromPromise(this.finish(container.id, files), (e) => toHcrError(e)))
      .andThen(() => this.context.images.releaseRootfs(container.id))
      .andThen(() =>
        ResultAsync.fromPromise(rm(files.dir, { recursive: true, force: true }), (e) =>
          toHcrError(e, `removing ${files.dir}`),
        ),
      );
  }

  containerStatus(container: ContainerRef): EngineResult<EngineContainerStatus> {
    return ResultAsync.fromPromise(this.status(container.id), (e) => toHcrError(e)).andThen((r) => r);
  }

  execSync(_c: ContainerRef, _cmd: readonly string[], _timeout: number): EngineResult<ExecSyncResult> {
    return errAsync(errors.unsupported(this.name, 'execSync', `engine "${this.name}": ${UNSUPPORTED_PROCESSES}`));
  }

  exec(): EngineResult<{ readonly exitCode: number }> {
    return errAsync(errors.unsupported(this.name, 'exec', `engine "${this.name}": ${UNSUPPORTED_PROCESSES}`));
  }

  attach(): EngineResult<void> {
    return errAsync(errors.unsupported(this.name, 'attach', `engine "${this.name}": ${UNSUPPORTED_PROCESSES}`));
  }

  portForward(): EngineResult<void> {
    return errAsync(
      errors.unsupported(
        this.name,
        'portForward',
        `engine "${this.name}" cannot port-forward: the pod's network belongs to the unikernel VM, ` +
          'which has no loopback HCR can reach; connect to the pod IP instead',
      ),
    );
  }

  containerStats(container: ContainerRef): EngineResult<ContainerStats> {
    return ResultAsync.fromPromise(this.processStats(container.id), (e) => toHcrError(e, 'container stats')).map(
      (s) => ({
        timestamp: nowNanos(),
        cpuUsageCoreNanoSeconds: s?.cpuNanos ?? 0n,
        memoryWorkingSetBytes: s?.rssBytes ?? 0,
        memoryUsageBytes: s?.rssBytes ?? 0,
        writableLayerBytes: 0,
      }),
    );
  }

  sandboxStats(sandbox: SandboxRef, containers: readonly ContainerRef[]): EngineResult<SandboxStats> {
    return ResultAsync.fromPromise(
      (async () => {
        let cpu = 0n;
        let rss = 0;
        let processes = 0;
        let network: SandboxStats['network'] = null;
        for (const c of containers) {
          const s = await this.processStats(c.id);
          if (s === null) continue;
          cpu += s.cpuNanos;
          rss += s.rssBytes;
          processes += 1;
          const launch = await readLaunch(this.files(c.id));
          network = (await netDevCounters(s.pid, launch?.ifname ?? 'eth0')) ?? network;
        }
        return {
          timestamp: nowNanos(),
          cpuUsageCoreNanoSeconds: cpu,
          memoryWorkingSetBytes: rss,
          memoryUsageBytes: rss,
          network,
          processes,
        };
      })(),
      (e) => toHcrError(e, `stats of sandbox ${sandbox.id}`),
    );
  }

  updateContainerResources(_c: ContainerRef, _r: LinuxResources): EngineResult<void> {
    return errAsync(
      errors.unsupported(
        this.name,
        'updateResources',
        `engine "${this.name}" cannot resize a running unikernel VM; memory and vCPUs are fixed at start`,
      ),
    );
  }

  reopenContainerLog(container: ContainerRef): EngineResult<void> {
    const w = this.watches.get(container.id);
    if (w === undefined) {
      return errAsync(
        errors.failedPrecondition(`container ${container.id} has no running VM whose log could be reopened`),
      );
    }
    return ResultAsync.fromPromise(
      (async () => {
        await w.follower.pump();
        w.follower.reopen();
      })(),
      (e) => toHcrError(e, 'reopening the container log'),
    );
  }

  subscribe(listener: (event: EngineEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async close(): Promise<void> {
    for (const w of this.watches.values()) {
      w.unwatch();
      await w.follower.close();
    }
    this.watches.clear();
    this.listeners.clear();
  }

  // ---------------------------------------------------------------- create

  private async resolveLaunch(container: ContainerRef, rootfs: string): Promise<Result<LaunchRecord, HcrError>> {
    const imageName = container.image.repoTags[0] ?? container.image.id;
    const config = await loadUnikernelConfig({ name: imageName, config: container.image.config }, rootfs);
    if (config.isErr()) return err(config.error);
    const cfg = config.value;
    const monitor = this.monitors.get(cfg.monitor);
    if (monitor === undefined) {
      return err(
        errors.failedPrecondition(
          `image ${imageName} asks for monitor "${cfg.monitor}", which engine "${this.name}" does not have`,
        ),
      );
    }
    if (!monitor.supports(cfg.type)) {
      return err(
        errors.unsupported(
          this.name,
          `unikernel type ${cfg.type}`,
          `image ${imageName}: ${UruncKey.unikernelType}="${cfg.type}" with ${UruncKey.hypervisor}="${cfg.monitor}" ` +
            `is valid for urunc, but engine "${this.name}" does not boot that type on ${cfg.monitor} yet`,
        ),
      );
    }
    const available = await monitor.available();
    if (!available.ok) {
      return err(
        errors.failedPrecondition(`image ${imageName} needs monitor "${cfg.monitor}": ${available.message}`, {
          engine: this.name,
        }),
      );
    }
    if (cfg.block !== '') {
      return err(
        errors.unsupported(
          this.name,
          'block devices',
          `image ${imageName}: ${UruncKey.block}="${cfg.block}": engine "${this.name}" does not attach block images yet`,
        ),
      );
    }
    if (cfg.mountRootfs) {
      return err(
        errors.unsupported(
          this.name,
          'rootfs sharing',
          `image ${imageName}: ${UruncKey.mountRootfs}="true": engine "${this.name}" does not share the container rootfs with the guest yet`,
        ),
      );
    }
    const kernel = await this.imageFile(rootfs, 'binary', cfg.binary, imageName);
    if (kernel.isErr()) return err(kernel.error);
    let initrd: string | null = null;
    if (cfg.initrd !== '') {
      const r = await this.imageFile(rootfs, 'initrd', cfg.initrd, imageName);
      if (r.isErr()) return err(r.error);
      initrd = r.value;
    }

    const spec = container.spec;
    const imageArgv =
      cfg.cmdline !== ''
        ? cfg.cmdline.split(/\s+/).filter((w) => w !== '')
        : [...container.image.config.entrypoint, ...container.image.config.cmd];
    // Command or args from the pod replace the image's command line as a whole.
    const argv = spec.command.length > 0 || spec.args.length > 0 ? [...spec.command, ...spec.args] : imageArgv;
    const env = mergeEnv(container.image.config.env, spec.envs);
    const launch: LaunchRecord = {
      containerId: container.id,
      sandboxId: container.sandbox.id,
      monitor: cfg.monitor,
      type: cfg.type,
      kernel: kernel.value,
      initrd,
      argv,
      env,
      version: cfg.version,
      appName: cfg.binary.split('/').pop() ?? 'unikernel',
      memoryMiB: memoryMiB(spec.linux.resources, this.settings.defaultMemoryMiB),
      vcpus: vcpus(spec.linux.resources, this.settings.defaultVcpus),
      logPath: container.logPath,
    };
    // Refuse now what start would refuse: an over-long or unrepresentable command line.
    const widest: GuestNetwork = {
      ip: '255.255.255.255',
      prefixLength: 32,
      gateway: '255.255.255.255',
      dns: '255.255.255.255',
    };
    const check = buildCmdline({
      ...cmdlineInput(launch, widest),
      linuxTimingParams: await monitor.kernelParams(cfg.type),
    });
    if (check.isErr()) return err(check.error.withContext(`image ${imageName}`));
    return ok(launch);
  }

  private async imageFile(
    rootfs: string,
    key: 'binary' | 'initrd',
    path: string,
    image: string,
  ): Promise<Result<string, HcrError>> {
    const r = await resolveInRoot(rootfs, path);
    if (r.ok) return ok(r.hostPath);
    const why = {
      'not-found': 'no such file in the image',
      'not-a-file': 'not a regular file',
      'symlink-loop': 'too many symlinks',
    }[r.reason];
    return err(errors.invalidArgument(`image ${image}: ${UruncKey[key]}="${path}": ${why}`, UruncKey[key]));
  }

  // ----------------------------------------------------------------- start

  private async start(container: ContainerRef): Promise<Result<void, HcrError>> {
    const files = this.files(container.id);
    const launch = await readLaunch(files);
    if (launch === null)
      return err(errors.failedPrecondition(`container ${container.id} was not created by engine "${this.name}"`));
    const monitor = this.monitors.get(launch.monitor)!;
    for (const other of await this.containersOf(container.sandbox.id)) {
      if (other !== container.id && (await liveMonitorPid(this.files(other))) !== null) {
        return err(
          errors.failedPrecondition(
            `pod ${container.sandbox.id} already runs unikernel container ${other}: a pod network carries one unikernel at a time`,
          ),
        );
      }
    }

    const netnsPath = container.sandbox.network.netnsPath;
    const attachment =
      netnsPath === null ? null : podAttachment(container.sandbox.network, container.sandbox.spec.dns?.servers ?? []);
    const tap = tapName(container.id);
    let nic = null;
    if (netnsPath !== null && attachment !== null) {
      const connected = await connectTapToPodInterface(netnsPath, { tapName: tap, ifname: attachment.ifname });
      // Whatever broke, the pod's network is not in the shape a guest NIC needs.
      if (connected.isErr()) return err(errors.failedPrecondition(connected.error.message, connected.error.details));
      nic = connected.value;
    } else {
      this.log.warn({ containerId: container.id }, 'pod has no IPv4 address; the VM boots without a NIC');
    }
    const record: LaunchRecord = {
      ...launch,
      ...(netnsPath !== null && attachment !== null ? { netnsPath, ifname: attachment.ifname } : {}),
    };
    await writeFile(files.launch, JSON.stringify(record, null, 2));

    const cmdline = buildCmdline({
      ...cmdlineInput(launch, attachment?.guest ?? null),
      linuxTimingParams: await monitor.kernelParams(launch.type),
    });
    if (cmdline.isErr()) {
      await this.teardownNetwork(record);
      return err(cmdline.error);
    }
    const startedAt = nowNanos();
    const launched = await monitor.launch({
      containerId: container.id,
      files,
      netnsPath,
      type: launch.type,
      kernel: launch.kernel,
      initrd: launch.initrd,
      cmdline: cmdline.value,
      memoryMiB: launch.memoryMiB,
      vcpus: launch.vcpus,
      nic,
    });
    if (launched.isErr()) {
      const pid = await liveMonitorPid(files);
      if (pid !== null) process.kill(pid, 'SIGKILL');
      await pollUntil(async () => ((await readMonitorStatus(files)) !== null ? true : undefined), KILL_WAIT_MS);
      await this.teardownNetwork(record);
      return err(launched.error);
    }
    await writeFile(files.started, String(startedAt));
    this.log.info(
      { containerId: container.id, monitor: launch.monitor, cmdline: cmdline.value },
      'unikernel VM started',
    );
    await this.watch(container.id, files, record);
    return ok(undefined);
  }

  // ------------------------------------------------------- follow and exit

  private async watch(id: string, files: ContainerFiles, launch: LaunchRecord): Promise<void> {
    if (this.watches.has(id)) return;
    const follower = await ConsoleFollower.open(files, launch.logPath);
    const onChange = () => {
      void follower.pump();
      void readMonitorStatus(files).then((s) => {
        if (s !== null) void this.finish(id, files);
      });
    };
    const w: Watch = { follower, unwatch: watchContainerDir(files.dir, onChange), finished: null };
    this.watches.set(id, w);
    onChange();
  }

  /**
   * Once the monitor has ended: copies the rest of the console, closes the
   * log, removes the TAP and tells subscribers. Idempotent; safe to call for
   * a container that was never started.
   */
  private finish(id: string, files: ContainerFiles): Promise<void> {
    const w = this.watches.get(id);
    if (w?.finished) return w.finished;
    const done = (async () => {
      const status = await readMonitorStatus(files);
      if (status === null) return;
      if (w !== undefined) {
        w.unwatch();
        await w.follower.pump(true);
        await w.follower.close();
      }
      const launch = await readLaunch(files);
      if (launch !== null) await this.teardownNetwork(launch);
      if (!(await exists(files.started))) return;
      await writeFile(join(files.dir, 'finished'), '');
      const exit = await this.decodeExit(files);
      if (exit !== null && w !== undefined) {
        const finishedAt = await mtimeNanos(files.exit);
        this.emit({
          type: 'container-exited',
          containerId: id,
          exitCode: exit.exitCode,
          finishedAt,
          reason: exit.reason,
        });
      }
    })();
    if (w !== undefined) {
      w.finished = done;
      void done.finally(() => this.watches.delete(id));
    }
    return done;
  }

  private async teardownNetwork(launch: LaunchRecord): Promise<void> {
    if (launch.netnsPath === undefined || launch.ifname === undefined) return;
    if (!(await exists(launch.netnsPath))) return;
    const done = await disconnectTapFromPodInterface(launch.netnsPath, {
      tapName: tapName(launch.containerId),
      ifname: launch.ifname,
    });
    // Callers are exit paths that must finish; the TAP still goes with the pod's namespace.
    if (done.isErr()) this.log.warn({ containerId: launch.containerId, err: done.error.message }, 'TAP left behind');
  }

  private async decodeExit(files: ContainerFiles): Promise<GuestExit | null> {
    const status = await readMonitorStatus(files);
    const launch = await readLaunch(files);
    if (status === null || launch === null) return null;
    const monitor = this.monitors.get(launch.monitor);
    if (monitor === undefined) return null;
    const exit = monitor.decodeExit(status, await monitorLogTail(files.monitorLog));
    const stop = await readStop(files);
    if (stop?.killed && status.kind === 'signal') {
      return {
        ...exit,
        message:
          stop.immediate === true
            ? `stopped: a ${launch.type} unikernel has no graceful shutdown, so the VM was stopped at once (graceful_stop_types)`
            : `stopped: the guest did not shut down within the ${stop.graceSeconds} s grace period, so the VM was killed`,
      };
    }
    return exit;
  }

  // ------------------------------------------------------------ stop, status

  private async stopById(id: string, timeoutSeconds: number): Promise<Result<void, HcrError>> {
    const files = this.files(id);
    const launch = await readLaunch(files);
    const pid = await liveMonitorPid(files);
    if (launch === null || pid === null) {
      await this.finish(id, files);
      return ok(undefined);
    }
    const monitor = this.monitors.get(launch.monitor)!;
    const grace = Math.max(0, timeoutSeconds);
    // Only guests that handle the power button are asked; waiting out the grace period of one that
    // cannot answer (most unikernels) would only delay the kill, so those stop at once, as under urunc.
    const graceful = (this.settings.gracefulStopTypes ?? ['linux']).includes(launch.type);
    await writeFile(files.stop, JSON.stringify({ graceSeconds: grace, killed: false } satisfies StopRecord));
    const ended = async () => ((await readMonitorStatus(files)) !== null ? true : undefined);
    let exited = false;
    if (graceful && grace > 0 && (await monitor.requestShutdown(files, pid))) {
      exited = (await pollUntil(ended, grace * 1000, 50)) === true;
    }
    if (!exited) {
      const record: StopRecord = { graceSeconds: grace, killed: true, ...(graceful ? {} : { immediate: true }) };
      await writeFile(files.stop, JSON.stringify(record));
      const live = await liveMonitorPid(files);
      if (live !== null) process.kill(live, 'SIGKILL');
      if ((await pollUntil(ended, KILL_WAIT_MS, 20)) === undefined) {
        return err(
          errors.internal(
            `the monitor of container ${id} (pid ${live}) did not end within ${KILL_WAIT_MS} ms of SIGKILL`,
          ),
        );
      }
    }
    await this.finish(id, files);
    return ok(undefined);
  }

  private async status(id: string): Promise<Result<EngineContainerStatus, HcrError>> {
    const files = this.files(id);
    if ((await readLaunch(files)) === null) {
      return err(errors.notFound(`engine "${this.name}" has no record of container ${id} (no ${files.launch})`));
    }
    const startedAt = await readNanos(files.started);
    const base = { pid: 0, startedAt, finishedAt: 0n, exitCode: 0, reason: '', message: '' };
    if (startedAt === 0n) return ok({ ...base, state: 'created' });
    const exit = await this.decodeExit(files);
    if (exit !== null) {
      return ok({ ...base, state: 'exited', finishedAt: await mtimeNanos(files.exit), ...exit });
    }
    const pid = await liveMonitorPid(files);
    if (pid !== null) return ok({ ...base, state: 'running', pid });
    const supervisor = await readPid(files.supervisorPid);
    if (supervisor !== null && (await processAlive(supervisor))) return ok({ ...base, state: 'running' });
    return ok({
      ...base,
      state: 'exited',
      finishedAt: await mtimeNanos(files.supervisorPid),
      exitCode: 255,
      reason: 'Error',
      message: 'the VM and its supervisor are gone without an exit record (host reboot, or the supervisor was killed)',
    });
  }

  private async processStats(id: string): Promise<{ pid: number; cpuNanos: bigint; rssBytes: number } | null> {
    const pid = await liveMonitorPid(this.files(id));
    if (pid === null) return null;
    try {
      const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // utime and stime are fields 14 and 15 of /proc/<pid>/stat (indexes 11, 12 after the comm).
      const ticks = BigInt(fields[11] ?? '0') + BigInt(fields[12] ?? '0');
      const status = await readFile(`/proc/${pid}/status`, 'utf8');
      const rssKb = Number(/^VmRSS:\s+(\d+)\s+kB/m.exec(status)?.[1] ?? '0');
      return { pid, cpuNanos: (ticks * 1_000_000_000n) / USER_HZ, rssBytes: rssKb * 1024 };
    } catch {
      return null;
    }
  }

  // ---------------------------------------------------------------- helpers

  private files(id: string): ContainerFiles {
    return containerFiles(this.context.runtimeDir, id);
  }

  private sandboxRecord(id: string): string {
    return join(sandboxesDir(this.context.runtimeDir), `${id}.json`);
  }

  private async containersOf(sandboxId: string): Promise<string[]> {
    const out: string[] = [];
    for (const id of await readdir(containersDir(this.context.runtimeDir)).catch(() => [] as string[])) {
      if ((await readLaunch(this.files(id)))?.sandboxId === sandboxId) out.push(id);
    }
    return out;
  }

  private emit(event: EngineEvent): void {
    for (const l of this.listeners) {
      try {
        l(event);
      } catch (e) {
        this.log.warn({ err: String(e) }, 'engine event listener threw');
      }
    }
  }
}

function cmdlineInput(launch: LaunchRecord, network: GuestNetwork | null) {
  return {
    type: launch.type,
    argv: launch.argv,
    env: launch.env,
    network,
    hasInitrd: launch.initrd !== null,
    version: launch.version,
    appName: launch.appName,
  };
}

/** Image env first, the pod's entries override by key (as every runtime merges them). */
export function mergeEnv(
  image: readonly string[],
  pod: readonly { readonly key: string; readonly value: string }[],
): string[] {
  const map = new Map<string, string>();
  for (const kv of image) {
    const i = kv.indexOf('=');
    if (i > 0) map.set(kv.slice(0, i), kv.slice(i + 1));
  }
  for (const { key, value } of pod) map.set(key, value);
  return [...map].map(([k, v]) => `${k}=${v}`);
}

/** VM memory: the container's memory limit (rounded up to MiB), else the engine default. */
export function memoryMiB(r: LinuxResources, fallback: number): number {
  const mib = r.memoryLimitInBytes > 0 ? Math.ceil(r.memoryLimitInBytes / (1024 * 1024)) : fallback;
  return Math.max(MIN_MEMORY_MIB, mib);
}

/** vCPUs: the CPU quota rounded up to whole CPUs (at most the host's), else the engine default. */
export function vcpus(r: LinuxResources, fallback: number): number {
  const n = r.cpuQuota > 0 && r.cpuPeriod > 0 ? Math.ceil(r.cpuQuota / r.cpuPeriod) : fallback;
  return Math.max(1, Math.min(n, availableParallelism()));
}

async function readLaunch(files: ContainerFiles): Promise<LaunchRecord | null> {
  try {
    return JSON.parse(await readFile(files.launch, 'utf8')) as LaunchRecord;
  } catch {
    return null;
  }
}

async function readStop(files: ContainerFiles): Promise<StopRecord | null> {
  try {
    return JSON.parse(await readFile(files.stop, 'utf8')) as StopRecord;
  } catch {
    return null;
  }
}

async function readNanos(path: string): Promise<Nanos> {
  try {
    return BigInt((await readFile(path, 'utf8')).trim());
  } catch {
    return 0n;
  }
}

async function mtimeNanos(path: string): Promise<Nanos> {
  try {
    return (await stat(path, { bigint: true })).mtimeNs;
  } catch {
    return 0n;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** rx/tx byte counters of `ifname` in the netns of process `pid` (its /proc/<pid>/net/dev). */
async function netDevCounters(pid: number, ifname: string): Promise<{ rxBytes: number; txBytes: number } | null> {
  try {
    const text = await readFile(`/proc/${pid}/net/dev`, 'utf8');
    const line = text.split('\n').find((l) => l.trim().startsWith(`${ifname}:`));
    if (line === undefined) return null;
    const cols = line.split(':')[1]!.trim().split(/\s+/);
    return { rxBytes: Number(cols[0]), txBytes: Number(cols[8]) };
  } catch {
    return null;
  }
}

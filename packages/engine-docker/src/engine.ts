import { access, mkdir, lstat, readFile, stat } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import type { Duplex } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  errors,
  nowNanos,
  toHcrError,
  type ContainerCreated,
  type ContainerRef,
  type ContainerStats,
  type ContainerState,
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
  type StreamIO,
} from '@hcr/core';
import Docker from 'dockerode';
import { ResultAsync } from 'neverthrow';
import { match } from 'ts-pattern';
import {
  diskUsage,
  locateCgroup,
  noUsage,
  parseCgroupMounts,
  parseNetDev,
  parseProcCgroup,
  readCgroupUsage,
  type CgroupLocation,
  type CgroupUsage,
} from './cgroups.js';
import type { DockerEngineConfig } from './config.js';
import { dockerMessage, fromDocker, isDockerConflict, isDockerNotFound, isDockerNotModified } from './docker-errors.js';
import { DockerEventWatcher, type DockerContainerEvent } from './events.js';
import { CAPABILITY_NAMES, hostBoundingSet, hostDevices } from './host.js';
import { DockerImageCache, PauseImage } from './images.js';
import { Label, dockerName } from './labels.js';
import { LogFollower, removeCursor } from './logs.js';
import { containerCreateOptions, dockerResources, sandboxCreateOptions, type DockerLogOptions } from './spec.js';
import { ContainerStatusCache, CREATED_STATUS } from './status-cache.js';
import { FrameSplitter } from './stdcopy.js';
import * as streams from './streams.js';
import { parseRfc3339Nano } from './time.js';

/** How many reported exits are remembered to drop a repeated report. */
const REPORTED_EXITS_KEPT = 4096;
/** How long createSandbox waits for pause to enter the pod network namespace. */
const NETNS_JOIN_TIMEOUT_MS = 5_000;

/** What the engine learns about the host once. */
interface HostFacts {
  readonly missingCapabilities: readonly string[];
  readonly canLowerOomScore: boolean;
}

/** What the engine remembers about a container for stats, found once per Docker container. */
interface StatsSource {
  readonly cgroup: CgroupLocation | null;
  readonly upperDir: string | null;
  /** Host pid of its init process while running, else 0. */
  readonly pid: number;
}

/**
 * The docker engine: each pod is an infra ("pause") container holding the
 * pod's namespaces (it enters the netns core made for the pod), and each CRI
 * container is a Docker container joining them. Every Docker object carries
 * `io.hcr.*` labels, so the engine needs no state of its own beyond what
 * dockerd keeps.
 */
export class DockerEngine implements RuntimeEngine {
  readonly kind = 'docker';
  readonly name: string;
  readonly capabilities: EngineCapabilities = {
    hostNetwork: true,
    hostPid: true,
    hostIpc: true,
    privileged: true,
    exec: true,
    execSync: true,
    attach: true,
    attachStdin: true,
    portForward: true,
    tty: true,
    hostPathMounts: true,
    updateResources: true,
    stats: true,
    reopenLog: true,
    imageKinds: ['oci'],
    // Pause only needs the netns to exist (it setns into it), so core starts it during CNI ADD.
    sandboxBeforeNetwork: true,
  };

  private readonly docker: Docker;
  private readonly log: Logger;
  private readonly images: DockerImageCache;
  private readonly pause: PauseImage;
  private readonly listeners = new Set<(event: EngineEvent) => void>();
  private readonly followers = new Map<string, LogFollower>();
  private readonly statsSources = new Map<string, StatsSource>();
  /** App container statuses by HCR id, kept current by the event stream. */
  private readonly statuses = new ContainerStatusCache();
  private readonly events: DockerEventWatcher;
  /** Settles once log copying was resumed for the containers dockerd already had. */
  private readonly recovered: Promise<void>;
  private markRecovered!: () => void;
  private cgroupMounts: ReturnType<typeof parseCgroupMounts> | null = null;
  private host: Promise<HostFacts> | null = null;
  /** Exits already reported, as `<docker id>@<finished at>`. */
  private readonly reported = new Set<string>();
  private closed = false;

  /** Use {@link createDockerEngine}; the constructor starts following dockerd's events. */
  constructor(
    private readonly config: DockerEngineConfig,
    private readonly context: EngineContext,
  ) {
    this.name = context.name;
    this.log = context.logger.child({ engine: context.name });
    this.docker = new Docker({ socketPath: config.socket });
    this.images = new DockerImageCache(this.docker, context.images);
    this.pause = new PauseImage(this.docker, config.pauseBinary, config.pauseImage);
    this.recovered = new Promise((resolve) => (this.markRecovered = resolve));
    this.events = new DockerEventWatcher(
      this.docker,
      this.name,
      {
        onEvent: (e) => {
          // Synchronously, so no status request after this moment is answered from before the event.
          const containerId = e.attributes[Label.containerId];
          if (e.attributes[Label.kind] === 'container' && containerId !== undefined)
            this.statuses.observe(containerId, e.timeNano);
          void this.onDockerEvent(e);
        },
        onConnected: (gapSince) => {
          this.statuses.connected();
          void this.onConnected(gapSince);
        },
        onDisconnected: (e) => {
          this.statuses.disconnected();
          this.onDisconnected(e);
        },
      },
      this.log,
    );
  }

  private get logOptions(): DockerLogOptions {
    return { maxSize: this.config.logMaxSize, maxFiles: this.config.logMaxFiles };
  }

  // ------------------------------------------------------------------ health

  health(): EngineResult<EngineHealth> {
    return ResultAsync.fromSafePromise(this.probe());
  }

  private async probe(): Promise<EngineHealth> {
    const signal = AbortSignal.timeout(this.config.healthTimeoutMs);
    try {
      // dockerode honours abortSignal here; its typings do not list the options argument.
      const versionOf = this.docker.version.bind(this.docker) as unknown as (opts: {
        abortSignal: AbortSignal;
      }) => Promise<Docker.DockerVersion>;
      const version = await versionOf({ abortSignal: signal });
      const info = {
        dockerVersion: version.Version,
        apiVersion: version.ApiVersion,
        kernelVersion: version.KernelVersion,
        socket: this.config.socket,
      };
      const pauseMissing = await access(this.config.pauseBinary).then(
        () => false,
        () => true,
      );
      if (pauseMissing)
        return {
          ready: false,
          reason: 'PauseBinaryMissing',
          message: `pause binary ${this.config.pauseBinary} is missing; run packages/engine-docker/scripts/setup-assets.sh`,
          info,
        };
      return { ready: true, reason: '', message: `dockerd ${version.Version} is reachable`, info };
    } catch (e) {
      const timedOut = signal.aborted;
      return {
        ready: false,
        reason: 'DockerUnreachable',
        message: timedOut
          ? `dockerd at ${this.config.socket} did not answer within ${this.config.healthTimeoutMs} ms`
          : `cannot reach dockerd at ${this.config.socket}: ${dockerMessage(e)}`,
        info: { socket: this.config.socket },
      };
    }
  }

  inventory(): EngineResult<EngineInventory> {
    return this.run('list HCR containers in dockerd', async () => {
      const list = await this.docker.listContainers({
        all: true,
        filters: { label: [`${Label.engine}=${this.name}`] },
      });
      const sandboxIds = new Set<string>();
      const containerIds = new Set<string>();
      for (const c of list) {
        const kind = c.Labels[Label.kind];
        const sandboxId = c.Labels[Label.sandboxId];
        const containerId = c.Labels[Label.containerId];
        if (kind === 'sandbox' && sandboxId !== undefined) sandboxIds.add(sandboxId);
        if (kind === 'container' && containerId !== undefined) containerIds.add(containerId);
      }
      return { sandboxIds: [...sandboxIds], containerIds: [...containerIds] };
    });
  }

  // --------------------------------------------------------------- sandboxes

  createSandbox(sandbox: SandboxRef): EngineResult<SandboxCreated> {
    return this.run(`create pod sandbox ${sandbox.id}`, async () => {
      const image = await this.pause.ensure();
      const options = sandboxCreateOptions(sandbox, { engine: this.name, pauseImage: image, log: this.logOptions });
      const container = await this.createOrAdopt(options, Label.sandboxId, sandbox.id);
      try {
        await this.startIdempotent(container);
        const pid = await this.awaitNetnsJoined(container, sandbox.network.netnsPath);
        return { engineData: { dockerId: container.id, pauseImage: image, pid } };
      } catch (e) {
        await this.removeForce(container.id);
        throw e;
      }
    });
  }

  /**
   * Waits until pause runs inside the pod netns: same namespace inode as the
   * netns file. App containers join /proc/<pause pid>/ns/net, so starting one
   * before pause's setns would put it in the wrong namespace.
   */
  private async awaitNetnsJoined(container: Docker.Container, netnsPath: string | null): Promise<number> {
    const want = netnsPath === null ? null : await stat(netnsPath);
    const deadline = Date.now() + NETNS_JOIN_TIMEOUT_MS;
    for (;;) {
      const info = await container.inspect();
      if (!info.State.Running) {
        const output = await this.tail(container);
        const where = netnsPath === null ? '' : ` (pod network namespace ${netnsPath})`;
        throw errors.internal(
          `infra container exited right after start${where}, exit code ${info.State.ExitCode}${output === '' ? '' : `: ${output}`}`,
        );
      }
      if (want === null) return info.State.Pid;
      const have = await stat(`/proc/${info.State.Pid}/ns/net`).catch(() => null);
      if (have !== null && have.ino === want.ino && have.dev === want.dev) return info.State.Pid;
      if (Date.now() > deadline)
        throw errors.internal(
          `infra container did not enter network namespace ${netnsPath} within ${NETNS_JOIN_TIMEOUT_MS} ms`,
        );
      await sleep(10);
    }
  }

  /** The last lines a (non-TTY) container wrote, for error messages. */
  private async tail(container: Docker.Container): Promise<string> {
    const out = await container.logs({ stdout: true, stderr: true, follow: false, tail: 5 }).catch(() => null);
    if (out === null) return '';
    try {
      const frames = new FrameSplitter().push(Buffer.isBuffer(out) ? out : Buffer.from(String(out)));
      return Buffer.concat(frames.map((f) => f.payload))
        .toString('utf8')
        .trim();
    } catch {
      return '';
    }
  }

  stopSandbox(sandbox: SandboxRef, gracePeriodSeconds: number): EngineResult<void> {
    return this.run(`stop pod sandbox ${sandbox.id}`, async () => {
      const members = await this.sandboxMembers(sandbox.id);
      const apps = members.filter((c) => c.Labels[Label.kind] === 'container' && c.State === 'running');
      await Promise.all(apps.map((c) => this.stopIdempotent(c.Id, gracePeriodSeconds)));
      const pauses = members.filter((c) => c.Labels[Label.kind] === 'sandbox' && c.State === 'running');
      await Promise.all(pauses.map((c) => this.stopIdempotent(c.Id, gracePeriodSeconds)));
    });
  }

  removeSandbox(sandbox: SandboxRef): EngineResult<void> {
    return this.run(`remove pod sandbox ${sandbox.id}`, async () => {
      const members = await this.sandboxMembers(sandbox.id);
      const apps = members.filter((c) => c.Labels[Label.kind] === 'container');
      await Promise.all(
        apps.map(async (c) => {
          await this.removeForce(c.Id);
          const cid = c.Labels[Label.containerId];
          if (cid === undefined) return;
          this.statuses.invalidate(cid);
          this.statsSources.delete(dockerName('container', cid));
          await this.dropFollower(cid);
        }),
      );
      await Promise.all(members.filter((c) => c.Labels[Label.kind] === 'sandbox').map((c) => this.removeForce(c.Id)));
      this.statsSources.delete(dockerName('sandbox', sandbox.id));
    });
  }

  sandboxStatus(sandbox: SandboxRef): EngineResult<EngineSandboxStatus> {
    return this.run(`status of pod sandbox ${sandbox.id}`, async () => {
      const info = await this.inspectOrNull(dockerName('sandbox', sandbox.id));
      if (info === null) return { alive: false, info: { infraContainer: 'missing' } };
      return {
        alive: info.State.Running,
        info: {
          infraContainer: info.Id,
          pid: info.State.Pid,
          image: info.Config.Image,
          status: info.State.Status,
          networkMode: info.HostConfig.NetworkMode ?? '',
        },
      };
    });
  }

  private async sandboxMembers(sandboxId: string): Promise<Docker.ContainerInfo[]> {
    return this.docker.listContainers({
      all: true,
      filters: { label: [`${Label.engine}=${this.name}`, `${Label.sandboxId}=${sandboxId}`] },
    });
  }

  // -------------------------------------------------------------- containers

  createContainer(c: ContainerRef): EngineResult<ContainerCreated> {
    return this.run(`create container ${c.id}`, async () => {
      await this.images.ensure(c.image.id);
      const sec = c.spec.linux.security;
      const seccompProfile =
        sec.seccomp?.type === 'localhost' && !sec.privileged
          ? await readSeccompProfile(sec.seccomp.localhostRef)
          : null;
      const host = await this.hostFacts();
      const built = containerCreateOptions(c, {
        engine: this.name,
        log: this.logOptions,
        seccompProfile,
        canLowerOomScore: host.canLowerOomScore,
        // Emulated whenever the host lacks capabilities: it also bounds `CapAdd: ALL`.
        privileged:
          host.missingCapabilities.length === 0
            ? { kind: 'native' }
            : {
                kind: 'emulated',
                dropCapabilities: host.missingCapabilities,
                devices: sec.privileged ? await hostDevices() : [],
                reason: `the host's capability bounding set lacks ${host.missingCapabilities.join(', ')}, so Docker's privileged mode cannot start`,
              },
      });
      if (built.isErr()) throw built.error;
      for (const w of built.value.warnings) this.log.warn({ container: c.id }, w);
      await ensureMountSources(c);
      // Taken before the create: an event about the new container (someone starts it) then voids the fill.
      const ticket = this.statuses.begin(c.id);
      try {
        const dockerId = await this.createAppContainer(c, built.value.value);
        // An app container is always made anew (never adopted), so its status is known without an inspect.
        if (ticket !== null) this.statuses.fill(ticket, CREATED_STATUS);
        return { engineData: { dockerId } };
      } catch (e) {
        if (ticket !== null) this.statuses.abandon(ticket);
        throw e;
      }
    });
  }

  /** Creates the Docker container, working around what this dockerd or the image store needs. */
  private async createAppContainer(c: ContainerRef, options: Docker.ContainerCreateOptions): Promise<string> {
    for (let attempt = 0; ; attempt++) {
      try {
        const container = await this.createOrAdopt(options, Label.containerId, c.id, true);
        return container.id;
      } catch (e) {
        if (attempt > CAPABILITY_NAMES.length) throw e;
        if (isNoSuchImage(e)) {
          // The image was removed from dockerd behind our back: load it again.
          this.images.forget(c.image.id);
          await this.images.ensure(c.image.id);
          continue;
        }
        // A capability this dockerd does not know cannot be granted by it either: no need to drop it.
        const unknown = /unknown capability: "?(CAP_\w+)/.exec(dockerMessage(e))?.[1];
        const drop = options.HostConfig?.CapDrop as string[] | undefined;
        if (unknown === undefined || drop === undefined || !drop.includes(unknown)) throw e;
        options.HostConfig!.CapDrop = drop.filter((cap) => cap !== unknown);
      }
    }
  }

  startContainer(c: ContainerRef): EngineResult<void> {
    return this.run(`start container ${c.id}`, async () => {
      const container = this.docker.getContainer(dockerName('container', c.id));
      let follower: LogFollower | null = null;
      if (c.logPath !== '' && !this.followers.has(c.id)) {
        try {
          follower = new LogFollower({
            docker: this.docker,
            dockerRef: dockerName('container', c.id),
            logPath: c.logPath,
            tty: c.spec.tty,
            cursorFile: this.cursorFile(c.id),
            resume: false,
            logger: this.log,
          });
        } catch (e) {
          throw errors.failedPrecondition(`cannot open log file ${c.logPath}: ${(e as Error).message}`);
        }
        this.track(c.id, follower);
      }
      try {
        await this.startIdempotent(container);
      } catch (e) {
        if (follower !== null) await this.dropFollower(c.id);
        throw e;
      } finally {
        // Its start event may still be on the way; the next status request must not see "created".
        this.statuses.invalidate(c.id);
      }
      follower?.start();
    });
  }

  stopContainer(c: ContainerRef, timeoutSeconds: number): EngineResult<void> {
    return this.run(`stop container ${c.id}`, async () => {
      try {
        await this.stopIdempotent(dockerName('container', c.id), timeoutSeconds);
      } finally {
        this.statuses.invalidate(c.id);
      }
    });
  }

  removeContainer(c: ContainerRef): EngineResult<void> {
    return this.run(`remove container ${c.id}`, async () => {
      const info = await this.inspectOrNull(dockerName('container', c.id));
      if (info !== null) await this.removeForce(info.Id);
      this.statuses.invalidate(c.id);
      this.statsSources.delete(dockerName('container', c.id));
      await this.dropFollower(c.id);
      removeCursor(this.cursorFile(c.id));
    });
  }

  containerStatus(c: ContainerRef): EngineResult<EngineContainerStatus> {
    return this.run(`status of container ${c.id}`, async () => {
      const status = this.statuses.get(c.id) ?? (await this.inspectStatus(c.id, dockerName('container', c.id)));
      if (status === null) throw errors.notFound(`container ${c.id} does not exist in dockerd`);
      if (status.state === 'exited') await this.awaitLogs(c.id);
      return status;
    });
  }

  /**
   * Inspects an app container (`ref`: its Docker name or id) and keeps the
   * status for later requests, unless an event overtook the inspect or the
   * event stream is down; null when dockerd does not have it.
   */
  private async inspectStatus(containerId: string, ref: string): Promise<EngineContainerStatus | null> {
    const ticket = this.statuses.begin(containerId);
    let info: Docker.ContainerInspectInfo | null;
    try {
      info = await this.inspectOrNull(ref);
    } catch (e) {
      if (ticket !== null) this.statuses.abandon(ticket);
      throw e;
    }
    const status = info === null ? null : toContainerStatus(info);
    if (ticket !== null) {
      if (status === null) this.statuses.abandon(ticket);
      else this.statuses.fill(ticket, status);
    }
    return status;
  }

  // ----------------------------------------------------------------- streams

  execSync(c: ContainerRef, cmd: readonly string[], timeoutSeconds: number): EngineResult<ExecSyncResult> {
    return this.run(`exec in container ${c.id}`, () =>
      streams.execSync(this.appContainer(c), cmd, timeoutSeconds, this.config.execSyncMaxOutputBytes),
    );
  }

  exec(c: ContainerRef, cmd: readonly string[], io: StreamIO): EngineResult<{ readonly exitCode: number }> {
    return this.run(`exec in container ${c.id}`, async () => ({
      exitCode: await streams.runExec(this.appContainer(c), cmd, io),
    }));
  }

  attach(c: ContainerRef, io: StreamIO): EngineResult<void> {
    return this.run(`attach to container ${c.id}`, () => streams.attach(this.appContainer(c), c.spec.tty, io));
  }

  portForward(sandbox: SandboxRef, port: number, stream: Duplex): EngineResult<void> {
    return this.run(`port-forward to port ${port} of pod ${sandbox.id}`, () =>
      streams.portForward(sandbox.network.netnsPath, port, stream),
    );
  }

  // ------------------------------------------------------------------- stats

  containerStats(c: ContainerRef): EngineResult<ContainerStats> {
    return this.run(`stats of container ${c.id}`, async () => {
      const source = await this.statsSource(dockerName('container', c.id));
      const [usage, writable] = await Promise.all([
        source.cgroup === null ? noUsage : readCgroupUsage(source.cgroup),
        source.upperDir === null ? 0 : diskUsage(source.upperDir),
      ]);
      return {
        timestamp: nowNanos(),
        cpuUsageCoreNanoSeconds: usage.cpuNanos,
        memoryWorkingSetBytes: usage.memoryWorkingSet,
        memoryUsageBytes: usage.memoryUsage,
        writableLayerBytes: writable,
      };
    });
  }

  sandboxStats(sandbox: SandboxRef, containers: readonly ContainerRef[]): EngineResult<SandboxStats> {
    return this.run(`stats of pod sandbox ${sandbox.id}`, async () => {
      const names = [dockerName('sandbox', sandbox.id), ...containers.map((c) => dockerName('container', c.id))];
      const usages: CgroupUsage[] = await Promise.all(
        names.map(async (n) => {
          const source = await this.statsSource(n);
          return source.cgroup === null ? noUsage : readCgroupUsage(source.cgroup);
        }),
      );
      let network: SandboxStats['network'] = null;
      if (sandbox.network.netnsPath !== null) {
        const pause = await this.statsSource(names[0]!);
        const text = pause.pid > 0 ? await readFile(`/proc/${pause.pid}/net/dev`, 'utf8').catch(() => null) : null;
        if (text !== null) network = parseNetDev(text);
      }
      return {
        timestamp: nowNanos(),
        cpuUsageCoreNanoSeconds: usages.reduce((a, u) => a + u.cpuNanos, 0n),
        memoryWorkingSetBytes: usages.reduce((a, u) => a + u.memoryWorkingSet, 0),
        memoryUsageBytes: usages.reduce((a, u) => a + u.memoryUsage, 0),
        network,
        processes: usages.reduce((a, u) => a + u.processes, 0),
      };
    });
  }

  /**
   * Where a container's cgroup files, writable layer and init process are:
   * found with one inspect (the cgroup from its init process, so any cgroup
   * driver and v1/v2 layout works) and cached, so steady-state stats need no
   * call to dockerd. A cached cgroup that has gone away means the container
   * stopped; one more inspect then records that.
   */
  private async statsSource(ref: string): Promise<StatsSource> {
    const cached = this.statsSources.get(ref);
    if (cached !== undefined && (cached.cgroup === null || (await cgroupExists(cached.cgroup)))) return cached;
    const info = await this.inspectOrNull(ref);
    if (info === null) throw errors.notFound(`container ${ref} does not exist in dockerd`);
    const data = (info.GraphDriver.Data ?? {}) as Record<string, string | undefined>;
    const upperDir = data['UpperDir'] ?? null;
    let source: StatsSource = { cgroup: null, upperDir, pid: 0 };
    if (info.State.Running && info.State.Pid > 0) {
      this.cgroupMounts ??= parseCgroupMounts(await readFile('/proc/self/mountinfo', 'utf8'));
      const proc = await readFile(`/proc/${info.State.Pid}/cgroup`, 'utf8').catch(() => null);
      const cgroup = proc === null ? null : locateCgroup(this.cgroupMounts, parseProcCgroup(proc));
      source = { cgroup, upperDir, pid: info.State.Pid };
      if (cgroup !== null) this.statsSources.set(ref, source);
    } else if (toContainerStatus(info).state === 'exited') {
      // CRI containers never restart: an exited one has nothing left to measure but its disk.
      this.statsSources.set(ref, source);
    }
    return source;
  }

  updateContainerResources(c: ContainerRef, resources: LinuxResources): EngineResult<void> {
    return this.run(`update resources of container ${c.id}`, async () => {
      const built = dockerResources(resources);
      for (const w of built.warnings) this.log.warn({ container: c.id }, w);
      if (resources.oomScoreAdj !== c.spec.linux.resources.oomScoreAdj)
        this.log.info(
          { container: c.id },
          'oom_score_adj cannot be changed on a Docker container after creation; kept',
        );
      if (Object.keys(built.value).length === 0) return;
      await this.appContainer(c).update(built.value);
    });
  }

  reopenContainerLog(c: ContainerRef): EngineResult<void> {
    return this.run(`reopen log of container ${c.id}`, async () => {
      const follower = this.followers.get(c.id);
      if (follower !== undefined) return follower.reopen();
      if (c.logPath === '') throw errors.failedPrecondition(`container ${c.id} has no log path`);
      throw errors.failedPrecondition(`container ${c.id} is not running; its log is complete and closed`);
    });
  }

  // ------------------------------------------------------------------ events

  subscribe(listener: (event: EngineEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private emit(event: EngineEvent): void {
    for (const l of this.listeners) {
      try {
        l(event);
      } catch (e) {
        this.log.error({ err: String(e) }, 'engine event listener failed');
      }
    }
  }

  private async onDockerEvent(event: DockerContainerEvent): Promise<void> {
    if (event.action !== 'die') return;
    const a = event.attributes;
    const kind = a[Label.kind];
    const containerId = a[Label.containerId];
    if (kind === 'container' && containerId !== undefined) await this.awaitLogs(containerId);
    const inspect = async () => {
      if (kind === 'container' && containerId !== undefined) return this.inspectStatus(containerId, event.dockerId);
      const info = await this.inspectOrNull(event.dockerId);
      return info === null ? null : toContainerStatus(info);
    };
    const status = await inspect().catch(() => null);
    const finishedAt = status !== null && status.finishedAt > 0n ? status.finishedAt : event.timeNano;
    // An exit can arrive twice: replayed by dockerd after a reconnect and found by the gap reconciliation.
    if (!this.firstReport(`${event.dockerId}@${finishedAt}`)) return;
    const exitCode = status?.exitCode ?? Number(a['exitCode'] ?? 255);
    match(kind)
      .with('container', () => {
        if (containerId === undefined) return;
        this.emit({
          type: 'container-exited',
          containerId,
          exitCode,
          finishedAt,
          reason: status?.reason ?? (exitCode === 0 ? 'Completed' : 'Error'),
        });
      })
      .with('sandbox', () => {
        const sandboxId = a[Label.sandboxId];
        if (sandboxId === undefined) return;
        this.emit({ type: 'sandbox-died', sandboxId, message: `infra container exited with code ${exitCode}` });
      })
      .otherwise(() => undefined);
  }

  /** True the first time `key` is seen (remembers the most recent exits only). */
  private firstReport(key: string): boolean {
    if (this.reported.has(key)) return false;
    this.reported.add(key);
    if (this.reported.size > REPORTED_EXITS_KEPT) {
      const oldest = this.reported.values().next().value;
      if (oldest !== undefined) this.reported.delete(oldest);
    }
    return true;
  }

  private async onConnected(gapSince: Nanos | null): Promise<void> {
    try {
      await this.resumeLogs();
      if (gapSince !== null) {
        this.emit({ type: 'health-changed', health: await this.probe() });
        await this.reportExitsSince(gapSince);
      }
    } catch (e) {
      this.log.warn({ err: String(e) }, 'could not resume after connecting to dockerd');
    } finally {
      this.markRecovered();
    }
  }

  private onDisconnected(e: unknown): void {
    if (this.closed) return;
    this.log.warn({ err: dockerMessage(e) }, 'lost the docker event stream');
    this.emit({
      type: 'health-changed',
      health: {
        ready: false,
        reason: 'DockerUnreachable',
        message: `lost the event stream of dockerd at ${this.config.socket}: ${dockerMessage(e)}`,
        info: { socket: this.config.socket },
      },
    });
  }

  /**
   * Resumes copying output for containers dockerd has that no follower
   * serves (after an HCR restart, or dockerd coming back), each from just
   * after the last record already in its log.
   */
  private async resumeLogs(): Promise<void> {
    const list = await this.docker.listContainers({
      all: true,
      filters: { label: [`${Label.engine}=${this.name}`, `${Label.kind}=container`] },
    });
    for (const c of list) {
      const containerId = c.Labels[Label.containerId];
      const logPath = c.Labels[Label.logPath];
      if (containerId === undefined || logPath === undefined || c.State === 'created') continue;
      if (this.followers.has(containerId)) continue;
      const info = await this.inspectOrNull(c.Id);
      if (info === null) continue;
      try {
        const follower = new LogFollower({
          docker: this.docker,
          dockerRef: c.Id,
          logPath,
          tty: info.Config.Tty,
          cursorFile: this.cursorFile(containerId),
          resume: true,
          logger: this.log,
        });
        this.track(containerId, follower);
        follower.start();
      } catch (e) {
        this.log.warn({ container: containerId, err: String(e) }, `cannot resume copying output to ${logPath}`);
      }
    }
  }

  /** Reports containers that exited while the event stream was down (dockerd restarted). */
  private async reportExitsSince(since: Nanos): Promise<void> {
    const list = await this.docker.listContainers({
      all: true,
      filters: { label: [`${Label.engine}=${this.name}`], status: ['exited', 'dead'] },
    });
    for (const c of list) {
      const info = await this.inspectOrNull(c.Id);
      if (info === null || parseRfc3339Nano(info.State.FinishedAt) < since) continue;
      await this.onDockerEvent({
        action: 'die',
        dockerId: c.Id,
        attributes: { ...c.Labels, exitCode: String(info.State.ExitCode) },
        timeNano: parseRfc3339Nano(info.State.FinishedAt),
      });
    }
  }

  // -------------------------------------------------------------- lifecycle

  async close(): Promise<void> {
    this.closed = true;
    await this.events.stop();
    await Promise.all([...this.followers.values()].map((f) => f.stop()));
    this.followers.clear();
    this.listeners.clear();
  }

  // ----------------------------------------------------------------- helpers

  private run<T>(context: string, fn: () => Promise<T>): EngineResult<T> {
    return ResultAsync.fromPromise(fn(), (e) => fromDocker(e, context, this.config.socket));
  }

  private appContainer(c: ContainerRef): Docker.Container {
    return this.docker.getContainer(dockerName('container', c.id));
  }

  private cursorFile(containerId: string): string {
    return join(this.context.stateDir, 'log-cursors', containerId);
  }

  private track(containerId: string, follower: LogFollower): void {
    this.followers.set(containerId, follower);
    void follower.done.then(() => {
      if (this.followers.get(containerId) === follower) this.followers.delete(containerId);
    });
  }

  private async dropFollower(containerId: string): Promise<void> {
    const follower = this.followers.get(containerId);
    if (follower === undefined) return;
    this.followers.delete(containerId);
    await follower.stop();
  }

  /** Waits (bounded) until the output of a stopped container is in its CRI log. */
  private async awaitLogs(containerId: string): Promise<void> {
    const limit = this.config.logDrainTimeoutMs;
    const bounded = <T>(p: Promise<T>): Promise<unknown> => Promise.race([p, sleep(limit, 'timeout' as const)]);
    if ((await bounded(this.recovered)) === 'timeout') return;
    const follower = this.followers.get(containerId);
    if (follower === undefined) return;
    if ((await bounded(follower.done)) === 'timeout')
      this.log.warn({ container: containerId }, `container output still being copied after ${limit} ms`);
  }

  /**
   * Creates a container, or adopts the one a crashed earlier attempt left under
   * the same name (same HCR id in its labels). A stale app container is
   * replaced rather than adopted, since its config may differ.
   */
  private async createOrAdopt(
    options: Docker.ContainerCreateOptions,
    idLabel: string,
    id: string,
    replace = false,
  ): Promise<Docker.Container> {
    try {
      return await this.docker.createContainer(options);
    } catch (e) {
      if (!isDockerConflict(e) || options.name === undefined) throw e;
      const existing = await this.inspectOrNull(options.name);
      if (existing === null || existing.Config.Labels[idLabel] !== id) {
        throw errors.alreadyExists(`a Docker container named ${options.name} exists and is not HCR's ${id}`);
      }
      if (!replace) return this.docker.getContainer(existing.Id);
      await this.removeForce(existing.Id);
      return this.docker.createContainer(options);
    }
  }

  private async startIdempotent(container: Docker.Container): Promise<void> {
    try {
      await container.start();
    } catch (e) {
      if (!isDockerNotModified(e)) throw e;
    }
  }

  private async stopIdempotent(ref: string, timeoutSeconds: number): Promise<void> {
    try {
      await this.docker.getContainer(ref).stop({ t: Math.max(0, Math.floor(timeoutSeconds)) });
    } catch (e) {
      if (!isDockerNotModified(e) && !isDockerNotFound(e)) throw e;
    }
  }

  private async removeForce(ref: string): Promise<void> {
    try {
      await this.docker.getContainer(ref).remove({ force: true, v: true });
    } catch (e) {
      // 409: a removal is already in progress, which ends the same way.
      if (!isDockerNotFound(e) && !isDockerConflict(e)) throw e;
    }
  }

  private async inspectOrNull(ref: string): Promise<Docker.ContainerInspectInfo | null> {
    try {
      return await this.docker.getContainer(ref).inspect();
    } catch (e) {
      if (isDockerNotFound(e)) return null;
      throw e;
    }
  }

  /** Facts about the host's capabilities, read once (they decide how privileged containers are made). */
  private hostFacts(): Promise<HostFacts> {
    this.host ??= hostBoundingSet().then((b) => ({
      missingCapabilities: b.missing,
      // runc needs CAP_SYS_RESOURCE to lower oom_score_adj.
      canLowerOomScore: b.present.includes('CAP_SYS_RESOURCE'),
    }));
    return this.host;
  }
}

/** Maps Docker's container state to the engine's status (CRI reasons included). */
export function toContainerStatus(info: Docker.ContainerInspectInfo): EngineContainerStatus {
  const s = info.State;
  const state = match<string, ContainerState>(s.Status)
    .with('created', () => 'created')
    .with('running', 'paused', 'restarting', () => 'running')
    .with('exited', 'dead', 'removing', () => 'exited')
    .otherwise(() => 'unknown');
  const reason = state !== 'exited' ? '' : s.OOMKilled ? 'OOMKilled' : s.ExitCode === 0 ? 'Completed' : 'Error';
  return {
    state,
    pid: s.Pid,
    startedAt: parseRfc3339Nano(s.StartedAt),
    finishedAt: state === 'exited' ? parseRfc3339Nano(s.FinishedAt) : 0n,
    exitCode: state === 'exited' ? s.ExitCode : 0,
    reason,
    message: s.Error,
  };
}

/** Whether a cgroup found earlier still exists (it goes away when the container stops). */
async function cgroupExists(loc: CgroupLocation): Promise<boolean> {
  const dir = loc.version === 2 ? loc.dir : (loc.memory ?? loc.cpuacct ?? loc.pids);
  if (dir === null) return false;
  return access(dir).then(
    () => true,
    () => false,
  );
}

function isNoSuchImage(e: unknown): boolean {
  return isDockerNotFound(e) && /image/i.test(dockerMessage(e));
}

/** Reads a `localhost/…` seccomp profile; CRI gives an absolute path on the node. */
async function readSeccompProfile(ref: string): Promise<string> {
  const path = ref.replace(/^localhost\//, '');
  if (!isAbsolute(path))
    throw errors.invalidArgument(
      `seccomp profile "${ref}" must be an absolute path on the node`,
      'config.linux.security_context.seccomp.localhost_ref',
    );
  try {
    const text = await readFile(path, 'utf8');
    JSON.parse(text);
    return text;
  } catch (e) {
    throw errors.invalidArgument(
      `cannot use seccomp profile ${path}: ${(e as Error).message}`,
      'config.linux.security_context.seccomp.localhost_ref',
    );
  }
}

/** Creates missing bind-mount sources as directories, as the kubelet's dockershim did. */
async function ensureMountSources(c: ContainerRef): Promise<void> {
  for (const m of c.spec.mounts) {
    const exists = await lstat(m.hostPath).then(
      () => true,
      (e: NodeJS.ErrnoException) => {
        if (e.code === 'ENOENT') return false;
        throw errors.invalidArgument(`mount source ${m.hostPath}: ${e.message}`, 'config.mounts');
      },
    );
    if (!exists) await mkdir(m.hostPath, { recursive: true, mode: 0o755 });
  }
}

/** Creates a docker engine; dockerd need not be up yet (health reports it until it is). */
export function createDockerEngine(
  config: DockerEngineConfig,
  context: EngineContext,
): ResultAsync<RuntimeEngine, HcrError> {
  return ResultAsync.fromPromise(
    Promise.resolve().then(() => new DockerEngine(config, context)),
    (e) => toHcrError(e, 'create docker engine'),
  );
}

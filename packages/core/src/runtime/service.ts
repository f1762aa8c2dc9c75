import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { join, normalize } from 'node:path';
import type { Duplex } from 'node:stream';
import { ResultAsync } from 'neverthrow';
import type {
  Capability,
  ContainerRef,
  EngineContainerStatus,
  EngineEvent,
  EngineHealth,
  ExecSyncResult,
  RuntimeEngine,
  SandboxRef,
  StreamIO,
} from '../engine.js';
import { errors, type HcrError, isHcrError, toHcrError } from '../errors.js';
import type { ImageService } from '../images/types.js';
import { decideContainer, containerCriState } from '../lifecycle/container.js';
import { decideSandbox } from '../lifecycle/sandbox.js';
import type { Logger } from '../logger.js';
import { silentLogger } from '../logger.js';
import type { NetworkManager, NetworkReadiness } from '../network/types.js';
import {
  bindByImage,
  checkImageFits,
  describeCapability,
  routePod,
  type EngineView,
  type RouterConfig,
  type RoutingDecision,
} from '../router/router.js';
import type { ContainerRecord, SandboxRecord, StateStore } from '../store/records.js';
import type {
  ContainerSpec,
  ImageInfo,
  ContainerState,
  ContainerStats,
  LinuxResources,
  PodNetwork,
  SandboxSpec,
  SandboxStats,
} from '../types.js';
import { nowNanos } from '../types.js';
import { newContainerSpec, newSandboxSpec } from '../builders.js';
import { faultPoint } from './faults.js';
import { KeyedLock } from './keyed-lock.js';
import { podFilePaths, writePodFiles } from './pod-files.js';
import { validateContainerSpec, validateSandboxSpec } from './validate.js';

/** What the runtime service is built from. */
export interface RuntimeServiceOptions {
  readonly store: StateStore;
  readonly network: NetworkManager;
  readonly images: ImageService;
  /** Engines by instance name. */
  readonly engines: ReadonlyMap<string, RuntimeEngine>;
  readonly router: RouterConfig;
  /** Root of per-sandbox runtime dirs (default `/run/hcr/sandboxes`). */
  readonly sandboxDir: string;
  readonly logger?: Logger;
  /** resolv.conf used for pods without DNS config (default `/etc/resolv.conf`). */
  readonly hostResolvConf?: string;
}

/** A sandbox with its CRI-visible state. */
export interface SandboxView {
  readonly record: SandboxRecord;
  readonly state: 'ready' | 'notready';
}

/** A container with its CRI-visible state. */
export interface ContainerView {
  readonly record: ContainerRecord;
  readonly state: ContainerState;
  readonly pid: number;
}

/** Filters of ListPodSandbox. */
export interface SandboxFilter {
  readonly id?: string;
  readonly state?: 'ready' | 'notready';
  readonly labels?: Readonly<Record<string, string>>;
}

/** Filters of ListContainers. */
export interface ContainerFilter {
  readonly id?: string;
  readonly sandboxId?: string;
  readonly state?: ContainerState;
  readonly labels?: Readonly<Record<string, string>>;
}

/** Runtime conditions, as CRI Status reports them. */
export interface RuntimeConditions {
  readonly runtimeReady: { readonly ready: boolean; readonly reason: string; readonly message: string };
  readonly networkReady: NetworkReadiness;
  readonly engines: Readonly<Record<string, EngineHealth>>;
}

/**
 * Stop timeout for containers still running when their pod is stopped: none.
 * CRI says StopPodSandbox terminates them forcibly (the kubelet has already
 * given each its grace period through StopContainer), and containerd does the
 * same; a grace period here made every pod whose main process ignores SIGTERM
 * (a shell or `sleep` as PID 1) take 10 s longer to stop.
 */
const POD_STOP_GRACE_SECONDS = 0;

/**
 * The engine-agnostic runtime: CRI semantics over domain types. It owns the
 * state records, consults the lifecycle tables before every operation, runs
 * networking once per pod and routes each pod to an engine. Every step is
 * recorded before it is acknowledged so that {@link recover} can converge
 * whatever a crash left half-done.
 */
export class RuntimeService {
  private readonly lock = new KeyedLock();
  private readonly log: Logger;
  private readonly unsubscribers: (() => void)[] = [];
  private readonly hostResolv: string;
  /**
   * Ready pods whose engine unit died (engine event, a status probe, or found
   * at recovery). Liveness is derived, so it is kept in memory, not recorded:
   * ListPodSandbox must not call engines, yet must not report such a pod ready.
   */
  private readonly deadSandboxes = new Set<string>();

  constructor(private readonly opts: RuntimeServiceOptions) {
    this.log = opts.logger ?? silentLogger;
    let resolv = '';
    try {
      resolv = readFileSync(opts.hostResolvConf ?? '/etc/resolv.conf', 'utf8');
    } catch {
      resolv = '';
    }
    this.hostResolv = resolv;
    for (const [name, engine] of opts.engines) {
      this.unsubscribers.push(engine.subscribe((e) => this.onEngineEvent(name, e)));
    }
  }

  /** Engines by instance name. */
  get engines(): ReadonlyMap<string, RuntimeEngine> {
    return this.opts.engines;
  }

  /** The image service shared by every engine. */
  get images(): ImageService {
    return this.opts.images;
  }

  // ---------------------------------------------------------------- sandboxes

  /** RunPodSandbox: route, make the network, start the engine's unit. Returns the sandbox id. */
  runPodSandbox(spec: SandboxSpec): ResultAsync<string, HcrError> {
    return this.task(async () => {
      const valid = validateSandboxSpec(spec);
      if (valid.isErr()) throw valid.error;
      const key = sandboxKey(spec);
      return this.lock.run(`sandbox-key:${key}`, async () => {
        const existing = this.opts.store.listSandboxes().find((s) => s.key === key);
        if (existing !== undefined) {
          throw errors.alreadyExists(
            `pod sandbox name ${key} is reserved by sandbox ${existing.id}; remove it first or use another attempt number`,
          );
        }
        const decision = routePod(spec, this.opts.router, await this.engineViews());
        if (decision.isErr()) throw decision.error;
        const id = newId();
        const hostNetwork = spec.linux.namespaces.network === 'node';
        let record: SandboxRecord = {
          id,
          key,
          spec,
          phase: 'creating',
          createdAt: nowNanos(),
          engine: decision.value.engine,
          routing: decision.value,
          network: emptyNetwork,
          networkPhase: 'none',
          engineCreated: false,
          engineData: {},
          runtimeDir: join(this.opts.sandboxDir, id),
        };
        const log = this.log.child({ podSandboxId: id, pod: `${spec.metadata.namespace}/${spec.metadata.name}` });
        this.opts.store.putSandbox(record);
        faultPoint('runPodSandbox:after-record');
        try {
          if (!hostNetwork) {
            const netnsPath = await unwrap(this.opts.network.createNetns(id));
            record = { ...record, network: { ...emptyNetwork, netnsPath }, networkPhase: 'netns-created' };
            this.opts.store.putSandbox(record);
            faultPoint('runPodSandbox:after-netns');
            record = await this.attachNetwork(record, netnsPath);
            faultPoint('runPodSandbox:after-cni');
          }
          writePodFiles(record.runtimeDir, spec, record.network, this.hostResolv);
          if (record.engine !== null && !record.engineCreated) record = await this.createEngineSandbox(record);
          else await this.engineNetworkReady(record);
          faultPoint('runPodSandbox:after-engine');
          record = { ...record, phase: 'ready' };
          this.opts.store.putSandbox(record);
          log.info(
            { engine: record.engine ?? 'deferred', reason: record.routing.reason, ips: record.network.ips },
            'pod sandbox ready',
          );
          return id;
        } catch (e) {
          log.warn({ err: String(e) }, 'pod sandbox setup failed; rolling back');
          await this.teardownSandbox(record, true).catch((te: unknown) =>
            log.error({ err: String(te) }, 'rollback of a failed pod sandbox left something behind'),
          );
          throw toHcrError(e, `run pod sandbox ${spec.metadata.namespace}/${spec.metadata.name}`);
        }
      });
    });
  }

  /** StopPodSandbox: stop containers, the engine unit and the network. Unknown ids succeed. */
  stopPodSandbox(id: string): ResultAsync<void, HcrError> {
    return this.task(() =>
      this.lock.run(`sandbox:${id}`, async () => {
        const record = this.opts.store.getSandbox(id);
        if (record === undefined) return;
        const d = decideSandbox(record.phase, 'stop', id);
        if (d.action === 'refuse') throw d.error;
        if (d.action === 'noop') return;
        await this.stopSandboxSteps(record);
      }),
    );
  }

  /** RemovePodSandbox: stop (forcibly) and remove everything of the pod. Unknown ids succeed. */
  removePodSandbox(id: string): ResultAsync<void, HcrError> {
    return this.task(() =>
      this.lock.run(`sandbox:${id}`, async () => {
        const record = this.opts.store.getSandbox(id);
        if (record === undefined) return;
        const d = decideSandbox(record.phase, 'remove', id);
        if (d.action === 'refuse') throw d.error;
        if (d.action === 'noop') return;
        await this.teardownSandbox(record, false);
      }),
    );
  }

  /** PodSandboxStatus. A pod whose removal failed is still reported (NotReady) until it is gone. */
  podSandboxStatus(id: string): ResultAsync<SandboxView, HcrError> {
    return this.task(async () => {
      const record = this.opts.store.getSandbox(id);
      if (record === undefined) throw errors.notFound(`pod sandbox ${JSON.stringify(id)} not found`);
      return { record, state: await this.liveSandboxState(record) };
    });
  }

  /**
   * ListPodSandbox (served from memory; engines are not asked). A pod whose
   * removal failed stays listed, NotReady, so the kubelet retries removing it.
   */
  listPodSandbox(filter: SandboxFilter = {}): SandboxView[] {
    const out: SandboxView[] = [];
    for (const record of this.opts.store.listSandboxes()) {
      if (filter.id !== undefined && filter.id !== '' && !record.id.startsWith(filter.id)) continue;
      if (record.phase === 'creating') continue;
      const state =
        record.phase === 'ready' && !this.deadSandboxes.has(record.id) && networkUp(record) ? 'ready' : 'notready';
      if (filter.state !== undefined && filter.state !== state) continue;
      if (filter.labels !== undefined && !labelsMatch(record.spec.labels, filter.labels)) continue;
      out.push({ record, state });
    }
    return out;
  }

  // --------------------------------------------------------------- containers

  /** CreateContainer. Binds a deferred pod to an engine from the image. Returns the container id. */
  createContainer(sandboxId: string, spec: ContainerSpec): ResultAsync<string, HcrError> {
    return this.task(() =>
      this.lock.run(`sandbox:${sandboxId}`, async () => {
        let sandbox = this.requireSandbox(sandboxId);
        const d = decideSandbox(sandbox.phase, 'createContainer', sandboxId);
        if (d.action === 'refuse') throw d.error;
        const valid = validateContainerSpec(spec, sandbox.spec);
        if (valid.isErr()) throw valid.error;
        const key = `${sandboxId}/${spec.metadata.name}/${spec.metadata.attempt}`;
        const dup = this.opts.store.listContainers(sandboxId).find((c) => c.key === key);
        if (dup !== undefined) {
          throw errors.alreadyExists(
            `container name ${spec.metadata.name} (attempt ${spec.metadata.attempt}) is reserved by container ${dup.id} in pod ${sandboxId}`,
          );
        }
        const image = await unwrap(this.opts.images.status(spec.image));
        if (image === null) throw errors.notFound(`image ${JSON.stringify(spec.image)} is not present; pull it first`);
        if (sandbox.engine === null) {
          const bound = bindByImage(sandbox.spec, image, this.opts.router, await this.engineViews());
          if (bound.isErr()) throw bound.error;
          sandbox = { ...sandbox, engine: bound.value.engine, routing: mergeRouting(sandbox.routing, bound.value) };
          this.opts.store.putSandbox(sandbox);
          this.log.info(
            { podSandboxId: sandboxId, engine: sandbox.engine, reason: bound.value.reason },
            'pod bound to engine',
          );
        }
        // Also when an earlier CreateContainer bound the pod but its unit failed (and was removed).
        if (!sandbox.engineCreated) sandbox = await this.createEngineSandbox(sandbox);
        const engineName = sandbox.engine as string;
        const engine = this.engine(engineName);
        const fits = checkImageFits(engineName, { capabilities: engine.capabilities, healthy: true }, image);
        if (fits.isErr()) throw fits.error;
        this.checkContainerCapabilities(engine, spec);
        const id = newId();
        const logPath = spec.logPath === '' ? '' : normalize(join(sandbox.spec.logDirectory, spec.logPath));
        let record: ContainerRecord = {
          id,
          sandboxId,
          key,
          spec,
          image,
          imageRef: spec.image,
          phase: 'creating',
          createdAt: nowNanos(),
          startedAt: 0n,
          finishedAt: 0n,
          exitCode: 0,
          reason: '',
          message: '',
          logPath,
          engineCreated: false,
          engineData: {},
        };
        this.opts.store.putContainer(record);
        faultPoint('createContainer:after-record');
        try {
          const created = await unwrap(engine.createContainer(this.containerRef(record, sandbox)));
          record = { ...record, phase: 'created', engineCreated: true, engineData: created.engineData };
          this.opts.store.putContainer(record);
          faultPoint('createContainer:after-engine');
          return id;
        } catch (e) {
          await unwrap(engine.removeContainer(this.containerRef(record, sandbox))).catch(() => undefined);
          this.opts.store.deleteContainer(id);
          throw toHcrError(e, `create container ${spec.metadata.name}`);
        }
      }),
    );
  }

  /** StartContainer: only from `created`. */
  startContainer(id: string): ResultAsync<void, HcrError> {
    return this.withContainer(id, async (record, sandbox, engine) => {
      const d = decideContainer(record.phase, 'start', id);
      if (d.action === 'refuse') throw d.error;
      const sd = decideSandbox(sandbox.phase, 'createContainer', sandbox.id);
      if (sd.action === 'refuse')
        throw errors.failedPrecondition(`cannot start container ${id}: pod ${sandbox.id} is not ready`);
      const ref = this.containerRef(record, sandbox);
      try {
        await unwrap(engine.startContainer(ref));
      } catch (e) {
        const st = await unwrap(engine.containerStatus(ref)).catch(() => null);
        this.opts.store.putContainer(applyStatus({ ...record, phase: 'exited' }, st, 128, 'StartError', String(e)));
        throw toHcrError(e, `start container ${id}`);
      }
      faultPoint('startContainer:after-engine');
      const st = await unwrap(engine.containerStatus(ref)).catch(() => null);
      const next = applyStatus({ ...record, phase: 'running', startedAt: nowNanos() }, st);
      this.opts.store.putContainer(next);
    });
  }

  /** StopContainer: a no-op unless running. */
  stopContainer(id: string, timeoutSeconds: number): ResultAsync<void, HcrError> {
    return this.withContainer(id, async (record, sandbox, engine) => {
      const current = await this.refreshContainer(record, sandbox, engine);
      const d = decideContainer(current.phase, 'stop', id);
      if (d.action === 'refuse') throw d.error;
      if (d.action === 'noop') return;
      await this.stopContainerSteps(current, sandbox, engine, timeoutSeconds);
    });
  }

  /** RemoveContainer: stops a running container first; unknown ids succeed. */
  removeContainer(id: string): ResultAsync<void, HcrError> {
    return this.task(async () => {
      const record = this.opts.store.getContainer(id);
      if (record === undefined) return;
      await this.lock.run(`sandbox:${record.sandboxId}`, () =>
        this.lock.run(`container:${id}`, async () => {
          const current = this.opts.store.getContainer(id);
          if (current === undefined) return;
          const sandbox = this.requireSandbox(current.sandboxId);
          await this.removeContainerSteps(current, sandbox);
        }),
      );
    });
  }

  /** ContainerStatus, refreshed from the engine while the container may still change. */
  containerStatus(id: string): ResultAsync<ContainerView, HcrError> {
    return this.withContainer(id, async (record, sandbox, engine) => {
      const current = await this.refreshContainer(record, sandbox, engine);
      const pid = typeof current.engineData['pid'] === 'number' ? current.engineData['pid'] : 0;
      return { record: current, state: containerCriState(current.phase), pid };
    });
  }

  /** ListContainers (served from memory, kept current by engine events). */
  listContainers(filter: ContainerFilter = {}): ContainerView[] {
    const out: ContainerView[] = [];
    for (const record of this.opts.store.listContainers()) {
      if (record.phase === 'creating' || record.phase === 'removing') continue;
      if (filter.id !== undefined && filter.id !== '' && !record.id.startsWith(filter.id)) continue;
      if (filter.sandboxId !== undefined && filter.sandboxId !== '' && !record.sandboxId.startsWith(filter.sandboxId))
        continue;
      const state = containerCriState(record.phase);
      if (filter.state !== undefined && filter.state !== state) continue;
      if (filter.labels !== undefined && !labelsMatch(record.spec.labels, filter.labels)) continue;
      out.push({ record, state, pid: 0 });
    }
    return out;
  }

  /** ExecSync. */
  execSync(id: string, cmd: readonly string[], timeoutSeconds: number): ResultAsync<ExecSyncResult, HcrError> {
    return this.withRunning(id, 'exec', 'execSync', (ref, engine) => unwrap(engine.execSync(ref, cmd, timeoutSeconds)));
  }

  /** Checks that Exec may be served (for the CRI call that returns a URL). */
  checkExec(id: string, tty: boolean, stdin: boolean): ResultAsync<void, HcrError> {
    return this.withRunning(id, 'exec', 'exec', async (_ref, engine) => {
      if (tty) this.requireCapability(engine, 'tty', 'a TTY');
      void stdin;
    });
  }

  /** Checks that Attach may be served. */
  checkAttach(id: string, stdin: boolean): ResultAsync<void, HcrError> {
    return this.withRunning(id, 'attach', 'attach', async (_ref, engine) => {
      if (stdin) this.requireCapability(engine, 'attachStdin', 'attach with stdin');
    });
  }

  /** Streaming exec (called by the streaming server). */
  exec(id: string, cmd: readonly string[], io: StreamIO): Promise<{ exitCode: number }> {
    return this.streamTask(id, 'exec', 'exec', (ref, engine) => unwrap(engine.exec(ref, cmd, io)));
  }

  /** Streaming attach (called by the streaming server). */
  attach(id: string, io: StreamIO): Promise<void> {
    return this.streamTask(id, 'attach', 'attach', (ref, engine) => unwrap(engine.attach(ref, io)));
  }

  /** Checks that PortForward may be served. */
  checkPortForward(sandboxId: string): ResultAsync<void, HcrError> {
    return this.task(async () => {
      const sandbox = this.requireSandbox(sandboxId);
      const d = decideSandbox(sandbox.phase, 'portForward', sandboxId);
      if (d.action === 'refuse') throw d.error;
      if (sandbox.engine !== null)
        this.requireCapability(this.engine(sandbox.engine), 'portForward', 'port forwarding');
    });
  }

  /** Port-forward one connection (called by the streaming server). */
  async portForward(sandboxId: string, port: number, stream: Duplex): Promise<void> {
    const sandbox = this.requireSandbox(sandboxId);
    const d = decideSandbox(sandbox.phase, 'portForward', sandboxId);
    if (d.action === 'refuse') throw d.error;
    if (sandbox.engine === null) {
      // An unbound pod has only its network namespace: forward into it directly.
      if (sandbox.network.netnsPath === null)
        throw errors.failedPrecondition(`pod ${sandboxId} has no network namespace`);
      const conn = await unwrap(this.opts.network.connect(sandbox.network.netnsPath, port));
      stream.pipe(conn).pipe(stream);
      await new Promise<void>((resolve) => conn.on('close', () => resolve()));
      return;
    }
    const engine = this.engine(sandbox.engine);
    this.requireCapability(engine, 'portForward', 'port forwarding');
    await unwrap(engine.portForward(this.sandboxRef(sandbox), port, stream));
  }

  /** UpdateContainerResources. */
  updateContainerResources(id: string, resources: LinuxResources): ResultAsync<void, HcrError> {
    return this.withContainer(id, async (record, sandbox, engine) => {
      const d = decideContainer(record.phase, 'updateResources', id);
      if (d.action === 'refuse') throw d.error;
      this.requireCapability(engine, 'updateResources', 'resource updates');
      await unwrap(engine.updateContainerResources(this.containerRef(record, sandbox), resources));
      this.opts.store.putContainer({
        ...record,
        spec: { ...record.spec, linux: { ...record.spec.linux, resources } },
      });
    });
  }

  /** ReopenContainerLog. */
  reopenContainerLog(id: string): ResultAsync<void, HcrError> {
    return this.withContainer(id, async (record, sandbox, engine) => {
      const current = await this.refreshContainer(record, sandbox, engine);
      const d = decideContainer(current.phase, 'reopenLog', id);
      if (d.action === 'refuse') throw d.error;
      this.requireCapability(engine, 'reopenLog', 'reopening logs');
      await unwrap(engine.reopenContainerLog(this.containerRef(current, sandbox)));
    });
  }

  /** ContainerStats. */
  containerStats(id: string): ResultAsync<{ record: ContainerRecord; stats: ContainerStats }, HcrError> {
    return this.task(async () => {
      const record = this.requireContainer(id);
      const sandbox = this.requireSandbox(record.sandboxId);
      const engine = this.engine(this.boundEngine(sandbox));
      this.requireCapability(engine, 'stats', 'stats');
      const stats = await unwrap(engine.containerStats(this.containerRef(record, sandbox)));
      return { record, stats };
    });
  }

  /** PodSandboxStats. */
  podSandboxStats(
    id: string,
  ): ResultAsync<
    { record: SandboxRecord; stats: SandboxStats; containers: { record: ContainerRecord; stats: ContainerStats }[] },
    HcrError
  > {
    return this.task(async () => {
      const sandbox = this.requireSandbox(id);
      const containers = this.opts.store.listContainers(id).filter((c) => c.phase === 'running');
      if (sandbox.engine === null) {
        return {
          record: sandbox,
          stats: {
            timestamp: nowNanos(),
            cpuUsageCoreNanoSeconds: 0n,
            memoryWorkingSetBytes: 0,
            memoryUsageBytes: 0,
            network: null,
            processes: 0,
          },
          containers: [],
        };
      }
      const engine = this.engine(sandbox.engine);
      this.requireCapability(engine, 'stats', 'stats');
      const refs = containers.map((c) => this.containerRef(c, sandbox));
      const stats = await unwrap(engine.sandboxStats(this.sandboxRef(sandbox), refs));
      const per = await Promise.all(
        containers.map(async (c, i) => ({ record: c, stats: await unwrap(engine.containerStats(refs[i]!)) })),
      );
      return { record: sandbox, stats, containers: per };
    });
  }

  /** Status conditions for CRI Status. */
  async conditions(): Promise<RuntimeConditions> {
    const healths: Record<string, EngineHealth> = {};
    await Promise.all(
      [...this.opts.engines].map(async ([name, engine]) => {
        healths[name] = await engine.health().match(
          (h) => h,
          (e) => ({ ready: false, reason: 'HealthCheckFailed', message: e.message, info: {} }),
        );
      }),
    );
    const def = healths[this.opts.router.defaultEngine];
    const runtimeReady =
      def === undefined
        ? {
            ready: false,
            reason: 'NoDefaultEngine',
            message: `default engine ${this.opts.router.defaultEngine} is not configured`,
          }
        : def.ready
          ? { ready: true, reason: '', message: '' }
          : {
              ready: false,
              reason: def.reason,
              message: `default engine ${this.opts.router.defaultEngine}: ${def.message}`,
            };
    return { runtimeReady, networkReady: this.opts.network.readiness(), engines: healths };
  }

  // ----------------------------------------------------------------- recovery

  /**
   * Converges state after a start: finishes half-made or half-removed objects,
   * refreshes container states from the engines and removes engine objects no
   * record owns.
   */
  async recover(): Promise<{ cleaned: number; refreshed: number; orphans: number }> {
    let cleaned = 0;
    let refreshed = 0;
    let orphans = 0;
    for (const c of this.opts.store.listContainers()) {
      const sandbox = this.opts.store.getSandbox(c.sandboxId);
      if (sandbox === undefined) {
        this.opts.store.deleteContainer(c.id);
        cleaned++;
        continue;
      }
      if (c.phase === 'creating' || c.phase === 'removing') {
        await this.removeContainerSteps(c, sandbox).catch((e: unknown) =>
          this.log.error({ containerId: c.id, err: String(e) }, 'recovery: container cleanup failed'),
        );
        cleaned++;
      } else if ((c.phase === 'running' || c.phase === 'created') && sandbox.engine !== null) {
        await this.refreshContainer(c, sandbox, this.engine(sandbox.engine)).catch(() => undefined);
        refreshed++;
      }
    }
    for (const s of this.opts.store.listSandboxes()) {
      if (s.phase === 'creating' || s.phase === 'removing') {
        await this.teardownSandbox(s, s.phase === 'creating').catch((e: unknown) =>
          this.log.error({ podSandboxId: s.id, err: String(e) }, 'recovery: sandbox cleanup failed'),
        );
        cleaned++;
      } else if (s.phase === 'ready' && s.engine !== null && this.opts.engines.has(s.engine)) {
        // A pod whose unit died while HCR was down (or a stop cut short after the
        // engine step) must be listed NotReady; the kubelet's StopPodSandbox finishes it.
        await this.liveSandboxState(s);
        refreshed++;
      }
    }
    for (const [name, engine] of this.opts.engines) {
      const inv = await engine.inventory().match(
        (v) => v,
        (e) => {
          this.log.warn({ engine: name, err: e.message }, 'recovery: engine inventory unavailable');
          return { sandboxIds: [], containerIds: [] };
        },
      );
      for (const cid of inv.containerIds) {
        if (this.opts.store.getContainer(cid) !== undefined) continue;
        orphans++;
        await unwrap(engine.removeContainer(orphanContainerRef(cid))).catch(() => undefined);
      }
      for (const sid of inv.sandboxIds) {
        const owner = this.opts.store.getSandbox(sid);
        if (owner !== undefined && owner.engine === name) continue;
        orphans++;
        await unwrap(engine.removeSandbox(orphanSandboxRef(sid, join(this.opts.sandboxDir, sid)))).catch(
          () => undefined,
        );
      }
    }
    this.log.info({ cleaned, refreshed, orphans }, 'state recovered');
    return { cleaned, refreshed, orphans };
  }

  /** Detaches from engine events (engines themselves are closed by their owner). */
  close(): void {
    for (const u of this.unsubscribers.splice(0)) u();
  }

  // ---------------------------------------------------------------- internals

  private task<T>(fn: () => Promise<T>): ResultAsync<T, HcrError> {
    return ResultAsync.fromPromise((async () => fn())(), (e) => toHcrError(e));
  }

  private withContainer<T>(
    id: string,
    fn: (record: ContainerRecord, sandbox: SandboxRecord, engine: RuntimeEngine) => Promise<T>,
  ): ResultAsync<T, HcrError> {
    return this.task(() =>
      this.lock.run(`container:${id}`, async () => {
        const record = this.requireContainer(id);
        const sandbox = this.requireSandbox(record.sandboxId);
        return fn(record, sandbox, this.engine(this.boundEngine(sandbox)));
      }),
    );
  }

  private withRunning<T>(
    id: string,
    op: 'exec' | 'attach',
    capability: Capability,
    fn: (ref: ContainerRef, engine: RuntimeEngine) => Promise<T>,
  ): ResultAsync<T, HcrError> {
    return this.task(async () => {
      const record = this.requireContainer(id);
      const sandbox = this.requireSandbox(record.sandboxId);
      const engine = this.engine(this.boundEngine(sandbox));
      const d = decideContainer(record.phase, op, id);
      if (d.action === 'refuse') throw d.error;
      this.requireCapability(engine, capability, capability === 'execSync' ? 'exec' : capability);
      return fn(this.containerRef(record, sandbox), engine);
    });
  }

  private async streamTask<T>(
    id: string,
    op: 'exec' | 'attach',
    capability: Capability,
    fn: (ref: ContainerRef, engine: RuntimeEngine) => Promise<T>,
  ): Promise<T> {
    const r = await this.withRunning(id, op, capability, fn);
    if (r.isErr()) throw r.error;
    return r.value;
  }

  private requireSandbox(id: string): SandboxRecord {
    const r = this.opts.store.getSandbox(id);
    if (r === undefined || r.phase === 'removing') throw errors.notFound(`pod sandbox ${JSON.stringify(id)} not found`);
    return r;
  }

  private requireContainer(id: string): ContainerRecord {
    const r = this.opts.store.getContainer(id);
    if (r === undefined || r.phase === 'removing') throw errors.notFound(`container ${JSON.stringify(id)} not found`);
    return r;
  }

  private boundEngine(sandbox: SandboxRecord): string {
    if (sandbox.engine === null) {
      throw errors.failedPrecondition(
        `pod sandbox ${sandbox.id} has no engine yet (bound when its first container is created)`,
      );
    }
    return sandbox.engine;
  }

  private engine(name: string): RuntimeEngine {
    const e = this.opts.engines.get(name);
    if (e === undefined)
      throw errors.unavailable(`engine ${JSON.stringify(name)} is not configured or failed to start`);
    return e;
  }

  private requireCapability(engine: RuntimeEngine, capability: Capability, what: string): void {
    if (!engine.capabilities[capability]) {
      throw errors.unsupported(engine.name, capability, `engine "${engine.name}" does not support ${what}`);
    }
  }

  private checkContainerCapabilities(engine: RuntimeEngine, spec: ContainerSpec): void {
    const need: Capability[] = [];
    if (spec.linux.security.privileged) need.push('privileged');
    if (spec.linux.security.namespaces.pid === 'node') need.push('hostPid');
    if (spec.linux.security.namespaces.ipc === 'node') need.push('hostIpc');
    if (spec.linux.security.namespaces.network === 'node') need.push('hostNetwork');
    if (spec.tty) need.push('tty');
    if (spec.mounts.length > 0) need.push('hostPathMounts');
    for (const c of need) {
      if (!engine.capabilities[c]) {
        throw errors.unsupported(
          engine.name,
          c,
          `engine "${engine.name}" cannot give this container ${describeCapability(c)}`,
        );
      }
    }
  }

  private async engineViews(): Promise<Map<string, EngineView>> {
    const views = new Map<string, EngineView>();
    for (const [name, engine] of this.opts.engines)
      views.set(name, { capabilities: engine.capabilities, healthy: true });
    return views;
  }

  private sandboxRef(record: SandboxRecord): SandboxRef {
    return {
      id: record.id,
      spec: record.spec,
      network: record.network,
      files: podFilePaths(record.runtimeDir),
      engineData: record.engineData,
      runtimeDir: record.runtimeDir,
    };
  }

  private containerRef(record: ContainerRecord, sandbox: SandboxRecord): ContainerRef {
    return {
      id: record.id,
      sandbox: this.sandboxRef(sandbox),
      spec: record.spec,
      image: record.image,
      logPath: record.logPath,
      engineData: record.engineData,
    };
  }

  /**
   * CNI ADD into the pod's namespace. An engine whose infra unit only joins
   * the namespace ({@link EngineCapabilities.sandboxBeforeNetwork}) gets it
   * started meanwhile: both take a few hundred milliseconds, neither needs
   * the other. Either failing fails the pod; what the other made is then in
   * the record, so the rollback (or recovery after a crash) undoes it.
   */
  private async attachNetwork(record: SandboxRecord, netnsPath: string): Promise<SandboxRecord> {
    const attach = unwrap(this.opts.network.attach(record.id, netnsPath, record.spec));
    const engine = record.engine === null ? null : this.engine(record.engine);
    if (engine === null || engine.capabilities.sandboxBeforeNetwork !== true) {
      const network = await attach;
      const next: SandboxRecord = { ...record, network, networkPhase: 'attached' };
      this.opts.store.putSandbox(next);
      return next;
    }
    const [net, created] = await Promise.allSettled([attach, unwrap(engine.createSandbox(this.sandboxRef(record)))]);
    let next = record;
    if (created.status === 'fulfilled') next = { ...next, engineCreated: true, engineData: created.value.engineData };
    if (net.status === 'fulfilled') next = { ...next, network: net.value, networkPhase: 'attached' };
    this.opts.store.putSandbox(next);
    if (net.status === 'rejected') throw net.reason;
    if (created.status === 'rejected') throw created.reason;
    return next;
  }

  private async createEngineSandbox(record: SandboxRecord): Promise<SandboxRecord> {
    const engine = this.engine(this.boundEngine(record));
    const created = await unwrap(engine.createSandbox(this.sandboxRef(record)));
    const next = { ...record, engineCreated: true, engineData: created.engineData };
    this.opts.store.putSandbox(next);
    try {
      await this.engineNetworkReady(next);
    } catch (e) {
      // A unit the engine could not wire is no unit: a late-bound pod's next CreateContainer starts afresh.
      const ref = this.sandboxRef(next);
      await unwrap(engine.stopSandbox(ref, 0)).catch(() => undefined);
      const removed = await engine.removeSandbox(ref);
      if (removed.isOk()) this.opts.store.putSandbox({ ...next, engineCreated: false });
      else
        this.log.warn({ podSandboxId: next.id, err: removed.error.message }, 'removing an unwired engine unit failed');
      throw e;
    }
    return next;
  }

  /**
   * Tells the engine its unit's network is complete ({@link RuntimeEngine.networkReady}).
   * Nothing is recorded: a crash before the pod is ready rolls the whole pod back.
   */
  private async engineNetworkReady(record: SandboxRecord): Promise<void> {
    if (record.engine === null || !record.engineCreated) return;
    const engine = this.engine(record.engine);
    if (engine.networkReady !== undefined) await unwrap(engine.networkReady(this.sandboxRef(record)));
  }

  private async liveSandboxState(record: SandboxRecord): Promise<'ready' | 'notready'> {
    if (record.phase !== 'ready' || !networkUp(record)) return 'notready';
    if (record.engine === null || !record.engineCreated) return 'ready';
    const st = await unwrap(this.engine(record.engine).sandboxStatus(this.sandboxRef(record))).catch(() => null);
    const alive = st !== null && st.alive;
    if (alive) this.deadSandboxes.delete(record.id);
    else this.deadSandboxes.add(record.id);
    return alive ? 'ready' : 'notready';
  }

  private async refreshContainer(
    record: ContainerRecord,
    sandbox: SandboxRecord,
    engine: RuntimeEngine,
  ): Promise<ContainerRecord> {
    if (record.phase !== 'running' && record.phase !== 'created') return record;
    const st = await unwrap(engine.containerStatus(this.containerRef(record, sandbox))).catch((e: unknown) => {
      if (isHcrError(e, 'NotFound')) return null;
      throw e;
    });
    const latest = this.opts.store.getContainer(record.id) ?? record;
    if (st === null) {
      // The engine lost the container (e.g. its VM died): report it exited, with the reason.
      const next: ContainerRecord = {
        ...latest,
        phase: 'exited',
        finishedAt: latest.finishedAt === 0n ? nowNanos() : latest.finishedAt,
        exitCode: latest.exitCode === 0 ? 255 : latest.exitCode,
        reason: latest.reason === '' ? 'Unknown' : latest.reason,
        message: latest.message === '' ? `engine ${engine.name} no longer has this container` : latest.message,
      };
      return this.recordRefresh(next);
    }
    if (st.state === 'exited' && latest.phase === 'running') {
      const next = applyStatus({ ...latest, phase: 'exited' }, st);
      return this.recordRefresh(next);
    }
    if (st.state === 'running' && latest.phase === 'created') {
      const next = applyStatus({ ...latest, phase: 'running' }, st);
      return this.recordRefresh(next);
    }
    // A created container has no pid yet: no record write (a durable fsync) for its first status call.
    if (st.pid !== (latest.engineData['pid'] ?? 0)) {
      const next = { ...latest, engineData: { ...latest.engineData, pid: st.pid } };
      return this.recordRefresh(next);
    }
    return latest;
  }

  /**
   * Records what a refresh learned. The refreshed view is the truth even when
   * the write is refused (a full disk): status reads keep answering, and the
   * next refresh records it again.
   */
  private recordRefresh(next: ContainerRecord): ContainerRecord {
    try {
      this.opts.store.putContainer(next);
    } catch (e) {
      this.log.warn({ containerId: next.id, err: String(e) }, 'could not record a refreshed container status');
    }
    return next;
  }

  private async stopContainerSteps(
    record: ContainerRecord,
    sandbox: SandboxRecord,
    engine: RuntimeEngine,
    timeoutSeconds: number,
  ): Promise<ContainerRecord> {
    const ref = this.containerRef(record, sandbox);
    await unwrap(engine.stopContainer(ref, Math.max(0, timeoutSeconds)));
    const st = await unwrap(engine.containerStatus(ref)).catch(() => null);
    const latest = this.opts.store.getContainer(record.id) ?? record;
    const next =
      latest.phase === 'exited'
        ? latest
        : applyStatus({ ...latest, phase: 'exited', finishedAt: nowNanos() }, st, 137, 'Error');
    this.opts.store.putContainer(next);
    return next;
  }

  private async removeContainerSteps(record: ContainerRecord, sandbox: SandboxRecord): Promise<void> {
    const d = decideContainer(record.phase, 'remove', record.id);
    if (d.action === 'refuse') throw d.error;
    if (d.action === 'noop') return;
    const engine = sandbox.engine === null ? null : (this.opts.engines.get(sandbox.engine) ?? null);
    let current = record;
    if (d.action === 'stopThenRun' && engine !== null) {
      current = await this.stopContainerSteps(record, sandbox, engine, 0);
    }
    this.opts.store.putContainer({ ...current, phase: 'removing' });
    if (engine !== null) await unwrap(engine.removeContainer(this.containerRef(current, sandbox)));
    this.opts.store.deleteContainer(record.id);
  }

  private async stopSandboxSteps(record: SandboxRecord): Promise<SandboxRecord> {
    const engine = record.engine === null ? null : (this.opts.engines.get(record.engine) ?? null);
    if (engine !== null) await this.stopRunningContainers(record, engine);
    faultPoint('stopPodSandbox:after-containers');
    const stopped = engine === null ? Promise.resolve() : this.stopEngineUnit(record, engine);
    let next: SandboxRecord;
    if (engine?.capabilities.sandboxBeforeNetwork === true) {
      // The unit joined the namespace without CNI's help and its containers are stopped
      // by now, so CNI DEL runs while it stops; both finish before any failure is reported.
      const [engineDone, network] = await Promise.allSettled([stopped, this.teardownNetwork(record)]);
      if (engineDone.status === 'rejected') throw engineDone.reason;
      faultPoint('stopPodSandbox:after-engine');
      if (network.status === 'rejected') throw network.reason;
      next = network.value;
    } else {
      await stopped;
      faultPoint('stopPodSandbox:after-engine');
      next = await this.teardownNetwork(record);
    }
    faultPoint('stopPodSandbox:after-cni');
    next = { ...next, phase: 'notready' };
    this.opts.store.putSandbox(next);
    return next;
  }

  /** Stops a pod's running containers, all at once and without grace (the kubelet has stopped each already). */
  private async stopRunningContainers(record: SandboxRecord, engine: RuntimeEngine): Promise<void> {
    const running = this.opts.store.listContainers(record.id).filter((c) => c.phase === 'running');
    await Promise.all(
      running.map((c) =>
        this.stopContainerSteps(c, record, engine, POD_STOP_GRACE_SECONDS).catch((e: unknown) =>
          this.log.warn({ containerId: c.id, err: String(e) }, 'stopping container failed; the engine stops the pod'),
        ),
      ),
    );
  }

  /** Stops a pod's engine unit; containers it took down with it are recorded exited. */
  private async stopEngineUnit(record: SandboxRecord, engine: RuntimeEngine): Promise<void> {
    if (record.engineCreated) await unwrap(engine.stopSandbox(this.sandboxRef(record), POD_STOP_GRACE_SECONDS));
    // Containers the engine stopped with the pod are exited now.
    for (const c of this.opts.store.listContainers(record.id)) {
      if (c.phase === 'running' || c.phase === 'created') {
        const st = await unwrap(engine.containerStatus(this.containerRef(c, record))).catch(() => null);
        this.opts.store.putContainer(
          applyStatus({ ...c, phase: 'exited', finishedAt: c.phase === 'created' ? 0n : nowNanos() }, st, 137, 'Error'),
        );
      }
    }
  }

  /** CNI DEL and netns removal, each exactly once (recorded in `networkPhase`). */
  private async teardownNetwork(record: SandboxRecord): Promise<SandboxRecord> {
    let next = record;
    if (next.networkPhase === 'attached' || next.networkPhase === 'netns-created') {
      // Recorded first: a DEL cut short must not leave the pod listed ready with half a network.
      next = { ...next, networkPhase: 'detaching' };
      this.opts.store.putSandbox(next);
    }
    if (next.networkPhase === 'detaching') {
      await unwrap(this.opts.network.detach(next.id, next.network.netnsPath, next.spec, next.network));
      next = { ...next, networkPhase: 'detached' };
      this.opts.store.putSandbox(next);
    }
    if (next.networkPhase === 'detached' && next.network.netnsPath !== null) {
      await unwrap(this.opts.network.removeNetns(next.network.netnsPath));
      next = { ...next, networkPhase: 'removed' };
      this.opts.store.putSandbox(next);
    }
    return next;
  }

  /** Removes everything of a sandbox; `rollback` also cleans a sandbox that never became ready. */
  private async teardownSandbox(record: SandboxRecord, rollback: boolean): Promise<void> {
    let current: SandboxRecord = { ...record, phase: 'removing' };
    this.opts.store.putSandbox(current);
    for (const c of this.opts.store.listContainers(record.id)) {
      await this.removeContainerSteps(c, current);
    }
    faultPoint('removePodSandbox:after-containers');
    const engine = current.engine === null ? null : (this.opts.engines.get(current.engine) ?? null);
    let engineFailure: unknown = null;
    if (engine !== null && (current.engineCreated || rollback)) {
      try {
        await unwrap(engine.stopSandbox(this.sandboxRef(current), 0)).catch(() => undefined);
        await unwrap(engine.removeSandbox(this.sandboxRef(current)));
        current = { ...current, engineCreated: false };
        this.opts.store.putSandbox(current);
      } catch (e) {
        // The network is HCR's own: release it even while the engine is unreachable, so a
        // RunPodSandbox refused during an engine outage holds no IP. The record stays
        // 'removing' and is finished when the engine is healthy again (or at recovery).
        engineFailure = e;
      }
    }
    faultPoint('removePodSandbox:after-engine');
    current = await this.teardownNetwork(current);
    faultPoint('removePodSandbox:after-netns');
    if (engineFailure !== null) throw engineFailure;
    rmSync(current.runtimeDir, { recursive: true, force: true });
    this.opts.store.deleteSandbox(current.id);
    this.deadSandboxes.delete(current.id);
  }

  /**
   * Finishes removals an engine failure cut short (records left 'removing',
   * which CRI no longer lists, so the kubelet will not retry them), once that
   * engine reports itself healthy again.
   */
  private async finishRemovals(engineName: string): Promise<void> {
    for (const s of this.opts.store.listSandboxes()) {
      const pending =
        s.phase === 'removing' || this.opts.store.listContainers(s.id).some((c) => c.phase === 'removing');
      if (!pending || (s.engine !== null && s.engine !== engineName)) continue;
      // The key lock keeps this away from a RunPodSandbox still rolling the same pod back.
      await this.lock
        .run(`sandbox-key:${s.key}`, () =>
          this.lock.run(`sandbox:${s.id}`, async () => {
            const current = this.opts.store.getSandbox(s.id);
            if (current === undefined) return;
            if (current.phase === 'removing') await this.teardownSandbox(current, true);
            else {
              for (const c of this.opts.store.listContainers(s.id))
                if (c.phase === 'removing') await this.removeContainerSteps(c, current);
            }
            this.log.info({ podSandboxId: s.id, engine: engineName }, 'finished a removal the engine had refused');
          }),
        )
        .catch((e: unknown) =>
          this.log.warn({ podSandboxId: s.id, err: String(e) }, 'finishing an interrupted removal failed; will retry'),
        );
    }
  }

  private onEngineEvent(engineName: string, event: EngineEvent): void {
    if (event.type === 'sandbox-died') {
      const record = this.opts.store.getSandbox(event.sandboxId);
      if (record?.engine === engineName) this.deadSandboxes.add(record.id);
      this.log.info({ engine: engineName, podSandboxId: event.sandboxId, msg: event.message }, 'pod sandbox died');
      return;
    }
    if (event.type === 'health-changed') {
      this.log.info({ engine: engineName, ready: event.health.ready, reason: event.health.reason }, 'engine health');
      if (event.health.ready) void this.finishRemovals(engineName);
      return;
    }
    void this.lock
      .run(`container:${event.containerId}`, async () => {
        const record = this.opts.store.getContainer(event.containerId);
        if (record === undefined) return;
        const d = decideContainer(record.phase, 'exited', record.id);
        if (d.action !== 'run') return;
        this.opts.store.putContainer({
          ...record,
          phase: 'exited',
          exitCode: event.exitCode,
          finishedAt: event.finishedAt,
          reason: event.reason,
        });
      })
      .catch((e: unknown) =>
        this.log.error({ containerId: event.containerId, err: String(e) }, 'applying exit event failed'),
      );
  }
}

const emptyNetwork: PodNetwork = { netnsPath: null, ips: [], interfaces: [], gateway: null, cniResult: null };

/**
 * False once HCR tore the pod's network down: a stop cut short after CNI DEL
 * leaves the record 'ready', and an engine without a pod unit of its own
 * (unikernel) would still call the pod alive.
 */
function networkUp(record: SandboxRecord): boolean {
  return (
    record.networkPhase === 'none' || record.networkPhase === 'netns-created' || record.networkPhase === 'attached'
  );
}

function sandboxKey(spec: SandboxSpec): string {
  const m = spec.metadata;
  return `${m.name}_${m.namespace}_${m.uid}_${m.attempt}`;
}

function newId(): string {
  return randomBytes(32).toString('hex');
}

function labelsMatch(labels: Readonly<Record<string, string>>, want: Readonly<Record<string, string>>): boolean {
  return Object.entries(want).every(([k, v]) => labels[k] === v);
}

function mergeRouting(deferred: RoutingDecision, bound: RoutingDecision): RoutingDecision {
  return {
    engine: bound.engine,
    source: bound.source,
    reason: `${bound.reason} (binding was deferred: ${deferred.reason})`,
  };
}

function applyStatus(
  record: ContainerRecord,
  st: EngineContainerStatus | null,
  fallbackExit = 0,
  fallbackReason = '',
  fallbackMessage = '',
): ContainerRecord {
  if (st === null) {
    return record.phase === 'exited'
      ? {
          ...record,
          exitCode: record.exitCode === 0 ? fallbackExit : record.exitCode,
          reason: record.reason === '' ? fallbackReason : record.reason,
          message: record.message === '' ? fallbackMessage : record.message,
          finishedAt: record.finishedAt === 0n ? nowNanos() : record.finishedAt,
        }
      : record;
  }
  return {
    ...record,
    startedAt: st.startedAt !== 0n ? st.startedAt : record.startedAt,
    finishedAt: record.phase === 'exited' ? (st.finishedAt !== 0n ? st.finishedAt : record.finishedAt) : 0n,
    exitCode: record.phase === 'exited' ? st.exitCode : 0,
    reason: record.phase === 'exited' ? st.reason || (st.exitCode === 0 ? 'Completed' : 'Error') : '',
    message: st.message,
    engineData: { ...record.engineData, pid: st.pid },
  };
}

async function unwrap<T>(r: ResultAsync<T, HcrError>): Promise<T> {
  const v = await r;
  if (v.isErr()) throw v.error;
  return v.value;
}

const emptySpec: SandboxSpec = newSandboxSpec({ name: '', uid: '', namespace: '', attempt: 0 });

/** A minimal ref for removing an engine object that no record owns (engines find objects by id). */
function orphanSandboxRef(id: string, runtimeDir: string): SandboxRef {
  return { id, spec: emptySpec, network: emptyNetwork, files: podFilePaths(runtimeDir), engineData: {}, runtimeDir };
}

function orphanContainerRef(id: string): ContainerRef {
  const spec = newContainerSpec('', '');

  const image: ImageInfo = {
    id: '',
    repoTags: [],
    repoDigests: [],
    size: 0,
    config: {
      entrypoint: [],
      cmd: [],
      env: [],
      workingDir: '',
      user: '',
      exposedPorts: [],
      labels: {},
      annotations: {},
    },
    kind: 'oci',
    pinned: false,
  };
  return { id, sandbox: orphanSandboxRef('', ''), spec, image, logPath: '', engineData: {} };
}

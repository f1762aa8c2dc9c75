import type { Duplex, Readable, Writable } from 'node:stream';
import type { ResultAsync } from 'neverthrow';
import type { HcrError } from './errors.js';
import type {
  ContainerSpec,
  ContainerState,
  ContainerStats,
  ImageInfo,
  LinuxResources,
  Nanos,
  PodNetwork,
  SandboxSpec,
  SandboxStats,
  TerminalSize,
} from './types.js';

/** The result type of every engine operation. */
export type EngineResult<T> = ResultAsync<T, HcrError>;

/**
 * What an engine can do. The router and the CRI layer consult this before any
 * call, so an engine never has to fake a feature: it declares it missing and
 * the request is refused with a message naming the capability.
 */
export interface EngineCapabilities {
  readonly hostNetwork: boolean;
  readonly hostPid: boolean;
  readonly hostIpc: boolean;
  readonly privileged: boolean;
  readonly exec: boolean;
  readonly execSync: boolean;
  readonly attach: boolean;
  /** Attach with stdin (unikernels have output only). */
  readonly attachStdin: boolean;
  readonly portForward: boolean;
  readonly tty: boolean;
  readonly hostPathMounts: boolean;
  readonly updateResources: boolean;
  readonly stats: boolean;
  readonly reopenLog: boolean;
  /** Image kinds this engine can run. */
  readonly imageKinds: readonly ImageInfo['kind'][];
  /**
   * createSandbox needs only `network.netnsPath`, not the CNI result (the
   * infra unit just joins the namespace; IPs and pod files are used later),
   * so core runs it alongside CNI ADD. Absent means false.
   */
  readonly sandboxBeforeNetwork?: boolean;
}

/** Names of the boolean capabilities, for messages and checks. */
export type Capability = {
  [K in keyof EngineCapabilities]-?: EngineCapabilities[K] extends boolean ? K : never;
}[keyof EngineCapabilities];

/** Health as reported by an engine's bounded probe. */
export interface EngineHealth {
  readonly ready: boolean;
  /** Short machine-readable reason when not ready (e.g. `DockerUnreachable`). */
  readonly reason: string;
  readonly message: string;
  /** Free-form facts worth showing to operators (versions, accelerator, …). */
  readonly info: Readonly<Record<string, string>>;
}

/** What core knows about a sandbox when it calls an engine. */
export interface SandboxRef {
  readonly id: string;
  readonly spec: SandboxSpec;
  /** The pod network, already set up by core (CNI done) before the engine is called. */
  readonly network: PodNetwork;
  /** Files core wrote for the pod, to be mounted into every container: `/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`. */
  readonly files: { readonly hosts: string; readonly resolvConf: string; readonly hostname: string };
  /** Opaque data the engine returned from earlier calls (persisted by core). */
  readonly engineData: Readonly<Record<string, unknown>>;
  /** Directory owned by this sandbox under the runtime dir (sockets, pidfiles). */
  readonly runtimeDir: string;
}

/** What core knows about a container when it calls an engine. */
export interface ContainerRef {
  readonly id: string;
  readonly sandbox: SandboxRef;
  readonly spec: ContainerSpec;
  readonly image: ImageInfo;
  /** Absolute log file path ('' when the container has none). */
  readonly logPath: string;
  readonly engineData: Readonly<Record<string, unknown>>;
}

/** Returned by createSandbox. */
export interface SandboxCreated {
  readonly engineData: Readonly<Record<string, unknown>>;
}

/** Returned by createContainer. */
export interface ContainerCreated {
  readonly engineData: Readonly<Record<string, unknown>>;
}

/** The engine's view of a container. */
export interface EngineContainerStatus {
  readonly state: ContainerState;
  readonly pid: number;
  readonly startedAt: Nanos;
  readonly finishedAt: Nanos;
  readonly exitCode: number;
  /** CRI reason: `Completed`, `Error`, `OOMKilled`, … ('' while running). */
  readonly reason: string;
  readonly message: string;
}

/** The engine's view of a sandbox. */
export interface EngineSandboxStatus {
  /** True while the pod's isolation unit (infra container, VM) is alive. */
  readonly alive: boolean;
  readonly info: Readonly<Record<string, unknown>>;
}

/** Standard streams for exec and attach. Absent streams are not requested. */
export interface StreamIO {
  readonly stdin: Readable | null;
  readonly stdout: Writable | null;
  readonly stderr: Writable | null;
  readonly tty: boolean;
  /** Registers a listener for terminal resizes (TTY only). */
  readonly onResize: (listener: (size: TerminalSize) => void) => void;
}

/** Result of ExecSync. */
export interface ExecSyncResult {
  readonly stdout: Buffer;
  readonly stderr: Buffer;
  readonly exitCode: number;
}

/** Something that happened inside an engine without core asking. */
export type EngineEvent =
  | {
      readonly type: 'container-exited';
      readonly containerId: string;
      readonly exitCode: number;
      readonly finishedAt: Nanos;
      readonly reason: string;
    }
  | { readonly type: 'sandbox-died'; readonly sandboxId: string; readonly message: string }
  | { readonly type: 'health-changed'; readonly health: EngineHealth };

/** What an engine found on start: objects it made earlier, by HCR id. */
export interface EngineInventory {
  readonly sandboxIds: readonly string[];
  readonly containerIds: readonly string[];
}

/**
 * The one interface every isolation engine implements.
 *
 * Core owns state, lifecycle rules, networking and images; an engine only turns
 * already-validated, already-legal requests into its own objects. Every call is
 * idempotent where CRI requires it (stop/remove of an absent object succeed),
 * since core may repeat a call after a crash.
 */
export interface RuntimeEngine {
  /** Instance name from config (e.g. `docker`, `hyper`). */
  readonly name: string;
  /** Registration kind (e.g. `docker`). */
  readonly kind: string;
  readonly capabilities: EngineCapabilities;

  /** Bounded health probe; never hangs longer than the engine's configured timeout. */
  health(): EngineResult<EngineHealth>;
  /** Ids of every sandbox and container this engine holds (for reconciliation after restart). */
  inventory(): EngineResult<EngineInventory>;

  /**
   * Creates and starts the pod's isolation unit (infra container, VM) inside
   * `sandbox.network.netnsPath` (or the host network when it is null).
   */
  createSandbox(sandbox: SandboxRef): EngineResult<SandboxCreated>;
  /**
   * Hands the engine the pod's finished network. Core calls it once per
   * created unit, after both CNI ADD and createSandbox succeeded and before
   * the pod is recorded ready (or, for a pod bound to its engine late, before
   * its first container is created): `sandbox.network` then holds the CNI
   * result and the pod files (`sandbox.files`) are written. The engine may
   * assume its unit is up and that no container call for the pod came first.
   * A failure fails RunPodSandbox exactly like a failed createSandbox: core
   * removes the unit and the network. With
   * {@link EngineCapabilities.sandboxBeforeNetwork} this is where an engine
   * wires its unit to the CNI interface; without the method, createSandbox
   * must do that itself.
   */
  networkReady?(sandbox: SandboxRef): EngineResult<void>;
  stopSandbox(sandbox: SandboxRef, gracePeriodSeconds: number): EngineResult<void>;
  removeSandbox(sandbox: SandboxRef): EngineResult<void>;
  sandboxStatus(sandbox: SandboxRef): EngineResult<EngineSandboxStatus>;

  createContainer(container: ContainerRef): EngineResult<ContainerCreated>;
  startContainer(container: ContainerRef): EngineResult<void>;
  /** SIGTERM, wait `timeoutSeconds`, then SIGKILL. */
  stopContainer(container: ContainerRef, timeoutSeconds: number): EngineResult<void>;
  removeContainer(container: ContainerRef): EngineResult<void>;
  containerStatus(container: ContainerRef): EngineResult<EngineContainerStatus>;

  execSync(container: ContainerRef, cmd: readonly string[], timeoutSeconds: number): EngineResult<ExecSyncResult>;
  /** Runs `cmd` with the given streams; resolves with the exit code when it ends. */
  exec(container: ContainerRef, cmd: readonly string[], io: StreamIO): EngineResult<{ readonly exitCode: number }>;
  /** Attaches to the container's main process; resolves when the streams end. */
  attach(container: ContainerRef, io: StreamIO): EngineResult<void>;
  /** Connects `stream` to TCP `port` on the pod's loopback/network. */
  portForward(sandbox: SandboxRef, port: number, stream: Duplex): EngineResult<void>;

  containerStats(container: ContainerRef): EngineResult<ContainerStats>;
  sandboxStats(sandbox: SandboxRef, containers: readonly ContainerRef[]): EngineResult<SandboxStats>;
  updateContainerResources(container: ContainerRef, resources: LinuxResources): EngineResult<void>;
  reopenContainerLog(container: ContainerRef): EngineResult<void>;

  /** Subscribes to engine events; returns an unsubscribe function. */
  subscribe(listener: (event: EngineEvent) => void): () => void;
  /** Releases connections and timers; never stops pods. */
  close(): Promise<void>;
}

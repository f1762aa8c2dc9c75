import type { ContainerPhase } from '../lifecycle/container.js';
import type { SandboxPhase } from '../lifecycle/sandbox.js';
import type { RoutingDecision } from '../router/router.js';
import type { ContainerSpec, ImageInfo, Nanos, PodNetwork, SandboxSpec } from '../types.js';

/**
 * Progress of a pod's network, recorded so CNI ADD/DEL and netns removal happen
 * exactly once. `detaching`: CNI DEL has begun, so the network may be partly
 * gone (the pod is not ready) and DEL must run again if it was cut short.
 */
export type NetworkPhase = 'none' | 'netns-created' | 'attached' | 'detaching' | 'detached' | 'removed';

/** Everything HCR remembers about a pod sandbox. */
export interface SandboxRecord {
  readonly id: string;
  /** Unique key from metadata: `name_namespace_uid_attempt`. */
  readonly key: string;
  readonly spec: SandboxSpec;
  readonly phase: SandboxPhase;
  readonly createdAt: Nanos;
  /** Engine bound to the pod; null while binding is deferred to the first container's image. */
  readonly engine: string | null;
  readonly routing: RoutingDecision;
  readonly network: PodNetwork;
  readonly networkPhase: NetworkPhase;
  /** True once the engine's createSandbox succeeded. */
  readonly engineCreated: boolean;
  readonly engineData: Readonly<Record<string, unknown>>;
  readonly runtimeDir: string;
}

/** Everything HCR remembers about a container. */
export interface ContainerRecord {
  readonly id: string;
  readonly sandboxId: string;
  /** Unique key: `sandboxId/name/attempt`. */
  readonly key: string;
  readonly spec: ContainerSpec;
  /** The resolved image (id `sha256:…`, tags, config) and the reference the user gave. */
  readonly image: ImageInfo;
  readonly imageRef: string;
  readonly phase: ContainerPhase;
  readonly createdAt: Nanos;
  readonly startedAt: Nanos;
  readonly finishedAt: Nanos;
  readonly exitCode: number;
  readonly reason: string;
  readonly message: string;
  /** Absolute log path ('' when none). */
  readonly logPath: string;
  readonly engineCreated: boolean;
  readonly engineData: Readonly<Record<string, unknown>>;
}

/**
 * Durable storage of sandbox and container records. Every write is on disk
 * when the call returns, so a crash right after never loses an acknowledged
 * change.
 */
export interface StateStore {
  putSandbox(record: SandboxRecord): void;
  getSandbox(id: string): SandboxRecord | undefined;
  listSandboxes(): readonly SandboxRecord[];
  deleteSandbox(id: string): void;
  putContainer(record: ContainerRecord): void;
  getContainer(id: string): ContainerRecord | undefined;
  listContainers(sandboxId?: string): readonly ContainerRecord[];
  deleteContainer(id: string): void;
  close(): void;
}

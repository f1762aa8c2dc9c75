import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { criClient, type CriClient } from '../../packages/cri/src/client.js';
import { loadCriProto } from '../../packages/cri/src/server.js';
import { since } from './stats.js';

/** Deadline of lifecycle calls: generous, since a VM boot under TCG on a loaded host takes seconds. */
const CALL_DEADLINE_MS = 180_000;

/** What a pod of one benchmark target runs: the image and its command. */
export interface Workload {
  readonly image: string;
  /** CRI `command` (replaces ENTRYPOINT). */
  readonly command: readonly string[];
  /** CRI `args` (replaces CMD). */
  readonly args: readonly string[];
}

/**
 * One CRI endpoint plus how its pods are made: HCR with a runtime handler
 * per engine, or containerd. Every target is driven by the very same client
 * code, so a difference in the figures is a difference in the runtimes.
 */
export interface Target {
  /** Short id used in results (`hcr-docker`, `containerd`, …). */
  readonly id: string;
  readonly socket: string;
  readonly runtimeHandler: string;
  readonly workload: Workload;
  /** Where pod log directories go (kubelet passes one per pod). */
  readonly logRoot: string;
}

/** Durations of the CRI calls of one pod start (ms). */
export interface StartSteps {
  readonly runp: number;
  readonly create: number;
  readonly start: number;
  readonly total: number;
}

/** Durations of the CRI calls of one pod teardown (ms). */
export interface TeardownSteps {
  readonly stopp: number;
  readonly rmp: number;
  readonly total: number;
}

/** A running benchmark pod. */
export interface BenchPod {
  readonly podId: string;
  readonly containerId: string;
  readonly config: PodConfig;
}

/** The wire form of PodSandboxConfig the bench sends (a kubelet-like subset). */
export interface PodConfig {
  readonly metadata: { name: string; uid: string; namespace: string; attempt: number };
  readonly hostname: string;
  readonly logDirectory: string;
  readonly labels: Record<string, string>;
  readonly annotations: Record<string, string>;
  readonly linux: object;
}

/** What the bench needs of one gRPC method definition. */
interface MethodInfo {
  readonly path: string;
  readonly requestSerialize: (value: object) => Buffer;
}
let service: Readonly<Record<string, MethodInfo | undefined>> | null = null;
/** The RuntimeService method table (paths and request encoders), loaded once. */
function runtimeService(): Readonly<Record<string, MethodInfo | undefined>> {
  service ??= loadCriProto().runtime.v1.RuntimeService.service as unknown as Record<string, MethodInfo>;
  return service;
}

/** A CRI client with typed wrappers for the calls the bench makes. */
export class CriDriver {
  readonly client: CriClient;

  constructor(readonly target: Target) {
    this.client = criClient(target.socket);
  }

  /** Calls a RuntimeService method. */
  rt<T = Record<string, unknown>>(method: string, req: object, deadlineMs = CALL_DEADLINE_MS): Promise<T> {
    return this.client.call<T>('runtime', method, req, deadlineMs);
  }

  /**
   * Calls a RuntimeService method and returns the size of the encoded reply
   * without decoding it: a list of a thousand containers costs this client
   * milliseconds to decode, which is the caller's cost, not the runtime's.
   */
  rtRaw(method: string, req: object, deadlineMs = CALL_DEADLINE_MS): Promise<number> {
    const def = runtimeService()[method];
    if (def === undefined) return Promise.reject(new Error(`no CRI method ${method}`));
    return new Promise((resolve, reject) =>
      this.client.runtime.makeUnaryRequest(
        def.path,
        def.requestSerialize,
        (buf: Buffer) => buf,
        req,
        { deadline: Date.now() + deadlineMs },
        (e, reply) => (e ? reject(e) : resolve(reply?.length ?? 0)),
      ),
    );
  }

  /** Pulls the target's image (and any other) through the endpoint's own image service. */
  async pull(image: string): Promise<void> {
    await this.client.call('images', 'PullImage', { image: { image } }, 600_000);
  }

  /** A kubelet-like pod config: private log dir, pod network, shared IPC, per-container PID namespace. */
  podConfig(prefix: string): PodConfig {
    const suffix = randomBytes(4).toString('hex');
    const name = `${prefix}-${suffix}`;
    const logDirectory = join(this.target.logRoot, name);
    mkdirSync(logDirectory, { recursive: true });
    return {
      metadata: { name, uid: randomBytes(8).toString('hex'), namespace: 'hcr-bench', attempt: 0 },
      hostname: name,
      logDirectory,
      labels: { app: 'hcr-bench', 'hcr-bench/target': this.target.id },
      annotations: {},
      linux: {
        cgroupParent: '',
        securityContext: { namespaceOptions: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' } },
      },
    };
  }

  /** A container config running the target's workload. */
  containerConfig(name: string): object {
    const w = this.target.workload;
    return {
      metadata: { name, attempt: 0 },
      image: { image: w.image },
      command: [...w.command],
      args: [...w.args],
      logPath: `${name}.log`,
      labels: { app: 'hcr-bench' },
    };
  }

  /** RunPodSandbox → CreateContainer → StartContainer, each timed. */
  async startPod(prefix: string): Promise<BenchPod & { steps: StartSteps }> {
    const config = this.podConfig(prefix);
    const t0 = performance.now();
    const { podSandboxId } = await this.rt<{ podSandboxId: string }>('RunPodSandbox', {
      config,
      runtimeHandler: this.target.runtimeHandler,
    });
    const runp = since(t0);
    let containerId = '';
    try {
      const t1 = performance.now();
      containerId = (
        await this.rt<{ containerId: string }>('CreateContainer', {
          podSandboxId,
          config: this.containerConfig('main'),
          sandboxConfig: config,
        })
      ).containerId;
      const create = since(t1);
      const t2 = performance.now();
      await this.rt('StartContainer', { containerId });
      const start = since(t2);
      return { podId: podSandboxId, containerId, config, steps: { runp, create, start, total: since(t0) } };
    } catch (e) {
      // A half-made pod must not outlive the iteration that made it.
      await this.teardown(podSandboxId).catch(() => undefined);
      throw e;
    }
  }

  /** StopPodSandbox → RemovePodSandbox, each timed. */
  async teardown(podSandboxId: string): Promise<TeardownSteps> {
    const t0 = performance.now();
    await this.rt('StopPodSandbox', { podSandboxId });
    const stopp = since(t0);
    const t1 = performance.now();
    await this.rt('RemovePodSandbox', { podSandboxId });
    return { stopp, rmp: since(t1), total: since(t0) };
  }

  /** CRI state of a container (`CONTAINER_RUNNING`, …). */
  async containerState(containerId: string): Promise<string> {
    const r = await this.rt<{ status: { state: string } }>('ContainerStatus', { containerId }, 30_000);
    return r.status.state;
  }

  /** Ids of the pods this bench made on the endpoint (by label), for cleanup. */
  async benchPods(): Promise<string[]> {
    const r = await this.rt<{ items: { id: string }[] }>(
      'ListPodSandbox',
      { filter: { labelSelector: { 'hcr-bench/target': this.target.id } } },
      60_000,
    );
    return r.items.map((p) => p.id);
  }

  /** Stops and removes every pod of this target (cleanup after a failure). */
  async removeAllBenchPods(): Promise<number> {
    const ids = await this.benchPods();
    for (const id of ids) await this.teardown(id).catch(() => undefined);
    return ids.length;
  }

  close(): void {
    this.client.close();
  }
}

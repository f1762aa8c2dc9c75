import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { FAULT_POINTS } from '@hcr/core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { containerConfig, cri, podConfig, rejectsWith } from '../helpers/cri.js';
import { BUSYBOX, type TestShim } from '../helpers/shim.js';
import {
  allLeaks,
  dockerState,
  startPrivateDockerd,
  startReliabilityShim,
  stateRecords,
  type PrivateDockerd,
} from './harness.js';

type FaultPoint = (typeof FAULT_POINTS)[number];
type Cri = ReturnType<typeof cri>;

interface Pod {
  readonly id: string;
  readonly config: ReturnType<typeof podConfig>;
}

/** What a scenario set up before the operation that dies, and what that operation was about. */
interface Setup {
  readonly config: ReturnType<typeof podConfig>;
  readonly pod: Pod | null;
  readonly containerId: string | null;
  readonly containerConfig: ReturnType<typeof containerConfig>;
}

/** One fault point: reach it, then check the restarted shim converged to a truthful state. */
interface Scenario {
  /** Calls made with the fault armed but before the operation that hits it. */
  prepare(c: Cri, s: Setup): Promise<Setup>;
  /** The CRI call that reaches the fault point (the shim dies during it). */
  trigger(c: Cri, s: Setup): Promise<unknown>;
  /** After the restart: the expected outcome, then the CRI call(s) that converge it. Returns pods to remove. */
  converge(c: Cri, s: Setup): Promise<string[]>;
}

// Exits on SIGTERM at once, so pod stops do not wait out their grace period.
const sleepForever = { command: ['sh', '-c', 'trap "exit 0" TERM; sleep 3600 & wait'] };

const withPod = async (c: Cri, s: Setup): Promise<Setup> => ({
  ...s,
  pod: { id: await c.runp(s.config), config: s.config },
});
const withCreated = async (c: Cri, s: Setup): Promise<Setup> => {
  const p = await withPod(c, s);
  return { ...p, containerId: await c.create(p.pod!.id, s.containerConfig, s.config) };
};
const withRunning = async (c: Cri, s: Setup): Promise<Setup> => {
  const p = await withCreated(c, s);
  await c.start(p.containerId!);
  return p;
};

const podsNamed = async (c: Cri, s: Setup) =>
  (
    await c.rt<{ items: { id: string; state: string }[] }>('ListPodSandbox', {
      filter: { labelSelector: s.config.labels },
    })
  ).items;
const containersOf = async (c: Cri, podId: string) =>
  (
    await c.rt<{ containers: { id: string; state: string }[] }>('ListContainers', {
      filter: { podSandboxId: podId },
    })
  ).containers;

/** RunPodSandbox never acknowledged: the pod must be gone, and the same request must then succeed. */
const runPodSandboxScenario: Scenario = {
  prepare: async (_c, s) => s,
  trigger: (c, s) => c.runp(s.config),
  async converge(c, s) {
    expect(await podsNamed(c, s)).toEqual([]);
    const id = await c.runp(s.config);
    expect((await c.podStatus(id)).status.state).toBe('SANDBOX_READY');
    expect(dockerState('sandbox', id)).toBe('running');
    return [id];
  },
};

/** RemovePodSandbox interrupted: the pod must be gone (recovery finished the removal); removing again is OK. */
const removePodSandboxScenario: Scenario = {
  prepare: withRunning,
  trigger: (c, s) => c.rmp(s.pod!.id),
  async converge(c, s) {
    const id = s.pod!.id;
    await rejectsWith(c.podStatus(id), status.NOT_FOUND);
    await rejectsWith(c.status(s.containerId!), status.NOT_FOUND);
    expect(await podsNamed(c, s)).toEqual([]);
    expect(dockerState('sandbox', id)).toBe('absent');
    expect(dockerState('container', s.containerId!)).toBe('absent');
    await c.rmp(id);
    return [];
  },
};

/** StopPodSandbox interrupted: whatever the pod reports must be true, and stopping again must finish the job. */
const stopPodSandboxScenario = (expectPod: 'SANDBOX_READY' | 'SANDBOX_NOTREADY'): Scenario => ({
  prepare: withRunning,
  trigger: (c, s) => c.stopp(s.pod!.id),
  async converge(c, s) {
    const id = s.pod!.id;
    expect((await c.podStatus(id)).status.state).toBe(expectPod);
    // Containers are stopped before the fault in every stop scenario.
    expect((await c.status(s.containerId!)).state).toBe('CONTAINER_EXITED');
    await c.stopp(id);
    expect((await c.podStatus(id)).status.state).toBe('SANDBOX_NOTREADY');
    expect((await podsNamed(c, s)).map((p) => [p.id, p.state])).toEqual([[id, 'SANDBOX_NOTREADY']]);
    expect(dockerState('sandbox', id)).not.toBe('running');
    return [id];
  },
});

const scenarios: Record<FaultPoint, Scenario> = {
  'runPodSandbox:after-record': runPodSandboxScenario,
  'runPodSandbox:after-netns': runPodSandboxScenario,
  'runPodSandbox:after-cni': runPodSandboxScenario,
  'runPodSandbox:after-engine': runPodSandboxScenario,
  'createContainer:after-record': {
    prepare: withPod,
    trigger: (c, s) => c.create(s.pod!.id, s.containerConfig, s.config),
    async converge(c, s) {
      // Never acknowledged and never made: gone, and the name is free again.
      expect(await containersOf(c, s.pod!.id)).toEqual([]);
      const id = await c.create(s.pod!.id, s.containerConfig, s.config);
      await c.start(id);
      expect((await c.status(id)).state).toBe('CONTAINER_RUNNING');
      return [s.pod!.id];
    },
  },
  'createContainer:after-engine': {
    prepare: withPod,
    trigger: (c, s) => c.create(s.pod!.id, s.containerConfig, s.config),
    async converge(c, s) {
      // Made and recorded before the crash: present as created, and it starts.
      const [only, ...rest] = await containersOf(c, s.pod!.id);
      expect(rest).toEqual([]);
      expect(only?.state).toBe('CONTAINER_CREATED');
      expect(dockerState('container', only!.id)).toBe('created');
      await c.start(only!.id);
      expect((await c.status(only!.id)).state).toBe('CONTAINER_RUNNING');
      return [s.pod!.id];
    },
  },
  'startContainer:after-engine': {
    prepare: withCreated,
    trigger: (c, s) => c.start(s.containerId!),
    async converge(c, s) {
      // The engine started it: the truth is "running", whatever the record said.
      expect((await c.status(s.containerId!)).state).toBe('CONTAINER_RUNNING');
      expect((await containersOf(c, s.pod!.id)).map((x) => x.state)).toEqual(['CONTAINER_RUNNING']);
      await c.stop(s.containerId!);
      expect((await c.status(s.containerId!)).state).toBe('CONTAINER_EXITED');
      return [s.pod!.id];
    },
  },
  'stopPodSandbox:after-containers': stopPodSandboxScenario('SANDBOX_READY'),
  'stopPodSandbox:after-engine': stopPodSandboxScenario('SANDBOX_NOTREADY'),
  'stopPodSandbox:after-cni': stopPodSandboxScenario('SANDBOX_NOTREADY'),
  'removePodSandbox:after-containers': removePodSandboxScenario,
  'removePodSandbox:after-engine': removePodSandboxScenario,
  'removePodSandbox:after-netns': removePodSandboxScenario,
};

/**
 * Checks that everything the restarted shim reports is true: List and Status
 * agree, a ready pod has a running infra container and its netns, every
 * container's state is dockerd's, and no record is left half-made.
 */
async function assertTruthful(shim: TestShim, c: Cri): Promise<void> {
  const records = stateRecords(shim);
  expect([...records.sandboxes, ...records.containers].filter((r) => /:(creating|removing)$/.test(r))).toEqual([]);
  const pods = (await c.rt<{ items: { id: string; state: string }[] }>('ListPodSandbox', {})).items;
  for (const p of pods) {
    const st = (await c.podStatus(p.id)).status;
    expect(st.state, `pod ${p.id}: ListPodSandbox and PodSandboxStatus disagree`).toBe(p.state);
    if (st.state === 'SANDBOX_READY') {
      expect(dockerState('sandbox', p.id)).toBe('running');
      expect(existsSync(join(shim.dir, 'run', 'netns', p.id))).toBe(true);
      expect(st.network.ip).toMatch(/^10\.231\./);
    }
  }
  const containers = (await c.rt<{ containers: { id: string; state: string }[] }>('ListContainers', {})).containers;
  const dockerOf: Record<string, string[]> = {
    CONTAINER_CREATED: ['created'],
    CONTAINER_RUNNING: ['running'],
    CONTAINER_EXITED: ['exited', 'absent'],
  };
  for (const x of containers) {
    const st = await c.status(x.id);
    expect(st.state, `container ${x.id}: ListContainers and ContainerStatus disagree`).toBe(x.state);
    expect(dockerOf[st.state] ?? [], `container ${x.id} is ${st.state}`).toContain(dockerState('container', x.id));
  }
}

// SIGKILL between any two steps of the lifecycle, at every fault point core declares,
// on the docker engine over the real socket, dockerd and CNI.
describe('crash recovery at every fault point (docker engine)', () => {
  let dockerd: PrivateDockerd;
  let shim: TestShim;
  let c: Cri;
  let logDir: string;
  const cleanup = new Set<string>();

  beforeAll(async () => {
    dockerd = await startPrivateDockerd();
    shim = await startReliabilityShim(1);
    c = cri(shim);
    logDir = mkdtempSync(join(tmpdir(), 'hcr-crash-logs-'));
    await c.pull(BUSYBOX);
  }, 300_000);

  afterEach(async () => {
    for (const id of cleanup) await c.rmp(id);
    cleanup.clear();
    expect(allLeaks(shim)).toEqual([]);
  }, 120_000);

  afterAll(async () => {
    await shim?.stop();
    await dockerd?.stop();
    if (logDir) rmSync(logDir, { recursive: true, force: true });
  }, 120_000);

  it('has a scenario for every fault point', () => {
    expect(Object.keys(scenarios).sort()).toEqual([...FAULT_POINTS].sort());
  });

  it.each(FAULT_POINTS)(
    'SIGKILL at %s converges',
    async (point) => {
      const scenario = scenarios[point];
      await shim.kill();
      await shim.restart({ HCR_FAULT: point });
      const config = podConfig({ logDirectory: logDir });
      let setup: Setup = {
        config,
        pod: null,
        containerId: null,
        containerConfig: containerConfig(BUSYBOX, { ...sleepForever, logPath: 'c.log' }),
      };
      setup = await scenario.prepare(c, setup);
      if (setup.pod !== null) cleanup.add(setup.pod.id);
      const outcome = await scenario.trigger(c, setup).then(
        () => 'answered',
        (e: { code?: number }) => e.code,
      );
      // The call dies with the connection; it is never answered.
      expect(outcome).toBe(status.UNAVAILABLE);
      expect(await shim.waitExit(30_000)).toBeNull();

      await shim.restart();
      await assertTruthful(shim, c);
      // Recovery logs a failed cleanup at level error (50); it must not need to.
      expect(shim.logs()).not.toMatch(/"level":50/);
      for (const id of await scenario.converge(c, setup)) cleanup.add(id);
      await assertTruthful(shim, c);
    },
    180_000,
  );
});

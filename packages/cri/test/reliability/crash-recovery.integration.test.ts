import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { FAULT_POINTS } from '@hcr/core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { containerConfig, cri, podConfig, rejectsWith } from '../helpers/cri.js';
import { BUSYBOX, REGISTRY, type TestShim } from '../helpers/shim.js';
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

/** How the walk drives one engine kind and what the host shows of its objects. */
interface EngineUnderTest {
  readonly kind: 'docker' | 'hyper' | 'unikernel';
  /** RuntimeClass handler that pins pods to the engine ('' = the default engine). */
  readonly handler: string;
  readonly image: string;
  readonly container: Record<string, unknown>;
  /** Whether the pod's unit is running on the host; null when the engine has no host-visible unit. */
  podRunning(id: string): boolean | null;
  /** Whether the container runs on the host, and the engine's own word for its state when it has one. */
  containerRunning(id: string): { running: boolean; state: string | null } | null;
}

/** True when some process's command line names `needle` (VM engines name their QEMU after the pod or container). */
function processNaming(needle: string): boolean {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(needle)) return true;
    } catch {
      // gone while we looked
    }
  }
  return false;
}

const UNIKERNEL_HTTP = `${REGISTRY}/hcr-test/unikernel-http:latest`;

const ENGINES: Record<EngineUnderTest['kind'], EngineUnderTest> = {
  docker: {
    kind: 'docker',
    handler: '',
    image: BUSYBOX,
    // Exits on SIGTERM at once, so pod stops do not wait out their grace period.
    container: { command: ['sh', '-c', 'trap "exit 0" TERM; sleep 3600 & wait'] },
    podRunning: (id) => dockerState('sandbox', id) === 'running',
    containerRunning: (id) => {
      const state = dockerState('container', id);
      return { running: state === 'running', state };
    },
  },
  hyper: {
    kind: 'hyper',
    handler: 'hyper',
    image: BUSYBOX,
    container: { command: ['sh', '-c', 'trap "exit 0" TERM; sleep 3600 & wait'] },
    podRunning: (id) => processNaming(id.slice(0, 12)),
    // Containers run inside the guest: the host cannot see them.
    containerRunning: () => null,
  },
  unikernel: {
    kind: 'unikernel',
    handler: 'unikernel',
    image: UNIKERNEL_HTTP,
    container: {},
    // A unikernel pod has no unit of its own; each container is a VM named after it.
    podRunning: () => null,
    containerRunning: (id) => ({ running: processNaming(`hcr-${id.slice(0, 12)}`), state: null }),
  },
};

/** Engines walked: all three (CI too); `HCR_CRASH_ENGINES=docker` (say) narrows the walk while debugging. */
const WALKED = (process.env['HCR_CRASH_ENGINES'] ?? 'docker,hyper,unikernel').split(',').map((k) => {
  const e = ENGINES[k.trim() as EngineUnderTest['kind']];
  if (e === undefined) throw new Error(`HCR_CRASH_ENGINES: unknown engine "${k}" (docker, hyper, unikernel)`);
  return e;
});

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

/** The CRI client and the engine a scenario runs on. */
interface Ctx {
  readonly c: Cri;
  readonly e: EngineUnderTest;
}

/** One fault point: reach it, then check the restarted shim converged to a truthful state. */
interface Scenario {
  /** Calls made with the fault armed but before the operation that hits it. */
  prepare(x: Ctx, s: Setup): Promise<Setup>;
  /** The CRI call that reaches the fault point (the shim dies during it). */
  trigger(x: Ctx, s: Setup): Promise<unknown>;
  /** After the restart: the expected outcome, then the CRI call(s) that converge it. Returns pods to remove. */
  converge(x: Ctx, s: Setup): Promise<string[]>;
}

const withPod = async ({ c, e }: Ctx, s: Setup): Promise<Setup> => ({
  ...s,
  pod: { id: await c.runp(s.config, e.handler), config: s.config },
});
const withCreated = async (x: Ctx, s: Setup): Promise<Setup> => {
  const p = await withPod(x, s);
  return { ...p, containerId: await x.c.create(p.pod!.id, s.containerConfig, s.config) };
};
const withRunning = async (x: Ctx, s: Setup): Promise<Setup> => {
  const p = await withCreated(x, s);
  await x.c.start(p.containerId!);
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
  prepare: async (_x, s) => s,
  trigger: ({ c, e }, s) => c.runp(s.config, e.handler),
  async converge({ c, e }, s) {
    expect(await podsNamed(c, s)).toEqual([]);
    const id = await c.runp(s.config, e.handler);
    expect((await c.podStatus(id)).status.state).toBe('SANDBOX_READY');
    expect(e.podRunning(id)).not.toBe(false);
    return [id];
  },
};

/** RemovePodSandbox interrupted: the pod must be gone (recovery finished the removal); removing again is OK. */
const removePodSandboxScenario: Scenario = {
  prepare: withRunning,
  trigger: ({ c }, s) => c.rmp(s.pod!.id),
  async converge({ c, e }, s) {
    const id = s.pod!.id;
    await rejectsWith(c.podStatus(id), status.NOT_FOUND);
    await rejectsWith(c.status(s.containerId!), status.NOT_FOUND);
    expect(await podsNamed(c, s)).toEqual([]);
    expect(e.podRunning(id)).not.toBe(true);
    expect(e.containerRunning(s.containerId!)?.running ?? false).toBe(false);
    if (e.kind === 'docker') expect(dockerState('container', s.containerId!)).toBe('absent');
    await c.rmp(id);
    return [];
  },
};

/**
 * StopPodSandbox interrupted: whatever the pod reports must be true, and
 * stopping again must finish the job. `expectPod` is what a pod reports right
 * after the restart; `evenWithoutUnit` says whether that holds for engines
 * with no pod unit of their own (unikernel), whose pod is ready until its
 * network is gone.
 */
const stopPodSandboxScenario = (
  expectPod: 'SANDBOX_READY' | 'SANDBOX_NOTREADY',
  evenWithoutUnit: boolean,
): Scenario => ({
  prepare: withRunning,
  trigger: ({ c }, s) => c.stopp(s.pod!.id),
  async converge({ c, e }, s) {
    const id = s.pod!.id;
    if (evenWithoutUnit || e.podRunning(id) !== null) expect((await c.podStatus(id)).status.state).toBe(expectPod);
    // Containers are stopped before the fault in every stop scenario.
    expect((await c.status(s.containerId!)).state).toBe('CONTAINER_EXITED');
    await c.stopp(id);
    expect((await c.podStatus(id)).status.state).toBe('SANDBOX_NOTREADY');
    expect((await podsNamed(c, s)).map((p) => [p.id, p.state])).toEqual([[id, 'SANDBOX_NOTREADY']]);
    expect(e.podRunning(id)).not.toBe(true);
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
    trigger: ({ c }, s) => c.create(s.pod!.id, s.containerConfig, s.config),
    async converge({ c }, s) {
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
    trigger: ({ c }, s) => c.create(s.pod!.id, s.containerConfig, s.config),
    async converge({ c, e }, s) {
      // Made and recorded before the crash: present as created, and it starts.
      const [only, ...rest] = await containersOf(c, s.pod!.id);
      expect(rest).toEqual([]);
      expect(only?.state).toBe('CONTAINER_CREATED');
      expect(e.containerRunning(only!.id)?.state ?? 'created').toBe('created');
      await c.start(only!.id);
      expect((await c.status(only!.id)).state).toBe('CONTAINER_RUNNING');
      return [s.pod!.id];
    },
  },
  'startContainer:after-engine': {
    prepare: withCreated,
    trigger: ({ c }, s) => c.start(s.containerId!),
    async converge({ c }, s) {
      // The engine started it: the truth is "running", whatever the record said.
      expect((await c.status(s.containerId!)).state).toBe('CONTAINER_RUNNING');
      expect((await containersOf(c, s.pod!.id)).map((x) => x.state)).toEqual(['CONTAINER_RUNNING']);
      await c.stop(s.containerId!);
      expect((await c.status(s.containerId!)).state).toBe('CONTAINER_EXITED');
      return [s.pod!.id];
    },
  },
  'stopPodSandbox:after-containers': stopPodSandboxScenario('SANDBOX_READY', true),
  'stopPodSandbox:after-engine': stopPodSandboxScenario('SANDBOX_NOTREADY', false),
  'stopPodSandbox:after-cni': stopPodSandboxScenario('SANDBOX_NOTREADY', true),
  'removePodSandbox:after-containers': removePodSandboxScenario,
  'removePodSandbox:after-engine': removePodSandboxScenario,
  'removePodSandbox:after-netns': removePodSandboxScenario,
};

/**
 * Checks that everything the restarted shim reports is true: List and Status
 * agree, a ready pod has its netns and (where the host can see it) a running
 * unit, every container's state is what the host shows, and no record is
 * left half-made.
 */
async function assertTruthful(shim: TestShim, { c, e }: Ctx): Promise<void> {
  const records = stateRecords(shim);
  expect([...records.sandboxes, ...records.containers].filter((r) => /:(creating|removing)$/.test(r))).toEqual([]);
  const pods = (await c.rt<{ items: { id: string; state: string }[] }>('ListPodSandbox', {})).items;
  for (const p of pods) {
    const st = (await c.podStatus(p.id)).status;
    expect(st.state, `pod ${p.id}: ListPodSandbox and PodSandboxStatus disagree`).toBe(p.state);
    if (st.state === 'SANDBOX_READY') {
      expect(e.podRunning(p.id), `pod ${p.id} is ready but its unit is not running`).not.toBe(false);
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
    const host = e.containerRunning(x.id);
    if (host === null) continue;
    expect(host.running, `container ${x.id} is ${st.state}`).toBe(st.state === 'CONTAINER_RUNNING');
    if (host.state !== null) expect(dockerOf[st.state] ?? [], `container ${x.id} is ${st.state}`).toContain(host.state);
  }
}

// SIGKILL between any two steps of the lifecycle, at every fault point core declares,
// over the real socket, engine and CNI.
describe.each(WALKED.map((e) => [e.kind, e] as const))(
  'crash recovery at every fault point (%s engine)',
  (_kind, e) => {
    let dockerd: PrivateDockerd | null = null;
    let shim: TestShim;
    let c: Cri;
    let logDir: string;
    const cleanup = new Set<string>();

    beforeAll(async () => {
      if (e.kind === 'docker') dockerd = await startPrivateDockerd();
      // VM engines use no dockerd; leaks() then asks the machine's own (for this shim's label: nothing).
      else delete process.env['DOCKER_HOST'];
      shim = await startReliabilityShim(e.kind === 'docker' ? 1 : e.kind === 'hyper' ? 10 : 11, {
        engines: [e.kind],
      });
      c = cri(shim);
      logDir = mkdtempSync(join(tmpdir(), 'hcr-crash-logs-'));
      await c.pull(e.image);
    }, 300_000);

    afterEach(async () => {
      for (const id of cleanup) await c.rmp(id);
      cleanup.clear();
      expect(allLeaks(shim)).toEqual([]);
    }, 180_000);

    afterAll(async () => {
      await shim?.stop();
      await dockerd?.close();
      if (logDir) rmSync(logDir, { recursive: true, force: true });
    }, 120_000);

    it('has a scenario for every fault point', () => {
      expect(Object.keys(scenarios).sort()).toEqual([...FAULT_POINTS].sort());
    });

    it.each(FAULT_POINTS)(
      'SIGKILL at %s converges',
      async (point) => {
        const scenario = scenarios[point];
        const x: Ctx = { c, e };
        await shim.kill();
        await shim.restart({ HCR_FAULT: point });
        const config = podConfig({ logDirectory: logDir });
        let setup: Setup = {
          config,
          pod: null,
          containerId: null,
          containerConfig: containerConfig(e.image, { ...e.container, logPath: 'c.log' }),
        };
        setup = await scenario.prepare(x, setup);
        if (setup.pod !== null) cleanup.add(setup.pod.id);
        const outcome = await scenario.trigger(x, setup).then(
          () => 'answered',
          (err: { code?: number }) => err.code,
        );
        // The call dies with the connection; it is never answered.
        expect(outcome).toBe(status.UNAVAILABLE);
        expect(await shim.waitExit(30_000)).toBeNull();

        await shim.restart();
        await assertTruthful(shim, x);
        // Recovery logs a failed cleanup at level error (50); it must not need to.
        expect(shim.logs()).not.toMatch(/"level":50/);
        for (const id of await scenario.converge(x, setup)) cleanup.add(id);
        await assertTruthful(shim, x);
      },
      300_000,
    );
  },
);

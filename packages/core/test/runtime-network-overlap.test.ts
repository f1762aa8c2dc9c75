import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { errAsync, okAsync, ResultAsync } from 'neverthrow';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  errors,
  RuntimeService,
  SqliteStateStore,
  type EngineCapabilities,
  type HcrError,
  type ImageInfo,
  type ImageService,
  type NetworkManager,
  type PodNetwork,
  type RuntimeEngine,
  type SandboxRef,
} from '../src/index.js';
import { containerSpec, podSpec } from '../src/testing/specs.js';

// RunPodSandbox and StopPodSandbox with an engine that declares
// sandboxBeforeNetwork: the infra unit starts while CNI ADD runs and stops
// while CNI DEL runs, and a failure of either side is undone or reported
// only once both are done.

const caps: EngineCapabilities = {
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
};

/** A promise with its resolve/reject exposed, to hold CNI ADD open. */
function deferred<T>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
  return { promise, resolve, reject };
}

/** Records the order of host operations; CNI ADD completes only when the test releases it. */
class Host {
  readonly events: string[] = [];
  readonly sandboxes = new Set<string>();
  readonly netns = new Set<string>();
  readonly attached = new Set<string>();
  add = deferred<PodNetwork | HcrError>();
  /** Set to hold the engine's stopSandbox open until the test settles it. */
  stop: ReturnType<typeof deferred<HcrError | null>> | null = null;
  engineFails = false;
  /** Set to hold CNI DEL open (resolve with an error to fail it). */
  del: ReturnType<typeof deferred<HcrError | null>> | null = null;
  seenNetwork: PodNetwork | null = null;
  /** The network networkReady was handed, per call (only with `withNetworkReady`). */
  readyNetworks: PodNetwork[] = [];
  networkReadyFails = false;

  network(): NetworkManager {
    return {
      createNetns: (id) => {
        this.netns.add(id);
        return okAsync(`/run/netns/${id}`);
      },
      attach: (id, netnsPath) => {
        this.events.push('add:start');
        return ResultAsync.fromPromise(this.add.promise, (e) => e as HcrError).andThen((r) => {
          this.events.push('add:end');
          if (r instanceof Error) return errAsync(r);
          this.attached.add(id);
          return okAsync({ ...r, netnsPath });
        });
      },
      check: () => okAsync(undefined),
      detach: (id) => {
        this.events.push('del');
        const held = this.del;
        const finish = (e: HcrError | null) => {
          if (e !== null) return errAsync(e);
          this.attached.delete(id);
          return okAsync(undefined);
        };
        return held === null ? finish(null) : ResultAsync.fromSafePromise(held.promise).andThen(finish);
      },
      removeNetns: (p) => {
        this.netns.delete(p.split('/').pop() as string);
        return okAsync(undefined);
      },
      connect: () => errAsync(errors.internal('unused')),
      readiness: () => ({ ready: true, reason: '', message: '' }),
      listNetns: () => okAsync([...this.netns].map((id) => `/run/netns/${id}`)),
    };
  }

  engine(
    sandboxBeforeNetwork: boolean,
    withNetworkReady = false,
    imageKinds: EngineCapabilities['imageKinds'] = ['oci'],
  ): RuntimeEngine {
    const unused = () => errAsync(errors.internal('unused in these tests'));
    const networkReady = (s: SandboxRef) => {
      this.events.push('engine:network-ready');
      this.readyNetworks.push(s.network);
      if (!this.sandboxes.has(s.id)) return errAsync(errors.internal('networkReady before createSandbox'));
      if (this.networkReadyFails) return errAsync(errors.unavailable('guest NIC setup failed (injected)'));
      return okAsync(undefined);
    };
    return {
      ...(withNetworkReady ? { networkReady } : {}),
      name: 'docker',
      kind: 'fake',
      capabilities: { ...caps, imageKinds, sandboxBeforeNetwork },
      health: () => okAsync({ ready: true, reason: '', message: '', info: {} }),
      inventory: () => okAsync({ sandboxIds: [...this.sandboxes], containerIds: [] }),
      createSandbox: (s: SandboxRef) => {
        this.events.push('engine:create');
        this.seenNetwork = s.network;
        if (this.engineFails) return errAsync(errors.unavailable('infra container failed (injected)'));
        this.sandboxes.add(s.id);
        return okAsync({ engineData: { infra: 'pause' } });
      },
      stopSandbox: () => {
        this.events.push('engine:stop');
        const held = this.stop;
        if (held === null) return okAsync(undefined);
        return ResultAsync.fromSafePromise(held.promise).andThen((e) => {
          this.events.push('engine:stopped');
          return e === null ? okAsync(undefined) : errAsync(e);
        });
      },
      removeSandbox: (s: SandboxRef) => {
        this.events.push('engine:remove');
        this.sandboxes.delete(s.id);
        return okAsync(undefined);
      },
      sandboxStatus: (s: SandboxRef) => okAsync({ alive: this.sandboxes.has(s.id), info: {} }),
      createContainer: () => {
        this.events.push('engine:create-container');
        return okAsync({ engineData: {} });
      },
      startContainer: unused,
      stopContainer: unused,
      removeContainer: unused,
      containerStatus: unused,
      execSync: unused,
      exec: unused,
      attach: unused,
      portForward: unused,
      containerStats: unused,
      sandboxStats: unused,
      updateContainerResources: unused,
      reopenContainerLog: unused,
      subscribe: () => () => undefined,
      close: async () => undefined,
    };
  }
}

const network: PodNetwork = {
  netnsPath: 'ignored',
  ips: ['10.0.0.2'],
  interfaces: [],
  gateway: '10.0.0.1',
  cniResult: {},
};

describe('RunPodSandbox overlaps CNI ADD with the infra unit when the engine allows it', () => {
  let dir: string;
  let store: SqliteStateStore;
  let host: Host;
  const service = (sandboxBeforeNetwork: boolean, withNetworkReady = false) =>
    new RuntimeService({
      store,
      network: host.network(),
      images: {} as ImageService,
      engines: new Map([['docker', host.engine(sandboxBeforeNetwork, withNetworkReady)]]),
      router: { handlers: {}, defaultEngine: 'docker', rules: [], deferBinding: false, unikernelEngine: null },
      sandboxDir: join(dir, 'sandboxes'),
    });
  const waitFor = async (cond: () => boolean) => {
    for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 5));
    expect(cond()).toBe(true);
  };

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'hcr-overlap-'));
    store = new SqliteStateStore(join(dir, 'state.db'));
    host = new Host();
  });
  afterEach(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('starts the infra unit while CNI ADD is still running, and records both', async () => {
    const rt = service(true);
    const run = rt.runPodSandbox(podSpec());
    await waitFor(() => host.events.includes('engine:create'));
    expect(host.events).toEqual(['add:start', 'engine:create']);
    expect(host.seenNetwork?.netnsPath).toMatch(/^\/run\/netns\//);
    host.add.resolve(network);
    const id = (await run)._unsafeUnwrap();
    const record = store.getSandbox(id);
    expect(record?.phase).toBe('ready');
    expect(record?.networkPhase).toBe('attached');
    expect(record?.network.ips).toEqual(['10.0.0.2']);
    expect(record?.engineCreated).toBe(true);
    expect(record?.engineData).toEqual({ infra: 'pause' });
  });

  it('waits for CNI ADD first when the engine needs the CNI result', async () => {
    const rt = service(false);
    const run = rt.runPodSandbox(podSpec());
    await waitFor(() => host.events.includes('add:start'));
    await new Promise((r) => setTimeout(r, 20));
    expect(host.events).toEqual(['add:start']);
    host.add.resolve(network);
    (await run)._unsafeUnwrap();
    expect(host.events).toEqual(['add:start', 'add:end', 'engine:create']);
    expect(host.seenNetwork?.ips).toEqual(['10.0.0.2']);
  });

  it('removes the infra unit and the namespace when CNI ADD fails', async () => {
    const rt = service(true);
    const run = rt.runPodSandbox(podSpec());
    await waitFor(() => host.events.includes('engine:create'));
    host.add.resolve(errors.unavailable('bridge plugin failed (injected)'));
    const r = await run;
    expect(r._unsafeUnwrapErr().message).toContain('bridge plugin failed');
    expect(host.sandboxes.size).toBe(0);
    expect(host.netns.size).toBe(0);
    expect(host.events).toContain('engine:remove');
    expect(store.listSandboxes()).toEqual([]);
  });

  it('runs CNI DEL and removes the namespace when the infra unit fails', async () => {
    host.engineFails = true;
    const rt = service(true);
    const run = rt.runPodSandbox(podSpec());
    await waitFor(() => host.events.includes('engine:create'));
    host.add.resolve(network);
    const r = await run;
    expect(r._unsafeUnwrapErr().message).toContain('infra container failed');
    expect(host.attached.size).toBe(0);
    expect(host.events).toContain('del');
    expect(host.netns.size).toBe(0);
    expect(store.listSandboxes()).toEqual([]);
  });

  it('runs CNI DEL while the infra unit stops', async () => {
    const rt = service(true);
    const run = rt.runPodSandbox(podSpec());
    host.add.resolve(network);
    const id = (await run)._unsafeUnwrap();
    host.stop = deferred();
    const stop = rt.stopPodSandbox(id);
    await waitFor(() => host.events.includes('del'));
    expect(host.events).not.toContain('engine:stopped');
    host.stop.resolve(null);
    (await stop)._unsafeUnwrap();
    expect(store.getSandbox(id)?.phase).toBe('notready');
    expect(store.getSandbox(id)?.networkPhase).toBe('removed');
  });

  it('reports a failed engine stop only after CNI DEL is done, and a retry finishes the stop', async () => {
    const rt = service(true);
    const run = rt.runPodSandbox(podSpec());
    host.add.resolve(network);
    const id = (await run)._unsafeUnwrap();
    host.stop = deferred();
    const stop = rt.stopPodSandbox(id);
    await waitFor(() => host.events.includes('engine:stop') && host.events.includes('del'));
    host.stop.resolve(errors.unavailable('dockerd went away (injected)'));
    expect((await stop)._unsafeUnwrapErr().message).toContain('dockerd went away');
    expect(host.attached.size).toBe(0);
    expect(store.getSandbox(id)?.phase).toBe('ready');
    host.stop = null;
    (await rt.stopPodSandbox(id))._unsafeUnwrap();
    expect(store.getSandbox(id)?.phase).toBe('notready');
  });

  it('lists the pod not ready from the moment CNI DEL begins, and runs DEL again after a failed one', async () => {
    const rt = service(true);
    const run = rt.runPodSandbox(podSpec());
    host.add.resolve(network);
    const id = (await run)._unsafeUnwrap();
    host.del = deferred();
    const stop = rt.stopPodSandbox(id);
    await waitFor(() => host.events.includes('del'));
    // Half a network is no network: a crash here must not leave the pod listed ready.
    expect(store.getSandbox(id)?.networkPhase).toBe('detaching');
    expect((await rt.podSandboxStatus(id))._unsafeUnwrap().state).toBe('notready');
    host.del.resolve(errors.unavailable('bridge plugin failed on DEL (injected)'));
    expect((await stop)._unsafeUnwrapErr().message).toContain('failed on DEL');
    expect(host.attached.size).toBe(1);
    host.del = null;
    (await rt.stopPodSandbox(id))._unsafeUnwrap();
    expect(host.events.filter((e) => e === 'del')).toHaveLength(2);
    expect(host.attached.size).toBe(0);
    expect(store.getSandbox(id)?.networkPhase).toBe('removed');
  });

  it('stops the infra unit before CNI DEL when the engine needs its network', async () => {
    const rt = service(false);
    const run = rt.runPodSandbox(podSpec());
    host.add.resolve(network);
    const id = (await run)._unsafeUnwrap();
    (await rt.stopPodSandbox(id))._unsafeUnwrap();
    expect(host.events.slice(-2)).toEqual(['engine:stop', 'del']);
  });

  it('hands the engine the finished network once CNI ADD and the unit are both done', async () => {
    const rt = service(true, true);
    const run = rt.runPodSandbox(podSpec());
    await waitFor(() => host.events.includes('engine:create'));
    await new Promise((r) => setTimeout(r, 20));
    expect(host.events).toEqual(['add:start', 'engine:create']);
    host.add.resolve(network);
    const id = (await run)._unsafeUnwrap();
    expect(host.events).toEqual(['add:start', 'engine:create', 'add:end', 'engine:network-ready']);
    expect(host.readyNetworks).toHaveLength(1);
    expect(host.readyNetworks[0]?.ips).toEqual(['10.0.0.2']);
    expect(host.readyNetworks[0]?.netnsPath).toMatch(/^\/run\/netns\//);
    expect(store.getSandbox(id)?.phase).toBe('ready');
  });

  it('calls networkReady after createSandbox when the engine waits for CNI', async () => {
    const rt = service(false, true);
    const run = rt.runPodSandbox(podSpec());
    host.add.resolve(network);
    (await run)._unsafeUnwrap();
    expect(host.events).toEqual(['add:start', 'add:end', 'engine:create', 'engine:network-ready']);
  });

  it.each([true, false])(
    'rolls the pod back when networkReady fails (sandboxBeforeNetwork %s)',
    async (sandboxBeforeNetwork) => {
      host.networkReadyFails = true;
      const rt = service(sandboxBeforeNetwork, true);
      const run = rt.runPodSandbox(podSpec());
      host.add.resolve(network);
      const r = await run;
      expect(r._unsafeUnwrapErr().message).toContain('guest NIC setup failed');
      expect(host.events).toContain('engine:remove');
      expect(host.events).toContain('del');
      expect(host.sandboxes.size).toBe(0);
      expect(host.attached.size).toBe(0);
      expect(host.netns.size).toBe(0);
      expect(store.listSandboxes()).toEqual([]);
    },
  );

  it('does not call networkReady when CNI ADD failed', async () => {
    const rt = service(true, true);
    const run = rt.runPodSandbox(podSpec());
    await waitFor(() => host.events.includes('engine:create'));
    host.add.resolve(errors.unavailable('bridge plugin failed (injected)'));
    expect((await run).isErr()).toBe(true);
    expect(host.events).not.toContain('engine:network-ready');
    expect(host.sandboxes.size).toBe(0);
  });

  describe('a pod bound to its engine by its first image', () => {
    const unikernelImage: ImageInfo = {
      id: `sha256:${'b'.repeat(64)}`,
      repoTags: ['hello-uk'],
      repoDigests: [],
      size: 1,
      config: {
        entrypoint: [],
        cmd: ['hello'],
        env: [],
        workingDir: '',
        user: '',
        exposedPorts: [],
        labels: {},
        annotations: {},
      },
      kind: 'unikernel',
      pinned: false,
    };
    const deferred = () =>
      new RuntimeService({
        store,
        network: host.network(),
        images: { status: () => okAsync(unikernelImage) } as unknown as ImageService,
        engines: new Map([
          ['docker', host.engine(true)],
          ['unikernel', host.engine(false, true, ['unikernel'])],
        ]),
        router: { handlers: {}, defaultEngine: 'docker', rules: [], deferBinding: true, unikernelEngine: 'unikernel' },
        sandboxDir: join(dir, 'sandboxes'),
      });

    it('gets networkReady right after createSandbox, before its first container', async () => {
      const rt = deferred();
      host.add.resolve(network);
      const id = (await rt.runPodSandbox(podSpec()))._unsafeUnwrap();
      expect(host.events).toEqual(['add:start', 'add:end']);
      (await rt.createContainer(id, containerSpec('hello-uk')))._unsafeUnwrap();
      expect(host.events.slice(2)).toEqual(['engine:create', 'engine:network-ready', 'engine:create-container']);
      expect(host.readyNetworks[0]?.ips).toEqual(['10.0.0.2']);
    });

    it('removes a unit networkReady failed on, so the next CreateContainer starts afresh', async () => {
      const rt = deferred();
      host.add.resolve(network);
      const id = (await rt.runPodSandbox(podSpec()))._unsafeUnwrap();
      host.networkReadyFails = true;
      const r = await rt.createContainer(id, containerSpec('hello-uk'));
      expect(r._unsafeUnwrapErr().message).toContain('guest NIC setup failed');
      expect(host.sandboxes.size).toBe(0);
      expect(store.getSandbox(id)?.engineCreated).toBe(false);
      expect(host.events).not.toContain('engine:create-container');
      host.networkReadyFails = false;
      (await rt.createContainer(id, containerSpec('hello-uk')))._unsafeUnwrap();
      expect(host.sandboxes.has(id)).toBe(true);
      expect(host.events.filter((e) => e === 'engine:create')).toHaveLength(2);
    });
  });
});

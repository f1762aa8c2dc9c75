import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { errAsync, okAsync } from 'neverthrow';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  errors,
  RuntimeService,
  SqliteStateStore,
  type ContainerRef,
  type EngineCapabilities,
  type EngineEvent,
  type ImageInfo,
  type ImageService,
  type NetworkManager,
  type RuntimeEngine,
  type SandboxRef,
} from '../src/index.js';
import { containerSpec, podSpec } from '../src/testing/specs.js';

// Unit tests of core's orchestration with fakes for the host (engine, CNI, images).
// The real engines, CNI and registry are exercised by the integration tests.

const allCaps: EngineCapabilities = {
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

class FakeEngine implements RuntimeEngine {
  readonly kind = 'fake';
  readonly sandboxes = new Set<string>();
  readonly containers = new Map<string, { state: 'created' | 'running' | 'exited'; exitCode: number }>();
  readonly calls: string[] = [];
  failNext: string | null = null;
  private listeners: ((e: EngineEvent) => void)[] = [];
  constructor(
    readonly name: string,
    readonly capabilities: EngineCapabilities = allCaps,
  ) {}
  private step(op: string) {
    this.calls.push(op);
    if (this.failNext === op) {
      this.failNext = null;
      return errAsync(errors.unavailable(`${op} failed (injected)`));
    }
    return okAsync(undefined);
  }
  health() {
    return okAsync({ ready: true, reason: '', message: '', info: {} });
  }
  inventory() {
    return okAsync({ sandboxIds: [...this.sandboxes], containerIds: [...this.containers.keys()] });
  }
  createSandbox(s: SandboxRef) {
    return this.step('createSandbox').map(() => {
      this.sandboxes.add(s.id);
      return { engineData: { fake: true } };
    });
  }
  stopSandbox() {
    return this.step('stopSandbox').map(() => {
      for (const c of this.containers.values())
        if (c.state === 'running') Object.assign(c, { state: 'exited', exitCode: 137 });
    });
  }
  removeSandbox(s: SandboxRef) {
    return this.step('removeSandbox').map(() => void this.sandboxes.delete(s.id));
  }
  sandboxStatus(s: SandboxRef) {
    return okAsync({ alive: this.sandboxes.has(s.id), info: {} });
  }
  createContainer(c: ContainerRef) {
    return this.step('createContainer').map(() => {
      this.containers.set(c.id, { state: 'created', exitCode: 0 });
      return { engineData: {} };
    });
  }
  startContainer(c: ContainerRef) {
    return this.step('startContainer').map(() => void Object.assign(this.containers.get(c.id)!, { state: 'running' }));
  }
  stopContainer(c: ContainerRef) {
    return this.step('stopContainer').map(() => {
      const x = this.containers.get(c.id);
      if (x && x.state === 'running') Object.assign(x, { state: 'exited', exitCode: 143 });
    });
  }
  removeContainer(c: ContainerRef) {
    return this.step('removeContainer').map(() => void this.containers.delete(c.id));
  }
  containerStatus(c: ContainerRef) {
    const x = this.containers.get(c.id);
    if (x === undefined) return errAsync(errors.notFound(`no container ${c.id}`));
    return okAsync({
      state: x.state,
      pid: x.state === 'running' ? 42 : 0,
      startedAt: 1n,
      finishedAt: x.state === 'exited' ? 2n : 0n,
      exitCode: x.exitCode,
      reason: x.state === 'exited' ? (x.exitCode === 0 ? 'Completed' : 'Error') : '',
      message: '',
    });
  }
  execSync() {
    return okAsync({ stdout: Buffer.from('ok'), stderr: Buffer.alloc(0), exitCode: 0 });
  }
  exec() {
    return okAsync({ exitCode: 0 });
  }
  attach() {
    return okAsync(undefined);
  }
  portForward() {
    return okAsync(undefined);
  }
  containerStats() {
    return okAsync({
      timestamp: 1n,
      cpuUsageCoreNanoSeconds: 1n,
      memoryWorkingSetBytes: 1,
      memoryUsageBytes: 1,
      writableLayerBytes: 0,
    });
  }
  sandboxStats() {
    return okAsync({
      timestamp: 1n,
      cpuUsageCoreNanoSeconds: 1n,
      memoryWorkingSetBytes: 1,
      memoryUsageBytes: 1,
      network: null,
      processes: 1,
    });
  }
  updateContainerResources() {
    return okAsync(undefined);
  }
  reopenContainerLog() {
    return okAsync(undefined);
  }
  subscribe(l: (e: EngineEvent) => void) {
    this.listeners.push(l);
    return () => (this.listeners = this.listeners.filter((x) => x !== l));
  }
  emit(e: EngineEvent) {
    for (const l of this.listeners) l(e);
  }
  async close() {}
}

class FakeNetwork implements NetworkManager {
  readonly netns = new Set<string>();
  readonly attached = new Set<string>();
  adds = 0;
  dels = 0;
  failAdd = false;
  createNetns(id: string) {
    this.netns.add(`/run/netns/${id}`);
    return okAsync(`/run/netns/${id}`);
  }
  attach(id: string, netnsPath: string) {
    this.adds++;
    if (this.failAdd) return errAsync(errors.unavailable('CNI ADD failed (injected)'));
    this.attached.add(id);
    return okAsync({ netnsPath, ips: ['10.0.0.2'], interfaces: [], gateway: '10.0.0.1', cniResult: {} });
  }
  check() {
    return okAsync(undefined);
  }
  detach(id: string) {
    this.dels++;
    this.attached.delete(id);
    return okAsync(undefined);
  }
  removeNetns(p: string) {
    this.netns.delete(p);
    return okAsync(undefined);
  }
  connect() {
    return okAsync(new PassThrough());
  }
  readiness() {
    return { ready: true, reason: '', message: '' };
  }
  listNetns() {
    return okAsync([...this.netns]);
  }
}

const image = (ref: string, kind: ImageInfo['kind'] = 'oci'): ImageInfo => ({
  id: `sha256:${(kind === 'oci' ? 'a' : 'b').repeat(64)}`,
  repoTags: [ref],
  repoDigests: [],
  size: 1,
  config: {
    entrypoint: [],
    cmd: ['sh'],
    env: [],
    workingDir: '',
    user: '',
    exposedPorts: [],
    labels: {},
    annotations: {},
  },
  kind,
  pinned: false,
});

const fakeImages = {
  status: (ref: string) =>
    okAsync(ref === 'busybox' ? image('busybox') : ref === 'hello-uk' ? image('hello-uk', 'unikernel') : null),
} as unknown as ImageService;

describe('RuntimeService (fake host)', () => {
  let dir: string;
  let store: SqliteStateStore;
  let engine: FakeEngine;
  let uk: FakeEngine;
  let net: FakeNetwork;
  let rt: RuntimeService;
  const make = () =>
    new RuntimeService({
      store,
      network: net,
      images: fakeImages,
      engines: new Map<string, RuntimeEngine>([
        ['docker', engine],
        ['unikernel', uk],
      ]),
      router: {
        handlers: { uk: 'unikernel' },
        defaultEngine: 'docker',
        rules: [],
        deferBinding: false,
        unikernelEngine: 'unikernel',
      },
      sandboxDir: join(dir, 'sandboxes'),
    });

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'hcr-rt-'));
    store = new SqliteStateStore(join(dir, 'state.db'));
    engine = new FakeEngine('docker');
    uk = new FakeEngine('unikernel', {
      ...allCaps,
      exec: false,
      execSync: false,
      hostNetwork: false,
      imageKinds: ['unikernel'],
    });
    net = new FakeNetwork();
    rt = make();
  });
  afterEach(() => {
    rt.close();
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('rolls back everything when the engine fails to create the pod', async () => {
    engine.failNext = 'createSandbox';
    const r = await rt.runPodSandbox(podSpec());
    expect(r._unsafeUnwrapErr().code).toBe('Unavailable');
    expect(store.listSandboxes()).toEqual([]);
    expect(net.netns.size).toBe(0);
    expect(net.attached.size).toBe(0);
    expect(net.dels).toBe(1);
  });

  it('rolls back the namespace when CNI ADD fails', async () => {
    net.failAdd = true;
    expect((await rt.runPodSandbox(podSpec())).isErr()).toBe(true);
    expect(net.netns.size).toBe(0);
    expect(store.listSandboxes()).toEqual([]);
    expect(engine.calls).not.toContain('createSandbox');
  });

  it('runs CNI DEL exactly once across stop and remove', async () => {
    const id = (await rt.runPodSandbox(podSpec()))._unsafeUnwrap();
    await rt.stopPodSandbox(id);
    await rt.stopPodSandbox(id);
    await rt.removePodSandbox(id);
    await rt.removePodSandbox(id);
    expect(net.dels).toBe(1);
    expect(net.netns.size).toBe(0);
  });

  it('gives host-network pods no namespace and no CNI', async () => {
    const s = podSpec();
    const id = (
      await rt.runPodSandbox({ ...s, linux: { ...s.linux, namespaces: { ...s.linux.namespaces, network: 'node' } } })
    )._unsafeUnwrap();
    expect(net.adds).toBe(0);
    expect((await rt.podSandboxStatus(id))._unsafeUnwrap().record.network.netnsPath).toBeNull();
  });

  it('converges half-made pods and containers on recovery', async () => {
    const id = (await rt.runPodSandbox(podSpec()))._unsafeUnwrap();
    const cid = (await rt.createContainer(id, containerSpec('busybox')))._unsafeUnwrap();
    // Simulate a crash in the middle of creating a second pod and a second container.
    const half = {
      ...store.getSandbox(id)!,
      id: 'h'.repeat(64),
      key: 'half',
      phase: 'creating' as const,
      engineCreated: false,
    };
    store.putSandbox(half);
    store.putContainer({ ...store.getContainer(cid)!, id: 'c'.repeat(64), key: 'halfc', phase: 'creating' });
    engine.containers.set('orphan', { state: 'running', exitCode: 0 });
    const again = make();
    const r = await again.recover();
    expect(r.cleaned).toBe(2);
    expect(r.orphans).toBe(1);
    expect(store.getSandbox(half.id)).toBeUndefined();
    expect(store.getContainer('c'.repeat(64))).toBeUndefined();
    expect(engine.containers.has('orphan')).toBe(false);
    expect(store.getContainer(cid)?.phase).toBe('created');
    again.close();
  });

  it('applies exit events to running containers', async () => {
    const id = (await rt.runPodSandbox(podSpec()))._unsafeUnwrap();
    const cid = (await rt.createContainer(id, containerSpec('busybox')))._unsafeUnwrap();
    await rt.startContainer(cid);
    engine.emit({ type: 'container-exited', containerId: cid, exitCode: 3, finishedAt: 5n, reason: 'Error' });
    await new Promise((r) => setTimeout(r, 10));
    const v = rt.listContainers({ id: cid })[0]!;
    expect(v.state).toBe('exited');
    expect(v.record.exitCode).toBe(3);
  });

  it('lists a ready pod whose engine unit died as notready (event, status probe and recovery)', async () => {
    const id = (await rt.runPodSandbox(podSpec()))._unsafeUnwrap();
    expect(rt.listPodSandbox({ id })[0]?.state).toBe('ready');
    engine.emit({ type: 'sandbox-died', sandboxId: id, message: 'infra container exited' });
    expect(rt.listPodSandbox({ id })[0]?.state).toBe('notready');
    // A unit found dead only by a status probe or at recovery is listed the same way.
    const other = (await rt.runPodSandbox(podSpec()))._unsafeUnwrap();
    engine.sandboxes.delete(other);
    expect((await rt.podSandboxStatus(other))._unsafeUnwrap().state).toBe('notready');
    expect(rt.listPodSandbox({ id: other })[0]?.state).toBe('notready');
    const third = (await rt.runPodSandbox(podSpec()))._unsafeUnwrap();
    engine.sandboxes.delete(third);
    const again = make();
    await again.recover();
    expect(again.listPodSandbox({ id: third })[0]?.state).toBe('notready');
    expect(again.listPodSandbox({ state: 'notready' }).map((v) => v.record.id)).toContain(third);
    // Stopping still tears the network down: liveness is not the recorded phase.
    await again.stopPodSandbox(third);
    expect(net.attached.has(third)).toBe(false);
    again.close();
  });

  it('reports a pod whose network was torn down as notready, even while its engine calls it alive', async () => {
    const id = (await rt.runPodSandbox(podSpec()))._unsafeUnwrap();
    // A stop cut short right after CNI DEL and netns removal: the record still says ready.
    store.putSandbox({ ...store.getSandbox(id)!, networkPhase: 'removed' });
    expect(engine.sandboxes.has(id)).toBe(true);
    expect((await rt.podSandboxStatus(id))._unsafeUnwrap().state).toBe('notready');
    expect(rt.listPodSandbox({ id })[0]?.state).toBe('notready');
  });

  it('releases the network of a refused pod while the engine is down, and finishes the removal when it is back', async () => {
    const removeSandbox = engine.removeSandbox.bind(engine);
    engine.removeSandbox = () => errAsync(errors.unavailable('engine unreachable (injected)'));
    engine.failNext = 'createSandbox';
    expect((await rt.runPodSandbox(podSpec()))._unsafeUnwrapErr().code).toBe('Unavailable');
    expect(net.attached.size).toBe(0);
    expect(net.netns.size).toBe(0);
    expect(store.listSandboxes().map((s) => s.phase)).toEqual(['removing']);
    // Listed NotReady, so the kubelet would retry the removal too.
    expect(rt.listPodSandbox().map((v) => v.state)).toEqual(['notready']);
    engine.removeSandbox = removeSandbox;
    engine.emit({ type: 'health-changed', health: { ready: true, reason: '', message: '', info: {} } });
    await vi.waitFor(() => expect(store.listSandboxes()).toEqual([]));
    expect(net.dels).toBe(1);
  });

  it('refuses pod identity that CNI_ARGS cannot carry before making anything', async () => {
    for (const field of ['name', 'namespace', 'uid'] as const) {
      const spec = podSpec();
      const e = (
        await rt.runPodSandbox({ ...spec, metadata: { ...spec.metadata, [field]: 'a=b;c' } })
      )._unsafeUnwrapErr();
      expect(e).toMatchObject({ code: 'InvalidArgument', details: { field: `metadata.${field}` } });
    }
    expect(store.listSandboxes()).toEqual([]);
    expect(net.netns.size).toBe(0);
  });

  it('binds a deferred pod from its first image and refuses mixing kinds', async () => {
    rt.close();
    rt = new RuntimeService({
      store,
      network: net,
      images: fakeImages,
      engines: new Map<string, RuntimeEngine>([
        ['docker', engine],
        ['unikernel', uk],
      ]),
      router: { handlers: {}, defaultEngine: 'docker', rules: [], deferBinding: true, unikernelEngine: 'unikernel' },
      sandboxDir: join(dir, 'sandboxes'),
    });
    const id = (await rt.runPodSandbox(podSpec()))._unsafeUnwrap();
    expect(store.getSandbox(id)?.engine).toBeNull();
    expect(engine.sandboxes.size + uk.sandboxes.size).toBe(0);
    (await rt.createContainer(id, containerSpec('hello-uk')))._unsafeUnwrap();
    const rec = store.getSandbox(id)!;
    expect(rec.engine).toBe('unikernel');
    expect(rec.routing.source).toBe('image');
    expect(uk.sandboxes.has(id)).toBe(true);
    const mixed = await rt.createContainer(id, containerSpec('busybox'));
    expect(mixed._unsafeUnwrapErr().message).toMatch(/cannot mix/);
  });

  it('refuses features an engine lacks with Unsupported', async () => {
    const id = (await rt.runPodSandbox(podSpec({ runtimeHandler: 'uk' })))._unsafeUnwrap();
    const cid = (await rt.createContainer(id, containerSpec('hello-uk')))._unsafeUnwrap();
    await rt.startContainer(cid);
    const e = (await rt.execSync(cid, ['true'], 1))._unsafeUnwrapErr();
    expect(e.code).toBe('Unsupported');
    expect(e.message).toMatch(/unikernel.*exec/);
  });

  it('serialises concurrent duplicate RunPodSandbox calls: one wins, the other is AlreadyExists', async () => {
    const spec = podSpec();
    const [a, b] = await Promise.all([rt.runPodSandbox(spec), rt.runPodSandbox(spec)]);
    expect([a.isOk(), b.isOk()].sort()).toEqual([false, true]);
    expect((a.isErr() ? a.error : b.isErr() ? b.error : null)?.code).toBe('AlreadyExists');
    expect(store.listSandboxes()).toHaveLength(1);
  });
});

/**
 * Fixtures of the hyper engine's integration tests: real QEMU (TCG), the
 * real guest assets, core's OCI image service pulling from the local test
 * registry, and core's CNI network manager on the host's bridge conflist.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CniNetworkManager,
  OciImageService,
  newContainerSpec,
  newSandboxSpec,
  silentLogger,
  writePodFiles,
  type ContainerRef,
  type ContainerSpec,
  type EngineContext,
  type EngineEvent,
  type ImageInfo,
  type Logger,
  type ResultAsync,
  type SandboxRef,
  type SandboxSpec,
} from '@hcr/core';
import { HyperEngine } from '../src/engine.js';
import { run } from '../src/host/run.js';
import { hyperConfigSchema, type HyperConfigTable } from '../src/config.js';

/** The guest assets setup-assets.sh built. */
export const ASSETS = process.env['HCR_HYPER_ASSETS'] ?? '/var/lib/hcr/assets/hyper/current';
export const REGISTRY = process.env['HCR_REGISTRY'] ?? '127.0.0.1:5000';
export const BUSYBOX = `${REGISTRY}/hcr-test/busybox:latest`;
export const HTTPD = `${REGISTRY}/hcr-test/httpd:latest`;

/** The kernel the engine would boot: the PVH vmlinux when there is one. */
export function bootKernel(): string {
  const vmlinux = join(ASSETS, 'vmlinux');
  return existsSync(vmlinux) ? vmlinux : join(ASSETS, 'vmlinuz');
}

/**
 * A pod spec for tests. (@hcr/core/testing has the same builders, but it
 * loads vitest, which the crash-test child process cannot.)
 */
export function podSpec(overrides: Partial<SandboxSpec> & { name?: string } = {}): SandboxSpec {
  const { name, ...rest } = overrides;
  const podName = name ?? `pod-${randomBytes(4).toString('hex')}`;
  return newSandboxSpec(
    { name: podName, uid: randomBytes(8).toString('hex'), namespace: 'hcr-test', attempt: 0 },
    { hostname: podName, ...rest },
  );
}

/** A container spec for tests (see {@link podSpec}). */
export function containerSpec(
  image: string,
  overrides: Partial<ContainerSpec> & { name?: string } = {},
): ContainerSpec {
  const { name, ...rest } = overrides;
  return newContainerSpec(name ?? `c-${randomBytes(4).toString('hex')}`, image, rest);
}

/** Unwraps a result, throwing its error (tests want the message). */
export async function ok<T>(r: ResultAsync<T, Error>): Promise<T> {
  const v = await r;
  if (v.isErr()) throw v.error;
  return v.value;
}

/** A logger that prints warnings and errors (useful when a VM misbehaves in CI). */
export const testLogger: Logger = {
  debug: () => undefined,
  info: () => undefined,
  warn: (f, m) =>
    console.warn(
      'hyper warn:',
      m,
      JSON.stringify(f, (_, v: unknown) => (typeof v === 'bigint' ? String(v) : v)),
    ),
  error: (f, m) =>
    console.error(
      'hyper error:',
      m,
      JSON.stringify(f, (_, v: unknown) => (typeof v === 'bigint' ? String(v) : v)),
    ),
  child: () => testLogger,
};

/** Everything one test file shares: a work dir, images, the network, and engines made over one runtime dir. */
export class Harness {
  readonly dir: string;
  readonly images: OciImageService;
  readonly network: CniNetworkManager;
  readonly events: EngineEvent[] = [];
  private readonly pulled = new Map<string, ImageInfo>();

  private constructor(dir: string, images: OciImageService) {
    this.dir = dir;
    this.images = images;
    this.network = new CniNetworkManager({
      netnsDir: join(dir, 'netns'),
      cacheDir: join(dir, 'cni'),
      logger: silentLogger,
    });
  }

  /** A fresh work dir under /tmp (short paths: QEMU's sockets must fit in 107 bytes). */
  static async open(): Promise<Harness> {
    return Harness.at(mkdtempSync(join(tmpdir(), 'hcr-hy-')));
  }

  /** A harness over an existing work dir (another process's, e.g. one that was killed). */
  static async at(dir: string): Promise<Harness> {
    const images = await ok(OciImageService.open({ root: join(dir, 'images'), logger: silentLogger }));
    return new Harness(dir, images);
  }

  /** The engine's context; the same runtime dir every time, so a new engine finds the VMs of the last one. */
  context(): EngineContext {
    return {
      name: 'hyper',
      logger: testLogger,
      runtimeDir: join(this.dir, 'engine'),
      stateDir: join(this.dir, 'engine-state'),
      images: this.images,
    };
  }

  /** A hyper engine over this harness (TCG: the hosts here cannot run nested KVM guests). */
  async engine(overrides: Partial<Record<keyof HyperConfigTable, unknown>> = {}): Promise<HyperEngine> {
    const parsed = hyperConfigSchema.parse({ kvm: 'off', boot_timeout_seconds: 90, assets_dir: ASSETS, ...overrides });
    if (!parsed.ok) throw new Error(parsed.error);
    const engine = await ok(HyperEngine.create(parsed.value, this.context()));
    engine.subscribe((e) => this.events.push(e));
    return engine;
  }

  /** Pulls an image once per harness. */
  async image(ref: string): Promise<ImageInfo> {
    const have = this.pulled.get(ref);
    if (have !== undefined) return have;
    const info = await ok(this.images.pull(ref));
    this.pulled.set(ref, info);
    return info;
  }

  /** Network namespace, CNI ADD and pod files, as core does before calling the engine. */
  async sandbox(overrides: Partial<SandboxSpec> = {}): Promise<SandboxRef> {
    const id = randomBytes(32).toString('hex');
    const spec = podSpec(overrides);
    const netnsPath = await ok(this.network.createNetns(id));
    const network = await ok(this.network.attach(id, netnsPath, spec));
    const runtimeDir = join(this.dir, 'sandboxes', id);
    const files = writePodFiles(runtimeDir, spec, network, 'nameserver 127.0.0.53\n');
    return { id, spec, network, files, engineData: {}, runtimeDir };
  }

  /** CNI DEL and the namespace, as core does after the engine stopped the pod. */
  async dropNetwork(sandbox: SandboxRef): Promise<void> {
    await ok(this.network.detach(sandbox.id, sandbox.network.netnsPath, sandbox.spec));
    if (sandbox.network.netnsPath !== null) await ok(this.network.removeNetns(sandbox.network.netnsPath));
  }

  /** Stops and removes a pod the way core does: engine stop, CNI DEL and the namespace, engine remove. */
  async finishPod(engine: HyperEngine, pod: SandboxRef, graceSeconds: number): Promise<void> {
    await ok(engine.stopSandbox(pod, graceSeconds));
    await this.dropNetwork(pod);
    await ok(engine.removeSandbox(pod));
  }

  /** A container of `image` in `sandbox`. */
  async container(
    sandbox: SandboxRef,
    image: string,
    overrides: Partial<ContainerSpec> & { name?: string } = {},
    logPath = '',
  ): Promise<ContainerRef> {
    const info = await this.image(image);
    return {
      id: randomBytes(32).toString('hex'),
      sandbox,
      spec: containerSpec(image, overrides),
      image: info,
      logPath,
      engineData: {},
    };
  }

  /**
   * What the engine may have left behind: QEMU processes started under this
   * work dir, mounts below it, files in the engine's runtime dir, network
   * namespaces and TAPs. Empty means clean.
   */
  async leaks(): Promise<string[]> {
    const out: string[] = [];
    for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
      try {
        const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
        const state = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0];
        if (cmd.includes('qemu-system') && cmd.includes(this.dir) && state !== 'Z') out.push(`qemu pid ${pid}`);
      } catch {
        // gone meanwhile
      }
    }
    for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
      const mp = line.split(' ')[4];
      // The image store's snapshots and the network manager's namespace dir are core's, checked by core.
      const cores = [join(this.dir, 'images'), join(this.dir, 'netns')];
      if (mp !== undefined && mp.startsWith(this.dir) && !cores.some((c) => mp.startsWith(c))) {
        out.push(`mount ${mp}`);
      }
    }
    const walk = (d: string): void => {
      if (!existsSync(d)) return;
      for (const e of readdirSync(d, { withFileTypes: true })) {
        const p = join(d, e.name);
        if (e.isDirectory()) walk(p);
        else out.push(`file ${p}`);
      }
    };
    walk(join(this.dir, 'engine'));
    for (const ns of await ok(this.network.listNetns())) out.push(`netns ${ns}`);
    return out;
  }
}

/**
 * Removes everything under the harness dir, also after a failed test: QEMU
 * processes started there (SIGKILL by pid), pod networks left in its netns
 * dir (CNI DEL, so no IP stays reserved), mounts, then the files.
 */
export async function closeHarness(h: Harness): Promise<void> {
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (cmd.includes('qemu-system') && cmd.includes(h.dir)) process.kill(Number(pid), 'SIGKILL');
    } catch {
      // gone meanwhile
    }
  }
  const nsDir = join(h.dir, 'netns');
  for (const id of existsSync(nsDir) ? readdirSync(nsDir).filter((n) => !n.startsWith('.')) : []) {
    await h.network.detach(id, join(nsDir, id), podSpec());
    await h.network.removeNetns(join(nsDir, id));
  }
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n').reverse()) {
    const mp = line.split(' ')[4];
    if (mp !== undefined && mp.startsWith(h.dir)) await run(['umount', '-l', mp]);
  }
  rmSync(h.dir, { recursive: true, force: true });
}

/** Polls `probe` until it returns a value or `timeoutMs` passes. */
export async function eventually<T>(probe: () => Promise<T | null>, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe().catch(() => null);
    if (v !== null) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** GET / on port 80 of a pod IP (only pods the test made), resolving with the body. */
export function httpGet(ip: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host: ip, port: 80, path: '/', timeout: 10_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve(body));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

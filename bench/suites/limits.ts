import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { round, summarize, type Summary } from '../lib/stats.js';

/** Where setup-assets.sh leaves the unikernel test binaries. */
const UNIKERNEL_ASSETS = '/var/lib/hcr/assets/unikernel';
/** Where setup-assets.sh points the hyper guest assets. */
const HYPER_ASSETS = '/var/lib/hcr/assets/hyper/current';

/** A raw (HCR-less) boot figure, or why it could not be taken. */
export type RawBoot =
  | { readonly measured: true; readonly what: string; readonly command: string; readonly boot: Summary }
  | { readonly measured: false; readonly what: string; readonly reason: string };

/**
 * Unikernel limit: QEMU launched by hand exactly as the engine launches the
 * hello unikernel (TCG, `pc`, 256 MiB, serial on stdio), timed from spawn to
 * its first console byte. The command line gives no `exit=`, so the guest
 * idles after printing and is killed once the byte arrived.
 */
export async function rawUnikernelBoot(runs: number): Promise<RawBoot> {
  const what = 'QEMU spawn → first console byte (hello unikernel, TCG)';
  const kernel = join(UNIKERNEL_ASSETS, 'hello.elf');
  if (!existsSync(kernel)) {
    return {
      measured: false,
      what,
      reason: `${kernel} is missing; run packages/engine-unikernel/scripts/setup-assets.sh`,
    };
  }
  const argv = [
    '-M',
    'pc',
    '-m',
    '256M',
    '-accel',
    'tcg',
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-no-reboot',
    '-serial',
    'stdio',
    '-device',
    'isa-debug-exit,iobase=0xf4,iosize=0x04',
    '-kernel',
    kernel,
    '-append',
    'bench',
  ];
  const samples: number[] = [];
  for (let i = 0; i <= runs; i++) {
    const ms = await firstByte('qemu-system-x86_64', argv, 30_000);
    if (i > 0) samples.push(ms); // the first run warms the page cache
  }
  return { measured: true, what, command: `qemu-system-x86_64 ${argv.join(' ')}`, boot: round(summarize(samples)) };
}

/** Spawns a process and resolves with ms until its first stdout byte; kills it then. */
function firstByte(cmd: string, args: readonly string[], timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'ignore'] });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${cmd} printed nothing within ${timeoutMs} ms`));
    }, timeoutMs);
    child.stdout.once('data', () => {
      const ms = performance.now() - t0;
      clearTimeout(timer);
      child.kill('SIGKILL');
      child.once('exit', () => resolve(ms));
    });
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

/** The parts of @hcr/engine-hyper the raw boot uses, typed here so a changing engine API fails softly. */
interface HyperModule {
  QemuDriver: new () => {
    start(spec: object): PromiseLike<ResultLike<{ pid: number; dir: string }>>;
    kill(handle: object): PromiseLike<ResultLike<void>>;
    agentTransport(handle: object): object;
  };
  AgentClient: {
    connect(transport: object, timeoutMs: number): PromiseLike<ResultLike<AgentLike>>;
  };
}
interface AgentLike {
  request(name: 'Hello', body: object, timeoutMs: number): PromiseLike<ResultLike<unknown>>;
  close(): void;
}
interface ResultLike<T> {
  isErr(): boolean;
  readonly value?: T;
  readonly error?: { message: string };
}

function unwrapResult<T>(r: ResultLike<T>, what: string): T {
  if (r.isErr()) throw new Error(`${what}: ${r.error?.message ?? 'failed'}`);
  return r.value as T;
}

/**
 * Hyper limit: the engine's own QEMU driver boots the same kernel and
 * initramfs the engine uses (microvm, TCG, 1 vCPU, 256 MiB) with no pod, no
 * network and no shares, and the clock stops at the agent's first message
 * (its reply to Hello) — no HCR core, CRI, CNI or image work involved.
 */
export async function rawHyperBoot(repoRoot: string, runs: number): Promise<RawBoot> {
  const what = 'QEMU start → guest agent first message (Hello reply), TCG';
  let mod: HyperModule;
  try {
    mod = (await import(join(repoRoot, 'packages/engine-hyper/src/index.ts'))) as HyperModule;
  } catch (e) {
    return { measured: false, what, reason: `@hcr/engine-hyper cannot be loaded: ${(e as Error).message}` };
  }
  if (typeof mod.QemuDriver !== 'function' || typeof mod.AgentClient?.connect !== 'function') {
    return { measured: false, what, reason: '@hcr/engine-hyper does not export QemuDriver and AgentClient' };
  }
  const kernel = existsSync(join(HYPER_ASSETS, 'vmlinux'))
    ? join(HYPER_ASSETS, 'vmlinux')
    : join(HYPER_ASSETS, 'vmlinuz');
  const initrd = join(HYPER_ASSETS, 'initrd.img');
  if (!existsSync(kernel) || !existsSync(initrd)) {
    return {
      measured: false,
      what,
      reason: `guest assets missing in ${HYPER_ASSETS}; run packages/engine-hyper/scripts/setup-assets.sh`,
    };
  }
  const driver = new mod.QemuDriver();
  const samples: number[] = [];
  for (let i = 0; i <= runs; i++) {
    // Short path: QEMU's sockets must fit sun_path.
    const dir = mkdtempSync('/tmp/hcrb-vm-');
    let handle: { pid: number; dir: string } | null = null;
    try {
      const t0 = performance.now();
      handle = unwrapResult(
        await driver.start({
          name: 'hcr-bench-raw',
          dir,
          kernel,
          initrd,
          cmdline: [],
          vcpus: 1,
          memoryMiB: 256,
          accel: 'tcg',
          netnsPath: null,
          nics: [],
          shares: [],
        }),
        'start QEMU',
      );
      const agent = unwrapResult(await mod.AgentClient.connect(driver.agentTransport(handle), 10_000), 'connect');
      try {
        unwrapResult(
          await agent.request(
            'Hello',
            { hostTime: BigInt(Date.now()) * 1_000_000n, resume: [], entropy: Buffer.alloc(0) },
            90_000,
          ),
          'Hello',
        );
      } finally {
        agent.close();
      }
      if (i > 0) samples.push(performance.now() - t0);
    } catch (e) {
      return { measured: false, what, reason: `raw boot failed: ${(e as Error).message}` };
    } finally {
      if (handle !== null) await driver.kill(handle);
      rmSync(dir, { recursive: true, force: true });
    }
  }
  return {
    measured: true,
    what,
    command: `QemuDriver (packages/engine-hyper/src/vm/qemu.ts) with ${kernel}, ${initrd}; then Hello over virtio-serial`,
    boot: round(summarize(samples)),
  };
}

/** One Docker Engine API call over the unix socket (the bench needs only a handful). */
function dockerApi(method: string, path: string, body?: object): Promise<{ status: number; json: unknown }> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = request(
      {
        socketPath: '/var/run/docker.sock',
        method,
        path,
        headers:
          payload === undefined
            ? {}
            : { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(payload) },
      },
      (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString('utf8')));
        res.on('end', () => {
          let json: unknown = null;
          try {
            json = text === '' ? null : JSON.parse(text);
          } catch {
            json = text;
          }
          resolve({ status: res.statusCode ?? 0, json });
        });
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

/** Docker-side floor of the docker engine's RunPodSandbox: create + start of its pause container. */
export interface DockerPauseStart {
  readonly measured: boolean;
  readonly reason?: string;
  readonly image?: string;
  /** NetworkMode none, as the engine starts pause today (libnetwork makes a netns pause then leaves). */
  readonly networkNone?: Summary;
  /** NetworkMode host: the same start without libnetwork's namespace. */
  readonly networkHost?: Summary;
  /** NetworkMode none, `concurrency` at once (per-container latency), as in the 10-way pod starts. */
  readonly networkNoneParallel?: Summary;
  readonly concurrency?: number;
}

/**
 * What dockerd alone takes to create and start HCR's pause container, timed
 * through the Engine API with no HCR involved: the part of the docker
 * engine's RunPodSandbox that no change inside HCR can remove (short of
 * starting it before the pod is asked for).
 */
export async function rawDockerPauseStart(runs: number, concurrency: number): Promise<DockerPauseStart> {
  const images = await dockerApi(
    'GET',
    `/images/json?filters=${encodeURIComponent(JSON.stringify({ label: ['io.hcr.kind=pause'] }))}`,
  ).catch((e: unknown) => ({ status: 0, json: (e as Error).message }));
  const list = Array.isArray(images.json) ? (images.json as { RepoTags?: string[] }[]) : [];
  const image = list.flatMap((i) => i.RepoTags ?? []).find((t) => t.startsWith('hcr.local/pause:'));
  if (image === undefined) {
    return { measured: false, reason: 'no HCR pause image in dockerd (run the podstart part first)' };
  }
  const once = async (mode: 'none' | 'host'): Promise<number> => {
    const t0 = performance.now();
    const created = await dockerApi('POST', '/containers/create', {
      Image: image,
      Entrypoint: ['/pause'],
      Labels: { 'io.hcr.bench': 'pause-start' },
      HostConfig: { NetworkMode: mode, CapDrop: ['ALL'], ReadonlyRootfs: true },
    });
    const id = (created.json as { Id?: string } | null)?.Id;
    if (created.status !== 201 || id === undefined) throw new Error(`create: ${JSON.stringify(created.json)}`);
    try {
      const started = await dockerApi('POST', `/containers/${id}/start`);
      if (started.status !== 204) throw new Error(`start: ${JSON.stringify(started.json)}`);
      return performance.now() - t0;
    } finally {
      await dockerApi('DELETE', `/containers/${id}?force=true`);
    }
  };
  const none: number[] = [];
  const host: number[] = [];
  const parallel: number[] = [];
  try {
    for (let i = 0; i <= runs; i++) {
      // Alternate, so drifting load affects both alike; the first pair warms up.
      const a = await once('none');
      const b = await once('host');
      if (i > 0) {
        none.push(a);
        host.push(b);
      }
    }
    for (let batch = 0; batch < 2; batch++) {
      parallel.push(...(await Promise.all(Array.from({ length: concurrency }, () => once('none')))));
    }
  } catch (e) {
    return { measured: false, reason: `docker API: ${(e as Error).message}` };
  }
  return {
    measured: true,
    image,
    networkNone: round(summarize(none)),
    networkHost: round(summarize(host)),
    networkNoneParallel: round(summarize(parallel)),
    concurrency,
  };
}

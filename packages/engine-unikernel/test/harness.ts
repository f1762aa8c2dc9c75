import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import {
  defaultContainerSecurity,
  emptyResources,
  errors,
  silentLogger,
  type ContainerRef,
  type ContainerSpec,
  type EngineContext,
  type ImageInfo,
  type ImageProvider,
  type SandboxRef,
} from '@hcr/core';
import { errAsync, okAsync, ResultAsync } from 'neverthrow';

const run = promisify(execFile);
/** Debian's docker client, which speaks dockerd 20.10's API. */
export const DOCKER = '/usr/bin/docker';
/** The test registry. */
export const REGISTRY = process.env['HCR_REGISTRY'] ?? '127.0.0.1:5000';
/** The images setup-assets.sh builds. */
export const HELLO_IMAGE = `${REGISTRY}/hcr-test/unikernel-hello:latest`;
export const HTTP_IMAGE = `${REGISTRY}/hcr-test/unikernel-http:latest`;

/**
 * Image access for these tests until core's image service can be used here:
 * images are pulled from the test registry with dockerd, and a container's
 * rootfs is the image exported into a directory (what the engine reads from
 * a prepared rootfs is the same: files at the annotated paths).
 */
export class DockerExportImages implements ImageProvider {
  private readonly rootfsDirs = new Map<string, string>();

  constructor(private readonly workDir: string) {}

  get(ref: string) {
    return ResultAsync.fromPromise(inspectImage(ref), (e) => errors.notFound(`image ${ref}: ${(e as Error).message}`));
  }

  prepareRootfs(imageId: string, key: string) {
    const dir = join(this.workDir, 'rootfs', key);
    this.rootfsDirs.set(key, dir);
    return ResultAsync.fromPromise(
      (async () => {
        await mkdir(dir, { recursive: true });
        const { stdout } = await run(DOCKER, ['create', imageId, 'unused']);
        const cid = stdout.trim();
        try {
          await run('sh', ['-c', `${DOCKER} export "$1" | tar -x -C "$2"`, 'sh', cid, dir]);
        } finally {
          await run(DOCKER, ['rm', cid]);
        }
        return { path: dir };
      })(),
      (e) => errors.internal(`exporting ${imageId}: ${(e as Error).message}`),
    );
  }

  releaseRootfs(key: string) {
    return ResultAsync.fromSafePromise(rm(join(this.workDir, 'rootfs', key), { recursive: true, force: true }));
  }

  dockerArchive() {
    return errAsync(errors.unsupported('test', 'dockerArchive'));
  }
}

/** Pulls `ref` from the test registry and describes it as core's image service would. */
export async function pullImage(ref: string): Promise<ImageInfo> {
  await run(DOCKER, ['pull', '-q', ref]);
  return inspectImage(ref);
}

async function inspectImage(ref: string): Promise<ImageInfo> {
  const { stdout } = await run(DOCKER, ['image', 'inspect', ref]);
  const [img] = JSON.parse(stdout) as {
    Id: string;
    RepoTags: string[];
    RepoDigests: string[];
    Size: number;
    Config: {
      Labels: Record<string, string> | null;
      Env: string[] | null;
      Entrypoint: string[] | null;
      Cmd: string[] | null;
    };
  }[];
  if (img === undefined) throw new Error(`no image ${ref}`);
  const labels = img.Config.Labels ?? {};
  return {
    id: img.Id,
    repoTags: img.RepoTags,
    repoDigests: img.RepoDigests,
    size: img.Size,
    config: {
      entrypoint: img.Config.Entrypoint ?? [],
      cmd: img.Config.Cmd ?? [],
      env: img.Config.Env ?? [],
      workingDir: '',
      user: '',
      exposedPorts: [],
      labels,
      annotations: {},
    },
    kind: 'com.urunc.unikernel.binary' in labels ? 'unikernel' : 'oci',
    pinned: false,
  };
}

/** A pod network namespace with a veth whose pod end is `eth0`, as CNI would leave it. */
export interface TestPod {
  readonly name: string;
  readonly netnsPath: string;
  readonly hostIp: string;
  readonly podIp: string;
  readonly hostIf: string;
}

/** Creates a netns `hcr-ukt-<n>` with eth0 = `10.251.<n>.2/24` and the host end `10.251.<n>.1`. */
export async function createTestPod(n: number): Promise<TestPod> {
  const name = `hcr-ukt-${n}`;
  const hostIf = `hcrukt${n}`;
  await destroyTestPod({ name, hostIf } as TestPod);
  const steps = [
    ['ip', 'netns', 'add', name],
    ['ip', 'link', 'add', hostIf, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', name],
    ['ip', 'addr', 'add', `10.251.${n}.1/24`, 'dev', hostIf],
    ['ip', 'link', 'set', hostIf, 'up'],
    ['ip', '-n', name, 'addr', 'add', `10.251.${n}.2/24`, 'dev', 'eth0'],
    ['ip', '-n', name, 'link', 'set', 'eth0', 'up'],
    ['ip', '-n', name, 'link', 'set', 'lo', 'up'],
    ['ip', '-n', name, 'route', 'add', 'default', 'via', `10.251.${n}.1`],
  ];
  for (const s of steps) await run(s[0]!, s.slice(1));
  return { name, netnsPath: `/run/netns/${name}`, hostIp: `10.251.${n}.1`, podIp: `10.251.${n}.2`, hostIf };
}

/** Deletes the namespace and the host end of the veth; nothing to delete is fine. */
export async function destroyTestPod(pod: Pick<TestPod, 'name' | 'hostIf'>): Promise<void> {
  await run('ip', ['netns', 'del', pod.name]).catch(() => undefined);
  await run('ip', ['link', 'del', pod.hostIf]).catch(() => undefined);
}

/** Links in the pod's netns. */
export async function podLinks(pod: TestPod): Promise<string[]> {
  const { stdout } = await run('ip', ['-n', pod.name, '-j', 'link', 'show']);
  return (JSON.parse(stdout) as { ifname: string }[]).map((l) => l.ifname);
}

/** An engine context rooted in a fresh temp dir. */
export async function testContext(
  images: (workDir: string) => ImageProvider,
): Promise<{ context: EngineContext; workDir: string }> {
  const workDir = await mkdtemp(join(tmpdir(), 'hcr-uk-test-'));
  const context: EngineContext = {
    name: 'unikernel',
    logger: silentLogger,
    runtimeDir: join(workDir, 'run'),
    stateDir: join(workDir, 'state'),
    images: images(workDir),
  };
  return { context, workDir };
}

/** A sandbox ref for a test pod. */
export function sandboxRef(id: string, pod: TestPod, runtimeDir: string): SandboxRef {
  return {
    id,
    spec: {
      metadata: { name: id, uid: id, namespace: 'default', attempt: 0 },
      hostname: id,
      logDirectory: '',
      dns: null,
      portMappings: [],
      labels: {},
      annotations: {},
      runtimeHandler: '',
      linux: {
        cgroupParent: '',
        sysctls: {},
        namespaces: { network: 'pod', pid: 'pod', ipc: 'pod', targetId: '' },
        privileged: false,
        runAsUser: null,
        runAsGroup: null,
        supplementalGroups: [],
        readonlyRootfs: false,
        seccomp: null,
        overhead: null,
        resources: null,
      },
    },
    network: {
      netnsPath: pod.netnsPath,
      ips: [pod.podIp],
      interfaces: [{ name: 'eth0', mac: '', addresses: [`${pod.podIp}/24`] }],
      gateway: pod.hostIp,
      cniResult: null,
    },
    files: { hosts: '', resolvConf: '', hostname: '' },
    engineData: {},
    runtimeDir: join(runtimeDir, 'sandboxes', id),
  };
}

/** A container ref running `image` with optional args. */
export function containerRef(
  id: string,
  sandbox: SandboxRef,
  image: ImageInfo,
  logPath: string,
  opts: { args?: string[]; memoryBytes?: number } = {},
): ContainerRef {
  const spec: ContainerSpec = {
    metadata: { name: id, attempt: 0 },
    image: image.repoTags[0] ?? image.id,
    command: [],
    args: opts.args ?? [],
    workingDir: '',
    envs: [],
    mounts: [],
    devices: [],
    labels: {},
    annotations: {},
    logPath: '',
    stdin: false,
    stdinOnce: false,
    tty: false,
    linux: {
      resources: { ...emptyResources, memoryLimitInBytes: opts.memoryBytes ?? 0 },
      security: { ...defaultContainerSecurity, namespaces: { ...defaultContainerSecurity.namespaces, pid: 'pod' } },
    },
  };
  return { id, sandbox, spec, image, logPath, engineData: {} };
}

/** Pids of processes whose command line mentions `needle` (leak checks). */
export async function processesMentioning(needle: string): Promise<number[]> {
  const out: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8');
      if (cmdline.includes(needle) && Number(entry) !== process.pid) out.push(Number(entry));
    } catch {
      // process ended meanwhile
    }
  }
  return out;
}

/** The content of every record of a CRI log file. */
export async function logContents(path: string): Promise<string[]> {
  const text = await readFile(path, 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => l.split(' ').slice(3).join(' '));
}

/** Resolves `okAsync` helpers for typed fakes. */
export const noop = () => okAsync(undefined);

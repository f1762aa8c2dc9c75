/**
 * Test fixtures for the docker engine's integration tests: a real dockerd,
 * real network namespaces, real images from the local registry.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import {
  defaultContainerSecurity,
  emptyResources,
  errors,
  type ContainerRef,
  type ContainerSecurity,
  type ContainerSpec,
  type EngineContext,
  type EngineEvent,
  type ImageInfo,
  type ImageProvider,
  type LogFields,
  type Logger,
  type SandboxRef,
  type SandboxSpec,
} from '@hcr/core';
import Docker from 'dockerode';
import { errAsync, okAsync, ResultAsync } from 'neverthrow';
import { expect } from 'vitest';
import { DockerEngine } from '../src/engine.js';
import { dockerConfigSchema, type DockerEngineConfig } from '../src/config.js';

/** Debian's docker client (the 20.10 one that matches dockerd's API). */
export const DOCKER_CLI = '/usr/bin/docker';
export const REGISTRY = process.env['HCR_REGISTRY'] ?? '127.0.0.1:5000';
export const BUSYBOX = `${REGISTRY}/hcr-test/busybox:latest`;
export const BUSYBOX_STATIC = `${REGISTRY}/hcr-test/busybox-static:latest`;
export const HTTPD = `${REGISTRY}/hcr-test/httpd:latest`;

export const docker = new Docker({ socketPath: '/var/run/docker.sock' });

/** A new 64-hex HCR id. */
export const newId = (): string => randomBytes(32).toString('hex');

/** Runs the docker CLI, returning stdout. */
export function dockerCli(args: string[], input?: Buffer): string {
  return execFileSync(DOCKER_CLI, args, { input, encoding: 'utf8', maxBuffer: 64 << 20 });
}

/** Pulls `ref` into dockerd (from the local registry) unless present. */
export function ensurePulled(ref: string): void {
  try {
    dockerCli(['image', 'inspect', ref]);
  } catch {
    dockerCli(['pull', '-q', ref]);
  }
}

/** ImageInfo for an image dockerd has, as the image service would report it. */
export async function imageInfo(ref: string): Promise<ImageInfo> {
  const i = await docker.getImage(ref).inspect();
  const toList = (v: unknown): string[] => (Array.isArray(v) ? (v as string[]) : typeof v === 'string' ? [v] : []);
  return {
    id: i.Id,
    repoTags: i.RepoTags ?? [],
    repoDigests: i.RepoDigests ?? [],
    size: i.Size,
    config: {
      entrypoint: toList(i.Config.Entrypoint),
      cmd: toList(i.Config.Cmd),
      env: i.Config.Env ?? [],
      workingDir: i.Config.WorkingDir ?? '',
      user: i.Config.User ?? '',
      exposedPorts: Object.keys(i.Config.ExposedPorts ?? {}),
      labels: i.Config.Labels ?? {},
      annotations: {},
    },
    kind: 'oci',
    pinned: false,
  };
}

/**
 * An ImageProvider backed by `docker save` archives: `archives` maps image ids
 * to archive files; asking for any other image is NotFound.
 */
export class ArchiveImages implements ImageProvider {
  readonly archives = new Map<string, string>();
  readonly requested: string[] = [];

  get(ref: string): ResultAsync<ImageInfo, ReturnType<typeof errors.notFound>> {
    return ResultAsync.fromPromise(imageInfo(ref), () => errors.notFound(`image ${ref}`));
  }
  prepareRootfs(): never {
    throw new Error('not used by the docker engine');
  }
  releaseRootfs(): ResultAsync<void, never> {
    return okAsync(undefined);
  }
  dockerArchive(imageId: string): ResultAsync<Readable, ReturnType<typeof errors.notFound>> {
    this.requested.push(imageId);
    const file = this.archives.get(imageId);
    if (file === undefined) return errAsync(errors.notFound(`no archive for ${imageId}`));
    return okAsync(Readable.from(readFileSync(file)));
  }
}

/** A logger that keeps what was logged (tests assert on warnings). */
export class RecordingLogger implements Logger {
  readonly lines: { level: string; fields: LogFields; message: string }[];
  constructor(lines?: RecordingLogger['lines']) {
    this.lines = lines ?? [];
  }
  debug(fields: LogFields, message: string): void {
    this.lines.push({ level: 'debug', fields, message });
  }
  info(fields: LogFields, message: string): void {
    this.lines.push({ level: 'info', fields, message });
  }
  warn(fields: LogFields, message: string): void {
    this.lines.push({ level: 'warn', fields, message });
    if (process.env['HCR_TEST_VERBOSE']) console.warn('WARN', message, fields);
  }
  error(fields: LogFields, message: string): void {
    this.lines.push({ level: 'error', fields, message });
    console.error('ERROR', message, fields);
  }
  child(): Logger {
    return new RecordingLogger(this.lines);
  }
}

/** One engine under test, with its own engine name so leak checks see only its objects. */
export interface TestEngine {
  readonly engine: DockerEngine;
  readonly name: string;
  readonly logger: RecordingLogger;
  readonly images: ArchiveImages;
  readonly events: EngineEvent[];
  readonly stateDir: string;
  readonly config: DockerEngineConfig;
  /** A second engine object over the same dockerd and state (an HCR restart). */
  recreate(): Promise<TestEngine>;
}

export async function makeEngine(
  overrides: Partial<DockerEngineConfig> = {},
  reuse?: { name: string; stateDir: string; images: ArchiveImages },
): Promise<TestEngine> {
  const parsed = dockerConfigSchema.parse(overrides);
  if (!parsed.ok) throw new Error(parsed.error);
  const config = parsed.value;
  const name = reuse?.name ?? `dt-${randomBytes(4).toString('hex')}`;
  const stateDir = reuse?.stateDir ?? mkdtempSync(join(tmpdir(), 'hcr-docker-state-'));
  const images = reuse?.images ?? new ArchiveImages();
  const logger = new RecordingLogger();
  const context: EngineContext = {
    name,
    logger,
    runtimeDir: mkdtempSync(join(tmpdir(), 'hcr-docker-run-')),
    stateDir,
    images,
  };
  const engine = new DockerEngine(config, context);
  const events: EngineEvent[] = [];
  engine.subscribe((e) => events.push(e));
  const te: TestEngine = {
    engine,
    name,
    logger,
    images,
    events,
    stateDir,
    config,
    recreate: async () => makeEngine(overrides, { name, stateDir, images }),
  };
  return te;
}

/** Docker containers carrying this engine's label (should be none after a test). */
export async function leftovers(engineName: string): Promise<string[]> {
  const list = await docker.listContainers({ all: true, filters: { label: [`io.hcr.engine=${engineName}`] } });
  return list.map((c) => `${c.Names.join(',')} (${c.State})`);
}

/** Fails the test if any container of the engine is left, after removing them so later tests start clean. */
export async function expectNoLeftovers(engineName: string): Promise<void> {
  const left = await leftovers(engineName);
  if (left.length > 0) {
    const list = await docker.listContainers({ all: true, filters: { label: [`io.hcr.engine=${engineName}`] } });
    await Promise.all(
      list.map((c) =>
        docker
          .getContainer(c.Id)
          .remove({ force: true, v: true })
          .catch(() => undefined),
      ),
    );
  }
  expect(left).toEqual([]);
}

/** A network namespace like core makes one (a bind-mounted nsfs file) with lo up and a dummy pod address. */
export interface TestNetns {
  readonly name: string;
  readonly path: string;
  readonly ip: string;
  remove(): void;
}

export function makeNetns(): TestNetns {
  const name = `hcrt-${randomBytes(4).toString('hex')}`;
  // A TEST-NET-3 address on a veth pair kept inside the namespace: visible in the pod, routed nowhere.
  const ip = `203.0.113.${2 + (randomBytes(1)[0]! % 250)}`;
  const remove = (): void => {
    try {
      execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
    } catch {
      // already gone
    }
  };
  execFileSync('ip', ['netns', 'add', name]);
  try {
    execFileSync('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
    execFileSync('ip', ['-n', name, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'peer0']);
    execFileSync('ip', ['-n', name, 'link', 'set', 'peer0', 'up']);
    execFileSync('ip', ['-n', name, 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
    execFileSync('ip', ['-n', name, 'link', 'set', 'eth0', 'up']);
  } catch (e) {
    remove();
    throw e;
  }
  return { name, path: `/run/netns/${name}`, ip, remove };
}

/** True while the netns file exists (leak checks). */
export const netnsExists = (ns: TestNetns): boolean => existsSync(ns.path);

const baseSandboxLinux: SandboxSpec['linux'] = {
  cgroupParent: '',
  sysctls: {},
  namespaces: { network: 'pod', pid: 'container', ipc: 'pod', targetId: '' },
  privileged: false,
  runAsUser: null,
  runAsGroup: null,
  supplementalGroups: [],
  readonlyRootfs: false,
  seccomp: null,
  overhead: null,
  resources: null,
};

/** A sandbox ref as core would pass it, with the pod files written to a temp dir. */
export function sandboxRef(
  opts: { netns?: TestNetns | null; hostname?: string; linux?: Partial<SandboxSpec['linux']>; id?: string } = {},
): SandboxRef {
  const id = opts.id ?? newId();
  const dir = mkdtempSync(join(tmpdir(), 'hcr-pod-'));
  const hostname = opts.hostname ?? `pod-${id.slice(0, 8)}`;
  const files = { hosts: join(dir, 'hosts'), resolvConf: join(dir, 'resolv.conf'), hostname: join(dir, 'hostname') };
  writeFileSync(files.hosts, `127.0.0.1 localhost\n::1 localhost\n`);
  writeFileSync(files.resolvConf, `nameserver 127.0.0.53\nsearch test.hcr\n`);
  writeFileSync(files.hostname, `${hostname}\n`);
  const netns = opts.netns ?? null;
  const hostNet = netns === null;
  return {
    id,
    spec: {
      metadata: { name: `pod-${id.slice(0, 6)}`, uid: id.slice(0, 8), namespace: 'test', attempt: 0 },
      hostname,
      logDirectory: join(dir, 'logs'),
      dns: null,
      portMappings: [],
      labels: {},
      annotations: {},
      runtimeHandler: '',
      linux: {
        ...baseSandboxLinux,
        namespaces: { ...baseSandboxLinux.namespaces, network: hostNet ? 'node' : 'pod' },
        ...opts.linux,
      },
    },
    network: {
      netnsPath: netns?.path ?? null,
      ips: netns === null ? [] : [netns.ip],
      interfaces: [],
      gateway: null,
      cniResult: null,
    },
    files,
    engineData: {},
    runtimeDir: dir,
  };
}

const baseSecurity: ContainerSecurity = {
  ...defaultContainerSecurity,
  seccomp: { type: 'runtimeDefault', localhostRef: '' },
};

/** A container ref as core would pass it; `logPath` defaults to a file in the pod's log directory. */
export function containerRef(
  sandbox: SandboxRef,
  image: ImageInfo,
  spec: Partial<ContainerSpec> & { security?: Partial<ContainerSecurity> } = {},
  opts: { logPath?: string; id?: string } = {},
): ContainerRef {
  const id = opts.id ?? newId();
  const { security, ...rest } = spec;
  const name = rest.metadata?.name ?? `c-${id.slice(0, 6)}`;
  mkdirSync(sandbox.spec.logDirectory, { recursive: true });
  const hostNet = sandbox.network.netnsPath === null;
  return {
    id,
    sandbox,
    spec: {
      metadata: { name, attempt: 0 },
      image: image.repoTags[0] ?? image.id,
      command: [],
      args: [],
      workingDir: '',
      envs: [],
      mounts: [],
      devices: [],
      labels: {},
      annotations: {},
      logPath: `${name}_0.log`,
      stdin: false,
      stdinOnce: false,
      tty: false,
      linux: {
        resources: emptyResources,
        security: {
          ...baseSecurity,
          namespaces: { ...baseSecurity.namespaces, network: hostNet ? 'node' : 'pod' },
          ...security,
        },
      },
      ...rest,
    },
    image,
    logPath: opts.logPath ?? join(sandbox.spec.logDirectory, `${name}_0.log`),
    engineData: {},
  };
}

/** Unwraps an engine result, failing the test with the HcrError's message. */
export async function ok<T>(r: ResultAsync<T, { message: string; code?: string }>): Promise<T> {
  const res = await r;
  if (res.isErr()) throw new Error(`${res.error.code ?? ''}: ${res.error.message}`);
  return res.value;
}

/** Waits until `check` returns a value other than undefined (polling), or fails after `ms`. */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined> | T | undefined,
  ms = 20_000,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Reads a CRI log file into records. */
export function criRecords(path: string): { time: string; stream: string; tag: string; content: string }[] {
  if (!existsSync(path)) return [];
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => {
      const m = /^(\S+) (stdout|stderr) ([FP]) (.*)$/s.exec(l);
      if (m === null) throw new Error(`not a CRI log line: ${JSON.stringify(l)}`);
      return { time: m[1]!, stream: m[2]!, tag: m[3]!, content: m[4]! };
    });
}

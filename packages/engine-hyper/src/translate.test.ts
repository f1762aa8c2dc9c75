import { defaultContainerSecurity, emptyResources, type ContainerSpec, type ImageInfo } from '@hcr/core';
import { describe, expect, it } from 'vitest';
import { ContainerStatus } from './protocol/wire.gen.js';
import {
  capabilitySet,
  commandLine,
  containerStatus,
  DEFAULT_CAPABILITIES,
  environment,
  execProcess,
  userSpec,
  wireResources,
  containerProcess,
} from './translate.js';

const image = (config: Partial<ImageInfo['config']> = {}): ImageInfo => ({
  id: 'sha256:0',
  repoTags: [],
  repoDigests: [],
  size: 0,
  config: {
    entrypoint: [],
    cmd: [],
    env: [],
    workingDir: '',
    user: '',
    exposedPorts: [],
    labels: {},
    annotations: {},
    ...config,
  },
  kind: 'oci',
  pinned: false,
});

const spec = (over: Partial<ContainerSpec> = {}, security: Partial<ContainerSpec['linux']['security']> = {}) =>
  ({
    metadata: { name: 'c', attempt: 0 },
    image: 'img',
    command: [],
    args: [],
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
      resources: emptyResources,
      security: { ...defaultContainerSecurity, ...security },
    },
    ...over,
  }) satisfies ContainerSpec;

describe('commandLine', () => {
  const img = image({ entrypoint: ['/ep'], cmd: ['default'] });
  it('combines CRI command/args with the image the way containerd does', () => {
    expect(commandLine(spec(), img)._unsafeUnwrap()).toEqual(['/ep', 'default']);
    expect(commandLine(spec({ args: ['x'] }), img)._unsafeUnwrap()).toEqual(['/ep', 'x']);
    expect(commandLine(spec({ command: ['sh'] }), img)._unsafeUnwrap()).toEqual(['sh']);
    expect(commandLine(spec({ command: ['sh'], args: ['-c', 'true'] }), img)._unsafeUnwrap()).toEqual([
      'sh',
      '-c',
      'true',
    ]);
  });
  it('refuses a container with nothing to run', () => {
    const r = commandLine(spec(), image());
    expect(r.isErr() && r.error.code).toBe('InvalidArgument');
  });
});

describe('capabilitySet', () => {
  it('starts from the default set and applies adds and drops, with or without the CAP_ prefix', () => {
    const caps = capabilitySet(['net_admin'], ['CAP_KILL'])._unsafeUnwrap();
    expect(caps).toContain('CAP_NET_ADMIN');
    expect(caps).not.toContain('CAP_KILL');
    expect(caps).toHaveLength(DEFAULT_CAPABILITIES.length);
  });
  it('understands ALL on either side', () => {
    expect(capabilitySet([], ['ALL'])._unsafeUnwrap()).toEqual([]);
    expect(capabilitySet(['ALL'], ['SYS_ADMIN'])._unsafeUnwrap()).not.toContain('CAP_SYS_ADMIN');
    expect(capabilitySet(['CHOWN'], ['ALL'])._unsafeUnwrap()).toEqual(['CAP_CHOWN']);
  });
  it('refuses names the kernel does not have', () => {
    const r = capabilitySet(['CAP_FLY'], []);
    expect(r.isErr() && r.error.message).toMatch(/unknown capability "CAP_FLY"/);
  });
});

describe('environment and user', () => {
  it('lets the spec override the image and adds HOSTNAME', () => {
    const env = environment(
      spec({ envs: [{ key: 'A', value: 'spec' }] }),
      image({ env: ['A=image', 'PATH=/bin'] }),
      'pod-1',
    );
    expect(env).toEqual(['A=spec', 'PATH=/bin', 'HOSTNAME=pod-1']);
  });
  it('picks the CRI username, uid or the image user, with the CRI group on top', () => {
    expect(userSpec(spec({}, { runAsUsername: 'nobody' }), image({ user: 'www-data' }))).toBe('nobody');
    expect(userSpec(spec({}, { runAsUser: 1000, runAsGroup: 5 }), image())).toBe('1000:5');
    expect(userSpec(spec(), image({ user: 'www-data:www-data' }))).toBe('www-data:www-data');
    expect(userSpec(spec({}, { runAsGroup: 7 }), image({ user: 'www-data:www-data' }))).toBe('www-data:7');
    expect(userSpec(spec({}, { runAsGroup: 7 }), image())).toBe('0:7');
    expect(userSpec(spec(), image())).toBe('');
  });
  it('gives execs the container identity with their own command and streams', () => {
    const base = containerProcess(spec({ command: ['sleep', '1'], tty: true }), image(), 'h')._unsafeUnwrap();
    const e = execProcess(base, ['ls'], { tty: false, stdin: true });
    expect(e).toEqual({ ...base, args: ['ls'], tty: false, stdin: true });
  });
});

describe('wireResources', () => {
  it('passes limits through and clamps negatives to "not set"', () => {
    const r = wireResources({
      ...emptyResources,
      cpuQuota: 50_000,
      cpuPeriod: 100_000,
      memoryLimitInBytes: 1 << 26,
      memorySwapLimitInBytes: -1,
      unified: { 'pids.max': '10' },
    });
    expect(r.cpuQuota).toBe(50_000n);
    expect(r.memoryLimit).toBe(BigInt(1 << 26));
    expect(r.memorySwapLimit).toBe(0n);
    expect(r.unified).toEqual([{ key: 'pids.max', value: '10' }]);
  });
});

describe('containerStatus', () => {
  const info = {
    id: 'c',
    pid: 42,
    exitCode: 0,
    signal: 0,
    oomKilled: false,
    startedAt: 1n,
    finishedAt: 2n,
    outputEnd: 0n,
  };
  it('maps the agent states to CRI states and reasons', () => {
    expect(containerStatus({ ...info, status: ContainerStatus.RUNNING })).toMatchObject({ state: 'running', pid: 42 });
    expect(containerStatus({ ...info, status: ContainerStatus.CREATED })).toMatchObject({ state: 'created', pid: 0 });
    expect(containerStatus({ ...info, status: ContainerStatus.EXITED })).toMatchObject({
      state: 'exited',
      reason: 'Completed',
    });
    expect(containerStatus({ ...info, status: ContainerStatus.EXITED, exitCode: 137, signal: 9 })).toMatchObject({
      reason: 'Error',
      message: 'killed by signal 9',
    });
    expect(containerStatus({ ...info, status: ContainerStatus.EXITED, exitCode: 137, oomKilled: true }).reason).toBe(
      'OOMKilled',
    );
  });
});

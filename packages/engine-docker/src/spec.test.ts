import {
  defaultContainerSecurity,
  emptyResources,
  newSandboxSpec,
  type ContainerRef,
  type ContainerSecurity,
  type ContainerSpec,
  type ImageConfig,
  type SandboxRef,
  type SandboxSpec,
} from '@hcr/core';
import { describe, expect, it } from 'vitest';
import {
  containerCreateOptions,
  dockerCapability,
  dockerOomScoreAdj,
  dockerResources,
  dockerUser,
  mergeEnv,
  resolveArgv,
  sandboxCreateOptions,
  securityOptions,
  type ContainerBuildContext,
} from './spec.js';

const SID = 'a'.repeat(64);
const CID = 'b'.repeat(64);

const imageConfig: ImageConfig = {
  entrypoint: ['/entry'],
  cmd: ['default-arg'],
  env: ['PATH=/bin', 'A=image', 'EMPTY'],
  workingDir: '/srv',
  user: '',
  exposedPorts: [],
  labels: {},
  annotations: {},
};

function sandboxSpec(overrides: Partial<SandboxSpec['linux']> = {}): SandboxSpec {
  const spec = newSandboxSpec(
    { name: 'p', uid: 'u', namespace: 'ns', attempt: 0 },
    { hostname: 'pod-host', logDirectory: '/var/log/pods/x' },
  );
  return { ...spec, linux: { ...spec.linux, ...overrides } };
}

function sandbox(netnsPath: string | null, linux: Partial<SandboxSpec['linux']> = {}): SandboxRef {
  return {
    id: SID,
    spec: sandboxSpec(linux),
    network: { netnsPath, ips: [], interfaces: [], gateway: null, cniResult: null },
    files: { hosts: '/run/p/hosts', resolvConf: '/run/p/resolv.conf', hostname: '/run/p/hostname' },
    engineData: {},
    runtimeDir: '/run/p',
  };
}

const security: ContainerSecurity = {
  ...defaultContainerSecurity,
  namespaces: { ...defaultContainerSecurity.namespaces, pid: 'pod' },
  seccomp: { type: 'runtimeDefault', localhostRef: '' },
};

function container(
  spec: Partial<ContainerSpec> = {},
  sec: Partial<ContainerSecurity> = {},
  netns: string | null = '/run/hcr/netns/x',
): ContainerRef {
  return {
    id: CID,
    sandbox: sandbox(netns),
    spec: {
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
      logPath: 'c_0.log',
      stdin: false,
      stdinOnce: false,
      tty: false,
      linux: { resources: emptyResources, security: { ...security, ...sec } },
      ...spec,
    },
    image: {
      id: 'sha256:' + 'c'.repeat(64),
      repoTags: [],
      repoDigests: [],
      size: 0,
      config: imageConfig,
      kind: 'oci',
      pinned: false,
    },
    logPath: '/var/log/pods/x/c_0.log',
    engineData: {},
  };
}

const ctx: ContainerBuildContext = {
  engine: 'docker',
  log: { maxSize: '10m', maxFiles: 2 },
  seccompProfile: null,
  canLowerOomScore: false,
  privileged: { kind: 'native' },
};

describe('sandboxCreateOptions', () => {
  it('makes pause join the pod netns with only CAP_SYS_ADMIN', () => {
    const o = sandboxCreateOptions(
      sandbox('/run/hcr/netns/x', { sysctls: { 'kernel.shm_rmid_forced': '1', 'net.ipv4.ip_forward': '1' } }),
      {
        engine: 'docker',
        pauseImage: 'hcr.local/pause:abc',
        log: ctx.log,
      },
    );
    expect(o.name).toBe(`hcr_sandbox_${SID}`);
    expect(o.Cmd).toEqual(['--netns', '/run/hcr-netns']);
    expect(o.Hostname).toBe('pod-host');
    expect(o.Labels).toEqual({ 'io.hcr.engine': 'docker', 'io.hcr.kind': 'sandbox', 'io.hcr.sandbox-id': SID });
    expect(o.HostConfig).toMatchObject({
      NetworkMode: 'none',
      IpcMode: 'shareable',
      CapDrop: ['ALL'],
      CapAdd: ['CAP_SYS_ADMIN'],
      Sysctls: { 'kernel.shm_rmid_forced': '1' },
      Mounts: [{ Type: 'bind', Source: '/run/hcr/netns/x', Target: '/run/hcr-netns', ReadOnly: true }],
    });
  });

  it('uses the host network, UTS and namespaces for host pods, without setns', () => {
    const o = sandboxCreateOptions(
      sandbox(null, {
        namespaces: { network: 'node', pid: 'node', ipc: 'node', targetId: '' },
        cgroupParent: '/kubepods/podx',
      }),
      { engine: 'docker', pauseImage: 'p', log: ctx.log },
    );
    expect(o.Cmd).toEqual([]);
    expect(o.Hostname).toBeUndefined();
    expect(o.HostConfig).toMatchObject({
      NetworkMode: 'host',
      UTSMode: 'host',
      IpcMode: 'host',
      PidMode: 'host',
      CapAdd: [],
      Mounts: [],
      CgroupParent: '/kubepods/podx',
    });
  });
});

describe('resolveArgv (Kubernetes command/args rules)', () => {
  it('keeps the image entrypoint and cmd when neither is given', () => {
    expect(resolveArgv([], [], imageConfig)._unsafeUnwrap()).toEqual({ entrypoint: ['/entry'], cmd: ['default-arg'] });
  });
  it('args replace CMD only', () => {
    expect(resolveArgv([], ['x'], imageConfig)._unsafeUnwrap()).toEqual({ entrypoint: ['/entry'], cmd: ['x'] });
  });
  it('command replaces ENTRYPOINT and drops the image CMD', () => {
    expect(resolveArgv(['/bin/sh'], [], imageConfig)._unsafeUnwrap()).toEqual({ entrypoint: ['/bin/sh'], cmd: [] });
    expect(resolveArgv(['/bin/sh'], ['-c', 'true'], imageConfig)._unsafeUnwrap()).toEqual({
      entrypoint: ['/bin/sh'],
      cmd: ['-c', 'true'],
    });
  });
  it('refuses a container with nothing to run', () => {
    const e = resolveArgv([], [], { ...imageConfig, entrypoint: [], cmd: [] })._unsafeUnwrapErr();
    expect(e.code).toBe('InvalidArgument');
  });
});

describe('small mappings', () => {
  it('merges env with CRI winning', () => {
    expect(
      mergeEnv(imageConfig.env, [
        { key: 'A', value: 'cri' },
        { key: 'B', value: 'x=y' },
      ]),
    ).toEqual(['PATH=/bin', 'A=cri', 'EMPTY=', 'B=x=y']);
  });
  it('spells capabilities the Docker way', () => {
    expect(['net_admin', 'CAP_SYS_TIME', 'ALL', ' all '].map(dockerCapability)).toEqual([
      'CAP_NET_ADMIN',
      'CAP_SYS_TIME',
      'ALL',
      'ALL',
    ]);
  });
  it('builds the user from uid, name and group', () => {
    expect(dockerUser({ ...security, runAsUser: 1000, runAsGroup: 3000 })._unsafeUnwrap()).toBe('1000:3000');
    expect(dockerUser({ ...security, runAsUsername: 'nobody' })._unsafeUnwrap()).toBe('nobody');
    expect(dockerUser({ ...security, runAsUser: 0 })._unsafeUnwrap()).toBe('0');
    expect(dockerUser(security)._unsafeUnwrap()).toBe('');
    expect(dockerUser({ ...security, runAsGroup: 5 })._unsafeUnwrapErr().code).toBe('InvalidArgument');
  });
  it('maps seccomp, apparmor and no-new-privs', () => {
    expect(securityOptions({ ...security, seccomp: null }, null)._unsafeUnwrap()).toEqual(['seccomp=unconfined']);
    expect(securityOptions(security, null)._unsafeUnwrap()).toEqual([]);
    expect(
      securityOptions(
        {
          ...security,
          seccomp: { type: 'localhost', localhostRef: '/p.json' },
          apparmor: { type: 'unconfined', localhostRef: '' },
          noNewPrivs: true,
        },
        '{"defaultAction":"SCMP_ACT_ALLOW"}',
      )._unsafeUnwrap(),
    ).toEqual(['seccomp={"defaultAction":"SCMP_ACT_ALLOW"}', 'apparmor=unconfined', 'no-new-privileges']);
    expect(securityOptions({ ...security, privileged: true, seccomp: null }, null)._unsafeUnwrap()).toEqual([]);
  });
  it('maps resources, limiting swap to the memory limit', () => {
    const r = dockerResources({
      ...emptyResources,
      cpuShares: 512,
      cpuQuota: 50_000,
      cpuPeriod: 100_000,
      memoryLimitInBytes: 64 << 20,
      cpusetCpus: '0',
      unified: { 'memory.high': '1' },
    });
    expect(r.value).toEqual({
      CpuShares: 512,
      CpuQuota: 50_000,
      CpuPeriod: 100_000,
      Memory: 64 << 20,
      MemorySwap: 64 << 20,
      CpusetCpus: '0',
    });
    expect(r.warnings).toHaveLength(1);
    expect(dockerResources(emptyResources).value).toEqual({});
  });
  it('clamps cpu_shares into the range cpu.shares takes, with a warning', () => {
    expect(dockerResources({ ...emptyResources, cpuShares: 1 })).toEqual({
      value: { CpuShares: 2 },
      warnings: ['cpu_shares 1 clamped to 2, the range cgroup cpu.shares takes'],
    });
    expect(dockerResources({ ...emptyResources, cpuShares: 1 << 20 }).value).toEqual({ CpuShares: 262_144 });
  });
  it('clamps a negative oom_score_adj only when it cannot be applied', () => {
    expect(dockerOomScoreAdj(-998, false)).toMatchObject({ value: 0, warnings: [expect.stringContaining('-998')] });
    expect(dockerOomScoreAdj(-998, true)).toEqual({ value: -998, warnings: [] });
    expect(dockerOomScoreAdj(1000, false)).toEqual({ value: 1000, warnings: [] });
  });
});

describe('privileged containers', () => {
  const priv = container({}, { privileged: true, capabilities: { add: [], drop: ['NET_RAW'] }, seccomp: null });

  it('use Docker privileged mode when the host allows it', () => {
    const { value: o, warnings } = containerCreateOptions(priv, ctx)._unsafeUnwrap();
    expect(o.HostConfig).toMatchObject({ Privileged: true, SecurityOpt: [] });
    expect(o.HostConfig?.CapDrop).toBeUndefined();
    expect(warnings).toEqual([]);
  });

  it('are emulated, with a warning, when the bounding set lacks a capability', () => {
    const built = containerCreateOptions(priv, {
      ...ctx,
      privileged: {
        kind: 'emulated',
        dropCapabilities: ['CAP_SYS_RESOURCE'],
        devices: [
          { PathOnHost: '/dev/null', PathInContainer: '/dev/null', CgroupPermissions: 'rwm' },
          { PathOnHost: '/dev/fuse', PathInContainer: '/dev/fuse', CgroupPermissions: 'rwm' },
        ],
        reason: 'no CAP_SYS_RESOURCE',
      },
    })._unsafeUnwrap();
    expect(built.value.HostConfig).toMatchObject({
      Privileged: false,
      CapAdd: ['ALL'],
      CapDrop: ['CAP_SYS_RESOURCE'],
      SecurityOpt: ['seccomp=unconfined', 'apparmor=unconfined'],
      MaskedPaths: [],
      ReadonlyPaths: [],
      DeviceCgroupRules: ['a *:* rwm'],
    });
    expect(built.value.HostConfig?.Devices).toHaveLength(2);
    expect(built.warnings).toEqual([expect.stringContaining('no CAP_SYS_RESOURCE')]);
  });
});

describe('containerCreateOptions', () => {
  it('joins the pause container and mounts the pod files', () => {
    const { value: o } = containerCreateOptions(container(), ctx)._unsafeUnwrap();
    const pause = `container:hcr_sandbox_${SID}`;
    expect(o.name).toBe(`hcr_container_${CID}`);
    expect(o.Image).toBe('sha256:' + 'c'.repeat(64));
    expect(o.WorkingDir).toBe('/srv');
    expect(o.Labels).toEqual({
      'io.hcr.engine': 'docker',
      'io.hcr.kind': 'container',
      'io.hcr.sandbox-id': SID,
      'io.hcr.container-id': CID,
      'io.hcr.log-path': '/var/log/pods/x/c_0.log',
    });
    expect(o.HostConfig).toMatchObject({ NetworkMode: pause, IpcMode: pause, PidMode: pause, UTSMode: '' });
    expect(o.HostConfig?.Mounts?.map((m) => [m.Target, m.Source, m.ReadOnly])).toEqual([
      ['/etc/hosts', '/run/p/hosts', false],
      ['/etc/resolv.conf', '/run/p/resolv.conf', false],
      ['/etc/hostname', '/run/p/hostname', false],
    ]);
  });

  it('lets a CRI mount replace a pod file and maps propagation', () => {
    const { value: o } = containerCreateOptions(
      container(
        {
          mounts: [
            {
              containerPath: '/etc/hosts',
              hostPath: '/k/hosts',
              readonly: false,
              propagation: 'private',
              selinuxRelabel: false,
            },
            {
              containerPath: '/data',
              hostPath: '/d',
              readonly: true,
              propagation: 'hostToContainer',
              selinuxRelabel: false,
            },
          ],
        },
        { readonlyRootfs: true },
      ),
      ctx,
    )._unsafeUnwrap();
    expect(o.HostConfig?.Mounts).toEqual([
      { Type: 'bind', Source: '/run/p/resolv.conf', Target: '/etc/resolv.conf', ReadOnly: true },
      { Type: 'bind', Source: '/run/p/hostname', Target: '/etc/hostname', ReadOnly: true },
      {
        Type: 'bind',
        Source: '/k/hosts',
        Target: '/etc/hosts',
        ReadOnly: false,
        BindOptions: { Propagation: 'rprivate' },
      },
      { Type: 'bind', Source: '/d', Target: '/data', ReadOnly: true, BindOptions: { Propagation: 'rslave' } },
    ]);
    expect(o.HostConfig?.ReadonlyRootfs).toBe(true);
  });

  it('maps host and target namespaces', () => {
    const host = containerCreateOptions(
      container({}, { namespaces: { network: 'node', pid: 'node', ipc: 'node', targetId: '' } }, null),
      ctx,
    )._unsafeUnwrap().value;
    expect(host.HostConfig).toMatchObject({ NetworkMode: 'host', UTSMode: 'host', IpcMode: 'host', PidMode: 'host' });
    const target = containerCreateOptions(
      container({}, { namespaces: { network: 'pod', pid: 'target', ipc: 'pod', targetId: 'd'.repeat(64) } }),
      ctx,
    )._unsafeUnwrap().value;
    expect(target.HostConfig?.PidMode).toBe(`container:hcr_container_${'d'.repeat(64)}`);
    const own = containerCreateOptions(
      container({}, { namespaces: { network: 'pod', pid: 'container', ipc: 'pod', targetId: '' } }),
      ctx,
    )._unsafeUnwrap().value;
    expect(own.HostConfig?.PidMode).toBe('');
  });

  it('carries security, devices, stdio and the oom warning', () => {
    const built = containerCreateOptions(
      container({
        devices: [{ containerPath: '/dev/xnull', hostPath: '/dev/null', permissions: '' }],
        stdin: true,
        stdinOnce: true,
        tty: true,
        envs: [{ key: 'A', value: '1' }],
        linux: {
          resources: { ...emptyResources, oomScoreAdj: -5 },
          security: {
            ...security,
            runAsUser: 65534,
            supplementalGroups: [33, 44],
            capabilities: { add: ['net_raw'], drop: ['ALL'] },
            noNewPrivs: true,
            maskedPaths: ['/proc/kcore'],
            readonlyPaths: ['/proc/sys'],
          },
        },
      }),
      ctx,
    )._unsafeUnwrap();
    const o = built.value;
    expect(o).toMatchObject({ User: '65534', Tty: true, OpenStdin: true, StdinOnce: true });
    expect(o.Env).toContain('A=1');
    expect(o.HostConfig).toMatchObject({
      GroupAdd: ['33', '44'],
      CapAdd: ['CAP_NET_RAW'],
      CapDrop: ['ALL'],
      SecurityOpt: ['no-new-privileges'],
      MaskedPaths: ['/proc/kcore'],
      ReadonlyPaths: ['/proc/sys'],
      Devices: [{ PathOnHost: '/dev/null', PathInContainer: '/dev/xnull', CgroupPermissions: 'rwm' }],
    });
    expect(o.HostConfig?.OomScoreAdj).toBeUndefined();
    expect(built.warnings).toEqual([expect.stringContaining('oom_score_adj -5')]);
  });
});

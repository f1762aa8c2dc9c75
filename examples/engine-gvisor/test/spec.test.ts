import { DEFAULT_CAPABILITIES, type ImageConfig, type SandboxRef } from '@hcr/core';
import { containerSpec, defaultSecurity, podSpec } from '@hcr/core/testing';
import { describe, expect, it } from 'vitest';
import { CriAnnotation } from '../src/oci.js';
import {
  capabilities,
  containerNamespaces,
  containerOciSpec,
  mergeEnv,
  podResources,
  resolveArgv,
  sandboxOciSpec,
  type ContainerSpecInput,
} from '../src/spec.js';

const image: ImageConfig = {
  entrypoint: ['/entry'],
  cmd: ['--default'],
  env: ['PATH=/usr/bin:/bin', 'LANG=C'],
  workingDir: '/srv',
  user: '',
  exposedPorts: [],
  labels: {},
  annotations: {},
};

const sandbox: SandboxRef = {
  id: 'a'.repeat(64),
  spec: podSpec({ name: 'web', hostname: 'web-0' }),
  network: {
    netnsPath: '/run/hcr/netns/pod',
    ips: ['10.97.0.5'],
    interfaces: [],
    gateway: '10.97.0.1',
    cniResult: null,
  },
  files: { hosts: '/run/pod/hosts', resolvConf: '/run/pod/resolv.conf', hostname: '/run/pod/hostname' },
  engineData: {},
  runtimeDir: '/run/pod',
};

const input = (overrides: Partial<ContainerSpecInput> = {}): ContainerSpecInput => ({
  id: 'c'.repeat(64),
  sandbox,
  spec: containerSpec('busybox', { name: 'app' }),
  image,
  imageName: 'busybox',
  rootfs: '/var/lib/hcr/images/rootfs/c/merged',
  user: { uid: 0, gid: 0, additionalGids: [], home: '/root' },
  ...overrides,
});

describe('resolveArgv', () => {
  it('follows the Kubernetes command/args rules', () => {
    expect(resolveArgv([], [], image)._unsafeUnwrap()).toEqual(['/entry', '--default']);
    expect(resolveArgv(['/bin/sh'], [], image)._unsafeUnwrap()).toEqual(['/bin/sh']);
    expect(resolveArgv([], ['--flag'], image)._unsafeUnwrap()).toEqual(['/entry', '--flag']);
    expect(resolveArgv(['/bin/sh'], ['-c', 'true'], image)._unsafeUnwrap()).toEqual(['/bin/sh', '-c', 'true']);
  });

  it('refuses a container with no command at all', () => {
    const r = resolveArgv([], [], { ...image, entrypoint: [], cmd: [] });
    expect(r._unsafeUnwrapErr().code).toBe('InvalidArgument');
  });
});

describe('mergeEnv', () => {
  it('applies CRI variables over the image, keeping the image order', () => {
    expect(
      mergeEnv(
        ['A=1', 'B=2', 'EMPTY'],
        [
          { key: 'B', value: 'x=y' },
          { key: 'C', value: '3' },
        ],
      ),
    ).toEqual(['A=1', 'B=x=y', 'EMPTY=', 'C=3']);
  });
});

describe('capabilities', () => {
  it('starts from the default set, drops, then adds', () => {
    const caps = capabilities(['net_admin'], ['CAP_NET_RAW', 'MKNOD'])._unsafeUnwrap();
    expect(caps).toContain('CAP_NET_ADMIN');
    expect(caps).not.toContain('CAP_NET_RAW');
    expect(caps).not.toContain('CAP_MKNOD');
    expect(caps).toContain('CAP_CHOWN');
  });

  it('understands ALL in either list', () => {
    expect(capabilities([], ['ALL'])._unsafeUnwrap()).toEqual([]);
    expect(capabilities(['all'], [])._unsafeUnwrap()).toContain('CAP_SYS_ADMIN');
    expect(capabilities(['SYS_PTRACE'], ['ALL'])._unsafeUnwrap()).toEqual(['CAP_SYS_PTRACE']);
  });

  it('refuses a capability that does not exist', () => {
    expect(capabilities(['CAP_FLY'], [])._unsafeUnwrapErr().code).toBe('InvalidArgument');
  });
});

describe('containerNamespaces', () => {
  it('gives a container its own PID namespace, or the sandbox one when the pod shares it', () => {
    const own = containerNamespaces('container', 'pod', sandbox)._unsafeUnwrap();
    expect(own).toContainEqual({ type: 'pid' });
    expect(own).toContainEqual({ type: 'network', path: '/run/hcr/netns/pod' });
    const shared = containerNamespaces('pod', 'pod', sandbox)._unsafeUnwrap();
    expect(shared.map((n) => n.type)).not.toContain('pid');
  });

  it('refuses host and target namespaces as unsupported', () => {
    expect(containerNamespaces('node', 'pod', sandbox)._unsafeUnwrapErr().code).toBe('Unsupported');
    expect(containerNamespaces('target', 'pod', sandbox)._unsafeUnwrapErr().code).toBe('Unsupported');
    expect(containerNamespaces('container', 'node', sandbox)._unsafeUnwrapErr().code).toBe('Unsupported');
  });
});

describe('sandboxOciSpec', () => {
  it('runs pause in the pod network namespace, marked as the sandbox', () => {
    const spec = sandboxOciSpec(sandbox, { pauseRootfs: '/run/gv/pause/rootfs', cgroupsPath: null })._unsafeUnwrap();
    expect(spec.process.args).toEqual(['/pause']);
    expect(spec.process.capabilities.effective).toEqual([]);
    expect(spec.root).toEqual({ path: '/run/gv/pause/rootfs', readonly: true });
    expect(spec.hostname).toBe('web-0');
    expect(spec.annotations[CriAnnotation.containerType]).toBe('sandbox');
    expect(spec.annotations[CriAnnotation.sandboxId]).toBe(sandbox.id);
    expect(spec.linux.namespaces).toContainEqual({ type: 'network', path: '/run/hcr/netns/pod' });
    expect(spec.linux.cgroupsPath).toBeUndefined();
  });

  it('refuses a pod without a network namespace', () => {
    const r = sandboxOciSpec(
      { ...sandbox, network: { ...sandbox.network, netnsPath: null } },
      {
        pauseRootfs: '/p',
        cgroupsPath: null,
      },
    );
    expect(r._unsafeUnwrapErr().code).toBe('Unsupported');
  });
});

describe('podResources', () => {
  const limits = containerSpec('x').linux.resources;

  it('is null when nothing is limited', () => {
    expect(podResources(podSpec())).toBeNull();
  });

  it('adds the RuntimeClass overhead to the pod limits', () => {
    const spec = podSpec();
    const r = podResources({
      ...spec,
      linux: {
        ...spec.linux,
        resources: { ...limits, memoryLimitInBytes: 100, cpuQuota: 50_000, cpuPeriod: 100_000, cpuShares: 512 },
        overhead: { ...limits, memoryLimitInBytes: 20, cpuQuota: 10_000, cpuShares: 2 },
      },
    });
    expect(r).toEqual({ memory: { limit: 120 }, cpu: { shares: 514, quota: 60_000, period: 100_000 } });
  });

  it('leaves memory unlimited when the containers are, overhead or not', () => {
    const spec = podSpec();
    const r = podResources({ ...spec, linux: { ...spec.linux, overhead: { ...limits, memoryLimitInBytes: 20 } } });
    expect(r).toBeNull();
  });
});

describe('containerOciSpec', () => {
  it('joins its pod sandbox and runs the resolved command as the resolved user', () => {
    const spec = containerOciSpec(
      input({
        spec: containerSpec('busybox', {
          name: 'app',
          args: ['--port=80'],
          envs: [{ key: 'MODE', value: 'prod' }],
        }),
        user: { uid: 33, gid: 33, additionalGids: [4], home: '/var/www' },
      }),
    )._unsafeUnwrap();
    expect(spec.process.args).toEqual(['/entry', '--port=80']);
    expect(spec.process.user).toEqual({ uid: 33, gid: 33, additionalGids: [4] });
    expect(spec.process.cwd).toBe('/srv');
    expect(spec.process.env).toEqual(['PATH=/usr/bin:/bin', 'LANG=C', 'MODE=prod', 'HOSTNAME=web-0', 'HOME=/var/www']);
    expect([...spec.process.capabilities.bounding].sort()).toEqual([...DEFAULT_CAPABILITIES].sort());
    expect(spec.process.capabilities.inheritable).toEqual([]);
    expect(spec.annotations).toMatchObject({
      [CriAnnotation.containerType]: 'container',
      [CriAnnotation.sandboxId]: sandbox.id,
      [CriAnnotation.containerName]: 'app',
    });
    expect(spec.root).toEqual({ path: '/var/lib/hcr/images/rootfs/c/merged', readonly: false });
  });

  it('mounts the pod files, and lets a CRI mount replace one', () => {
    const plain = containerOciSpec(input())._unsafeUnwrap();
    const byTarget = new Map(plain.mounts.map((m) => [m.destination, m]));
    expect(byTarget.get('/etc/hosts')).toMatchObject({ source: '/run/pod/hosts', type: 'bind' });
    expect(byTarget.get('/etc/resolv.conf')?.source).toBe('/run/pod/resolv.conf');
    expect(byTarget.get('/etc/hostname')?.source).toBe('/run/pod/hostname');
    const mount = { hostPath: '/srv/hosts', readonly: true, propagation: 'private', selinuxRelabel: false } as const;
    const withVolume = containerOciSpec(
      input({ spec: containerSpec('busybox', { mounts: [{ ...mount, containerPath: '/etc/hosts' }] }) }),
    )._unsafeUnwrap();
    const hosts = withVolume.mounts.filter((m) => m.destination === '/etc/hosts');
    expect(hosts).toEqual([
      { destination: '/etc/hosts', type: 'bind', source: '/srv/hosts', options: ['rbind', 'rprivate', 'ro'] },
    ]);
  });

  it('makes the pod files read-only with a read-only root', () => {
    const security = { ...defaultSecurity, readonlyRootfs: true };
    const spec = containerOciSpec(
      input({ spec: containerSpec('busybox', { linux: { resources: containerSpec('x').linux.resources, security } }) }),
    )._unsafeUnwrap();
    expect(spec.root.readonly).toBe(true);
    expect(spec.mounts.find((m) => m.destination === '/etc/resolv.conf')?.options).toContain('ro');
  });

  it('refuses what a sandbox cannot give: host devices, bidirectional propagation', () => {
    const device = containerOciSpec(
      input({
        spec: containerSpec('busybox', {
          devices: [{ containerPath: '/dev/fuse', hostPath: '/dev/fuse', permissions: 'rwm' }],
        }),
      }),
    );
    expect(device._unsafeUnwrapErr().code).toBe('Unsupported');
    const shared = containerOciSpec(
      input({
        spec: containerSpec('busybox', {
          mounts: [
            {
              containerPath: '/data',
              hostPath: '/data',
              readonly: false,
              propagation: 'bidirectional',
              selinuxRelabel: false,
            },
          ],
        }),
      }),
    );
    expect(shared._unsafeUnwrapErr().code).toBe('Unsupported');
    expect(shared._unsafeUnwrapErr().message).toContain('bidirectional');
  });
});

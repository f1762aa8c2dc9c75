import { randomBytes } from 'node:crypto';
import type { ContainerSecurity, ContainerSpec, SandboxSpec } from '../types.js';
import { emptyResources } from '../types.js';

/** A minimal, valid pod spec; override what a test cares about. */
export function podSpec(overrides: Partial<SandboxSpec> & { name?: string } = {}): SandboxSpec {
  const { name, ...rest } = overrides;
  const podName = name ?? `pod-${randomBytes(4).toString('hex')}`;
  return {
    metadata: { name: podName, uid: randomBytes(8).toString('hex'), namespace: 'hcr-test', attempt: 0 },
    hostname: podName,
    logDirectory: '',
    dns: null,
    portMappings: [],
    labels: { 'hcr.io/test': 'conformance' },
    annotations: {},
    runtimeHandler: '',
    linux: {
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
    },
    ...rest,
  };
}

/** Default container security settings (nothing special). */
export const defaultSecurity: ContainerSecurity = {
  privileged: false,
  capabilities: { add: [], drop: [] },
  namespaces: { network: 'pod', pid: 'container', ipc: 'pod', targetId: '' },
  runAsUser: null,
  runAsUsername: '',
  runAsGroup: null,
  supplementalGroups: [],
  readonlyRootfs: false,
  noNewPrivs: false,
  maskedPaths: [],
  readonlyPaths: [],
  seccomp: null,
  apparmor: null,
};

/** A minimal, valid container spec for `image`; override what a test cares about. */
export function containerSpec(
  image: string,
  overrides: Partial<ContainerSpec> & { name?: string } = {},
): ContainerSpec {
  const { name, ...rest } = overrides;
  return {
    metadata: { name: name ?? `c-${randomBytes(4).toString('hex')}`, attempt: 0 },
    image,
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
    linux: { resources: emptyResources, security: defaultSecurity },
    ...rest,
  };
}

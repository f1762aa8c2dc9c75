import type { ContainerSecurity, ContainerSpec, PodMetadata, SandboxSpec } from './types.js';
import { emptyResources } from './types.js';

/** Container security settings with nothing special: what CRI means by an empty security context. */
export const defaultContainerSecurity: ContainerSecurity = Object.freeze<ContainerSecurity>({
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
});

/** A complete, valid pod spec for `metadata` with defaults everywhere else; override what you need. */
export function newSandboxSpec(metadata: PodMetadata, overrides: Partial<SandboxSpec> = {}): SandboxSpec {
  return {
    metadata,
    hostname: metadata.name.slice(0, 63),
    logDirectory: '',
    dns: null,
    portMappings: [],
    labels: {},
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
    ...overrides,
  };
}

/** A complete, valid container spec named `name` running `image` (its own entrypoint); override what you need. */
export function newContainerSpec(name: string, image: string, overrides: Partial<ContainerSpec> = {}): ContainerSpec {
  return {
    metadata: { name, attempt: 0 },
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
    linux: { resources: emptyResources, security: defaultContainerSecurity },
    ...overrides,
  };
}

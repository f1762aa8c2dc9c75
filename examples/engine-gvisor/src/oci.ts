/**
 * The part of the OCI runtime specification (config.json, version 1.0.2) this
 * engine writes. Field names are the spec's own, so the objects serialise to a
 * valid bundle config as they are.
 */

/** `process.user`. */
export interface OciUser {
  readonly uid: number;
  readonly gid: number;
  readonly additionalGids?: readonly number[];
}

/** `process.capabilities`. */
export interface OciCapabilities {
  readonly bounding: readonly string[];
  readonly effective: readonly string[];
  readonly permitted: readonly string[];
  readonly inheritable: readonly string[];
  readonly ambient: readonly string[];
}

/** `process`. */
export interface OciProcess {
  readonly terminal: boolean;
  readonly user: OciUser;
  readonly args: readonly string[];
  readonly env: readonly string[];
  readonly cwd: string;
  readonly capabilities: OciCapabilities;
  readonly noNewPrivileges: boolean;
}

/** One entry of `mounts`. */
export interface OciMount {
  readonly destination: string;
  readonly type: string;
  readonly source: string;
  readonly options?: readonly string[];
}

/** One entry of `linux.namespaces`; a path joins an existing namespace. */
export interface OciNamespace {
  readonly type: 'pid' | 'network' | 'ipc' | 'uts' | 'mount';
  readonly path?: string;
}

/** `linux.resources` (the cgroup v1 subset runsc applies to a sandbox). */
export interface OciResources {
  readonly memory?: { readonly limit?: number; readonly swap?: number };
  readonly cpu?: {
    readonly shares?: number;
    readonly quota?: number;
    readonly period?: number;
    readonly cpus?: string;
    readonly mems?: string;
  };
}

/** `linux`. */
export interface OciLinux {
  readonly namespaces: readonly OciNamespace[];
  readonly cgroupsPath?: string;
  readonly resources?: OciResources;
  readonly maskedPaths?: readonly string[];
  readonly readonlyPaths?: readonly string[];
}

/** A bundle's config.json. */
export interface OciSpec {
  readonly ociVersion: string;
  readonly process: OciProcess;
  readonly root: { readonly path: string; readonly readonly: boolean };
  readonly hostname: string;
  readonly mounts: readonly OciMount[];
  readonly annotations: Readonly<Record<string, string>>;
  readonly linux: OciLinux;
}

/** The OCI runtime spec version the engine writes. */
export const OCI_VERSION = '1.0.2';

/**
 * Annotations runsc reads to put several containers into one sandbox (the
 * names containerd's CRI plugin uses, which runsc understands).
 */
export const CriAnnotation = {
  containerType: 'io.kubernetes.cri.container-type',
  sandboxId: 'io.kubernetes.cri.sandbox-id',
  sandboxName: 'io.kubernetes.cri.sandbox-name',
  sandboxNamespace: 'io.kubernetes.cri.sandbox-namespace',
  sandboxUid: 'io.kubernetes.cri.sandbox-uid',
  containerName: 'io.kubernetes.cri.container-name',
  imageName: 'io.kubernetes.cri.image-name',
} as const;

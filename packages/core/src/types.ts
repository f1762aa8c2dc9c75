/**
 * Domain types shared by core, engines and adapters.
 *
 * They follow the CRI v1 vocabulary but are normalised (defaults filled in, no
 * wire-level optionality) so that engines never see protobuf types.
 */

/** String-keyed labels or annotations. */
export type StringMap = Readonly<Record<string, string>>;

/** Unix time in nanoseconds, as CRI reports timestamps. */
export type Nanos = bigint;

/** Where a pod or container namespace lives (CRI NamespaceMode). */
export type NamespaceMode = 'pod' | 'container' | 'node' | 'target';

/** Which namespaces a pod or container shares. */
export interface NamespaceOptions {
  readonly network: NamespaceMode;
  readonly pid: NamespaceMode;
  readonly ipc: NamespaceMode;
  /** Container id whose namespaces are joined when a mode is `target`. */
  readonly targetId: string;
}

/** Linux resource settings; `0`/empty means "not set". */
export interface LinuxResources {
  readonly cpuPeriod: number;
  readonly cpuQuota: number;
  readonly cpuShares: number;
  readonly memoryLimitInBytes: number;
  readonly oomScoreAdj: number;
  readonly cpusetCpus: string;
  readonly cpusetMems: string;
  readonly memorySwapLimitInBytes: number;
  readonly unified: StringMap;
}

/** A resource set with nothing limited. */
export const emptyResources: LinuxResources = Object.freeze({
  cpuPeriod: 0,
  cpuQuota: 0,
  cpuShares: 0,
  memoryLimitInBytes: 0,
  oomScoreAdj: 0,
  cpusetCpus: '',
  cpusetMems: '',
  memorySwapLimitInBytes: 0,
  unified: {},
});

/** Seccomp / AppArmor profile selection. */
export interface SecurityProfile {
  readonly type: 'runtimeDefault' | 'unconfined' | 'localhost';
  readonly localhostRef: string;
}

/** Pod identity as given by the kubelet. */
export interface PodMetadata {
  readonly name: string;
  readonly uid: string;
  readonly namespace: string;
  readonly attempt: number;
}

/** resolv.conf contents for a pod. */
export interface DnsConfig {
  readonly servers: readonly string[];
  readonly searches: readonly string[];
  readonly options: readonly string[];
}

/** A host port published to a pod port. */
export interface PortMapping {
  readonly protocol: 'tcp' | 'udp' | 'sctp';
  readonly containerPort: number;
  readonly hostPort: number;
  readonly hostIp: string;
}

/** Normalised RunPodSandbox request. */
export interface SandboxSpec {
  readonly metadata: PodMetadata;
  readonly hostname: string;
  /** Absolute directory for container logs, or '' when the kubelet gave none. */
  readonly logDirectory: string;
  readonly dns: DnsConfig | null;
  readonly portMappings: readonly PortMapping[];
  readonly labels: StringMap;
  readonly annotations: StringMap;
  /** RuntimeClass handler ('' = default). */
  readonly runtimeHandler: string;
  readonly linux: {
    readonly cgroupParent: string;
    readonly sysctls: StringMap;
    readonly namespaces: NamespaceOptions;
    readonly privileged: boolean;
    readonly runAsUser: number | null;
    readonly runAsGroup: number | null;
    readonly supplementalGroups: readonly number[];
    readonly readonlyRootfs: boolean;
    readonly seccomp: SecurityProfile | null;
    /** Pod overhead declared by the RuntimeClass. */
    readonly overhead: LinuxResources | null;
    /** Sum of the containers' resources, when the kubelet passes it. */
    readonly resources: LinuxResources | null;
  };
}

/** A CRI mount of a host path into a container. */
export interface Mount {
  readonly containerPath: string;
  readonly hostPath: string;
  readonly readonly: boolean;
  readonly propagation: 'private' | 'hostToContainer' | 'bidirectional';
  readonly selinuxRelabel: boolean;
}

/** A host device made visible in a container. */
export interface Device {
  readonly containerPath: string;
  readonly hostPath: string;
  readonly permissions: string;
}

/** Container-level security settings. */
export interface ContainerSecurity {
  readonly privileged: boolean;
  readonly capabilities: { readonly add: readonly string[]; readonly drop: readonly string[] };
  readonly namespaces: NamespaceOptions;
  readonly runAsUser: number | null;
  readonly runAsUsername: string;
  readonly runAsGroup: number | null;
  readonly supplementalGroups: readonly number[];
  readonly readonlyRootfs: boolean;
  readonly noNewPrivs: boolean;
  readonly maskedPaths: readonly string[];
  readonly readonlyPaths: readonly string[];
  readonly seccomp: SecurityProfile | null;
  readonly apparmor: SecurityProfile | null;
}

/** Normalised CreateContainer request. */
export interface ContainerSpec {
  readonly metadata: { readonly name: string; readonly attempt: number };
  /** The image as the user named it (normalised reference or id). */
  readonly image: string;
  readonly command: readonly string[];
  readonly args: readonly string[];
  readonly workingDir: string;
  readonly envs: readonly { readonly key: string; readonly value: string }[];
  readonly mounts: readonly Mount[];
  readonly devices: readonly Device[];
  readonly labels: StringMap;
  readonly annotations: StringMap;
  /** Log path relative to the sandbox's log directory ('' = no log file). */
  readonly logPath: string;
  readonly stdin: boolean;
  readonly stdinOnce: boolean;
  readonly tty: boolean;
  readonly linux: { readonly resources: LinuxResources; readonly security: ContainerSecurity };
}

/** What an image's config says about how to run it. */
export interface ImageConfig {
  readonly entrypoint: readonly string[];
  readonly cmd: readonly string[];
  readonly env: readonly string[];
  readonly workingDir: string;
  readonly user: string;
  readonly exposedPorts: readonly string[];
  readonly labels: StringMap;
  /** Manifest and config annotations merged (config wins). */
  readonly annotations: StringMap;
}

/** An image known to the image service. */
export interface ImageInfo {
  /** `sha256:<config digest>` — also Docker's image id. */
  readonly id: string;
  readonly repoTags: readonly string[];
  readonly repoDigests: readonly string[];
  readonly size: number;
  readonly config: ImageConfig;
  /** Whether the image is a unikernel image (urunc annotations present). */
  readonly kind: 'oci' | 'unikernel';
  /** Set when `pinned` images must survive garbage collection (e.g. the pause image). */
  readonly pinned: boolean;
}

/** CRI sandbox states. */
export type SandboxState = 'ready' | 'notready';

/** CRI container states. */
export type ContainerState = 'created' | 'running' | 'exited' | 'unknown';

/** One network interface of a pod as CNI reported it. */
export interface PodInterface {
  readonly name: string;
  readonly mac: string;
  /** CIDR addresses, e.g. `10.88.0.5/16`. */
  readonly addresses: readonly string[];
}

/** The network a pod got from core (CNI), shared by every engine. */
export interface PodNetwork {
  /** Bind-mounted network namespace path; null for host network. */
  readonly netnsPath: string | null;
  /** Pod IPs, primary first (no prefix length). */
  readonly ips: readonly string[];
  readonly interfaces: readonly PodInterface[];
  /** Default gateway, when CNI gave one. */
  readonly gateway: string | null;
  /** The raw CNI result, for engines that need more. */
  readonly cniResult: unknown;
}

/** Terminal size for TTY streams. */
export interface TerminalSize {
  readonly width: number;
  readonly height: number;
}

/** Filesystem usage, as ImageFsInfo and stats report it. */
export interface FilesystemUsage {
  readonly mountpoint: string;
  readonly usedBytes: number;
  readonly inodesUsed: number;
}

/** Container resource usage sample. */
export interface ContainerStats {
  readonly timestamp: Nanos;
  readonly cpuUsageCoreNanoSeconds: bigint;
  readonly memoryWorkingSetBytes: number;
  readonly memoryUsageBytes: number;
  readonly writableLayerBytes: number;
}

/** Pod resource usage sample. */
export interface SandboxStats {
  readonly timestamp: Nanos;
  readonly cpuUsageCoreNanoSeconds: bigint;
  readonly memoryWorkingSetBytes: number;
  readonly memoryUsageBytes: number;
  readonly network: { readonly rxBytes: number; readonly txBytes: number } | null;
  readonly processes: number;
}

/** Current Unix time in nanoseconds. */
export function nowNanos(): Nanos {
  return BigInt(Date.now()) * 1_000_000n + (process.hrtime.bigint() % 1_000_000n);
}

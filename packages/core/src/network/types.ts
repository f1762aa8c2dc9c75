import type { Duplex } from 'node:stream';
import type { ResultAsync } from 'neverthrow';
import type { HcrError } from '../errors.js';
import type { PodNetwork, SandboxSpec, StringMap } from '../types.js';

/** Network readiness, reported as the CRI `NetworkReady` condition. */
export interface NetworkReadiness {
  readonly ready: boolean;
  readonly reason: string;
  readonly message: string;
}

/**
 * Pod networking, shared by every engine: HCR makes the network namespace and
 * runs CNI in it itself, once per pod, whatever engine runs the pod.
 */
export interface NetworkManager {
  /** Creates (or finds) the pod's network namespace, bind-mounted under the runtime dir; returns its path. */
  createNetns(sandboxId: string): ResultAsync<string, HcrError>;
  /** CNI ADD with the first conflist; applies the pod's `net.*` sysctls first. */
  attach(sandboxId: string, netnsPath: string, spec: SandboxSpec): ResultAsync<PodNetwork, HcrError>;
  /** CNI CHECK. */
  check(sandboxId: string, netnsPath: string, spec: SandboxSpec, network: PodNetwork): ResultAsync<void, HcrError>;
  /**
   * CNI DEL; succeeds when there is nothing to delete. `lastNetwork` is the
   * network ADD returned, from the caller's own record: DEL hands its result to
   * the plugins when HCR's CNI cache is lost (some, like firewall, need it).
   */
  detach(
    sandboxId: string,
    netnsPath: string | null,
    spec: SandboxSpec,
    lastNetwork?: PodNetwork | null,
  ): ResultAsync<void, HcrError>;
  /** Unmounts and removes the namespace file; succeeds when it is already gone. */
  removeNetns(netnsPath: string): ResultAsync<void, HcrError>;
  /** Opens a TCP connection to `127.0.0.1:port` inside the namespace. */
  connect(netnsPath: string, port: number): ResultAsync<Duplex, HcrError>;
  /** Whether a CNI config and its plugins are present. */
  readiness(): NetworkReadiness;
  /** Paths of namespaces under the runtime dir, for leak checks and reconciliation. */
  listNetns(): ResultAsync<readonly string[], HcrError>;
}

/** Options for the CNI-backed network manager. */
export interface CniOptions {
  /** Directory with CNI network configs (default `/etc/cni/net.d`). */
  readonly confDir: string;
  /** Directories searched for plugin binaries (default `/usr/lib/cni`, `/opt/cni/bin`). */
  readonly binDirs: readonly string[];
  /** Where namespaces are bind-mounted (default `/run/hcr/netns`). */
  readonly netnsDir: string;
  /** Where CNI results are cached (default `/var/lib/hcr/cni`). */
  readonly cacheDir: string;
}

/** Pod sysctls that apply to the network namespace (dotted or, as Kubernetes also allows, slashed names). */
export function networkSysctls(sysctls: StringMap): Record<string, string> {
  return Object.fromEntries(Object.entries(sysctls).filter(([k]) => k.startsWith('net.') || k.startsWith('net/')));
}

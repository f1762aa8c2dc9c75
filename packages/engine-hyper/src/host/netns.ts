import {
  connectTapToPodInterface,
  disconnectTapFromPodInterface,
  podInterfaceLink,
  type HcrError,
  type PodInterfaceLink,
  type ResultAsync,
} from '@hcr/core';

/** The TAP device the engine adds to every pod network namespace. */
export const TAP_NAME = 'hcrtap0';

/** MAC and MTU of `ifname` in the namespace (the CNI interface the guest NIC impersonates). */
export function linkInfo(netnsPath: string, ifname: string): ResultAsync<PodInterfaceLink, HcrError> {
  return podInterfaceLink(netnsPath, ifname);
}

/**
 * Connects the pod's TAP to its CNI interface (core's tc mirred plumbing, in
 * one `ip -batch` and one `tc -batch`), replacing what a half-made earlier
 * attempt left. QEMU opens the TAP by name later.
 */
export function connectTap(netnsPath: string, ifname: string, mtu: number): ResultAsync<void, HcrError> {
  return connectTapToPodInterface(netnsPath, { tapName: TAP_NAME, ifname, mtu }).map(() => undefined);
}

/** Removes the TAP and the redirect on `ifname`; succeeds when either (or the namespace) is already gone. */
export function disconnectTap(netnsPath: string, ifname: string): ResultAsync<void, HcrError> {
  return disconnectTapFromPodInterface(netnsPath, { tapName: TAP_NAME, ifname });
}

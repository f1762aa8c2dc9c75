import {
  connectTapToPodInterface,
  disconnectTapFromPodInterface,
  type HcrError,
  type PodInterfaceLink,
  type ResultAsync,
} from '@hcr/core';

/** The TAP device the engine adds to every pod network namespace. */
export const TAP_NAME = 'hcrtap0';

/**
 * Connects the TAP QEMU made when it started (the VM boots while CNI ADD
 * runs) to the pod's CNI interface: core's tc mirred plumbing, in one
 * `ip -batch` that sets the TAP's MTU and brings it up and one `tc -batch`.
 * Resolves with the MAC and MTU the guest NIC must take.
 */
export function connectTap(netnsPath: string, ifname: string): ResultAsync<PodInterfaceLink, HcrError> {
  return connectTapToPodInterface(netnsPath, { tapName: TAP_NAME, ifname, existingTap: true }).map((c) => ({
    mac: c.mac,
    mtu: c.mtu,
  }));
}

/** Removes the TAP and the redirect on `ifname`; succeeds when either (or the namespace) is already gone. */
export function disconnectTap(netnsPath: string, ifname: string): ResultAsync<void, HcrError> {
  return disconnectTapFromPodInterface(netnsPath, { tapName: TAP_NAME, ifname });
}

import { isIPv4 } from 'node:net';
import type { PodNetwork } from '@hcr/core';
import type { GuestNetwork } from './cmdline.js';

/** The pod interface the guest takes over, and the IPv4 settings CNI gave it. */
export interface PodAttachment {
  readonly ifname: string;
  readonly guest: GuestNetwork;
}

/**
 * Picks the CNI interface and address the guest gets: the pod's primary IPv4
 * on `eth0` (or whichever interface carries it). Null when the pod has no
 * IPv4 address — the VM then boots without a NIC.
 */
export function podAttachment(network: PodNetwork, dns: readonly string[]): PodAttachment | null {
  const ip = network.ips.find((a) => isIPv4(a));
  if (ip === undefined) return null;
  const candidates = [...network.interfaces].sort((a, b) => (a.name === 'eth0' ? -1 : b.name === 'eth0' ? 1 : 0));
  for (const itf of candidates) {
    for (const cidr of itf.addresses) {
      const [addr, prefix] = cidr.split('/');
      if (addr === ip) {
        return {
          ifname: itf.name,
          guest: {
            ip,
            prefixLength: prefix === undefined ? 32 : Number(prefix),
            gateway: network.gateway !== null && isIPv4(network.gateway) ? network.gateway : '',
            dns: dns.find((d) => isIPv4(d)) ?? '',
          },
        };
      }
    }
  }
  return { ifname: 'eth0', guest: { ip, prefixLength: 32, gateway: network.gateway ?? '', dns: '' } };
}

/** TAP name of a container: unique within its pod, recognisable as HCR's. */
export function tapName(containerId: string): string {
  return `uk${containerId.slice(0, 12)}`;
}

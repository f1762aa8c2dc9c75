import { execFile } from 'node:child_process';
import { isIPv4 } from 'node:net';
import { promisify } from 'node:util';
import type { PodNetwork } from '@hcr/core';
import type { GuestNetwork } from './cmdline.js';
import type { GuestNic } from './monitor.js';

const run = promisify(execFile);
const NETNS_TIMEOUT_MS = 10_000;

/** Runs `argv` inside the network namespace bind-mounted at `netnsPath`. */
export async function inNetns(netnsPath: string, argv: readonly string[]): Promise<string> {
  const { stdout } = await run('nsenter', [`--net=${netnsPath}`, '--', ...argv], { timeout: NETNS_TIMEOUT_MS });
  return stdout;
}

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

/**
 * Creates the container's TAP in the pod netns and joins it to the CNI
 * interface with tc: everything arriving on one is redirected out of the
 * other, both ways, so the guest (which takes the interface's MAC) is the
 * pod on the wire. Replaces a leftover TAP of the same name.
 */
export async function attachTap(netnsPath: string, ifname: string, tap: string): Promise<GuestNic> {
  await detachTap(netnsPath, ifname, tap);
  const [link] = JSON.parse(await inNetns(netnsPath, ['ip', '-j', 'link', 'show', 'dev', ifname])) as {
    address: string;
    mtu: number;
  }[];
  if (link === undefined) throw new Error(`interface ${ifname} not found in ${netnsPath}`);
  const steps: string[][] = [
    ['ip', 'tuntap', 'add', 'dev', tap, 'mode', 'tap'],
    ['ip', 'link', 'set', 'dev', tap, 'mtu', String(link.mtu), 'up'],
    ['tc', 'qdisc', 'add', 'dev', ifname, 'ingress'],
    [
      'tc',
      'filter',
      'add',
      'dev',
      ifname,
      'parent',
      'ffff:',
      'protocol',
      'all',
      'u32',
      'match',
      'u32',
      '0',
      '0',
      'action',
      'mirred',
      'egress',
      'redirect',
      'dev',
      tap,
    ],
    ['tc', 'qdisc', 'add', 'dev', tap, 'ingress'],
    [
      'tc',
      'filter',
      'add',
      'dev',
      tap,
      'parent',
      'ffff:',
      'protocol',
      'all',
      'u32',
      'match',
      'u32',
      '0',
      '0',
      'action',
      'mirred',
      'egress',
      'redirect',
      'dev',
      ifname,
    ],
  ];
  try {
    for (const step of steps) await inNetns(netnsPath, step);
  } catch (e) {
    await detachTap(netnsPath, ifname, tap);
    throw e;
  }
  return { tap, mac: link.address, mtu: link.mtu };
}

/** Removes the TAP and the redirect on the CNI interface; a missing netns or device is not an error. */
export async function detachTap(netnsPath: string, ifname: string, tap: string): Promise<void> {
  await inNetns(netnsPath, ['ip', 'link', 'del', 'dev', tap]).catch(() => undefined);
  await inNetns(netnsPath, ['tc', 'qdisc', 'del', 'dev', ifname, 'ingress']).catch(() => undefined);
}

/** Names of the links in a netns (for leak checks). */
export async function netnsLinks(netnsPath: string): Promise<string[]> {
  const links = JSON.parse(await inNetns(netnsPath, ['ip', '-j', 'link', 'show'])) as { ifname: string }[];
  return links.map((l) => l.ifname);
}

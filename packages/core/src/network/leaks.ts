import { readdir, readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { basename, join } from 'node:path';
import { ResultAsync } from 'neverthrow';
import { type HcrError, toHcrError } from '../errors.js';
import { readNetworkConfigs } from './config.js';
import { hostTool, runTool } from './exec.js';
import { isNamespaceFile } from './netns.js';
import { resolveCniOptions } from './options.js';
import type { CniOptions } from './types.js';

/** What {@link networkLeaks} found; every list is empty when no pod network is left behind. */
export interface NetworkLeaks {
  /** Entries of the namespace directory: mounted namespaces and stale files alike. */
  readonly netns: readonly string[];
  /** Host veths on a bridge of the CNI configs whose peer is in no namespace of the directory. */
  readonly veths: readonly string[];
  /** host-local reservation files whose owner (a sandbox id) has no namespace in the directory. */
  readonly ipAllocations: readonly string[];
}

/** Where host-local keeps reservations when the config names no `dataDir`. */
const HOST_LOCAL_DEFAULT_DATA_DIR = '/var/lib/cni/networks';
/** The bridge plugin's default bridge name. */
const BRIDGE_DEFAULT = 'cni0';

interface IpLink {
  readonly ifindex: number;
  readonly ifname: string;
  readonly master?: string;
  readonly link_index?: number;
  readonly link_netnsid?: number;
}

function parseLinks(json: string): IpLink[] {
  const v: unknown = JSON.parse(json === '' ? '[]' : json);
  return Array.isArray(v) ? (v as IpLink[]) : [];
}

async function liveNamespaces(entries: readonly string[]): Promise<Map<string, string>> {
  const live = new Map<string, string>();
  for (const path of entries) if (await isNamespaceFile(path)) live.set(basename(path), path);
  return live;
}

/** Host ifindexes of the veth peers inside the live namespaces. */
async function peerIndexes(live: ReadonlyMap<string, string>, timeoutMs: number): Promise<Set<number>> {
  const peers = new Set<number>();
  for (const path of live.values()) {
    const out = await runTool(
      'nsenter',
      [`--net=${path}`, '--', hostTool('ip'), '-j', 'link', 'show'],
      'listing links',
      timeoutMs,
    );
    // A namespace removed while we look has no peers to protect.
    if (out.isErr()) continue;
    for (const l of parseLinks(out.value))
      if (l.link_netnsid !== undefined && l.link_index !== undefined) peers.add(l.link_index);
  }
  return peers;
}

async function hostLocalLeaks(dir: string, live: ReadonlyMap<string, string>): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  const leaks: string[] = [];
  // Reservation files are named by the IP and begin with the owner's container id.
  for (const name of names.filter((n) => isIP(n) !== 0)) {
    const file = join(dir, name);
    const owner = (await readFile(file, 'utf8').catch(() => '')).split(/\r?\n/)[0]?.trim() ?? '';
    if (!live.has(owner)) leaks.push(file);
  }
  return leaks;
}

/**
 * Looks for pod networking left behind, relative to the namespaces that exist
 * under `netnsDir`: stale or leftover namespace files, host veths on the CNI
 * configs' bridges whose peer is not in one of those namespaces, and host-local
 * IP reservations whose owner has none. Tests call it after cleaning up, with
 * the options they ran with; reconciliation can call it at startup.
 */
export function networkLeaks(
  options: Partial<CniOptions> = {},
  timeoutMs = 10_000,
): ResultAsync<NetworkLeaks, HcrError> {
  const o = resolveCniOptions(options);
  return ResultAsync.fromPromise(
    (async (): Promise<NetworkLeaks> => {
      const netns = (await readdir(o.netnsDir).catch(() => [] as string[]))
        .filter((n) => !n.startsWith('.'))
        .map((n) => join(o.netnsDir, n))
        .sort();
      const live = await liveNamespaces(netns);
      const { configs } = readNetworkConfigs(o.confDir);

      const bridges = new Set<string>();
      const hostLocalDirs = new Set<string>();
      for (const conf of configs) {
        for (const p of conf.plugins) {
          if (p.type === 'bridge') bridges.add(typeof p['bridge'] === 'string' ? p['bridge'] : BRIDGE_DEFAULT);
          const ipam = p['ipam'] as Record<string, unknown> | undefined;
          if (ipam?.['type'] === 'host-local') {
            const dataDir = typeof ipam['dataDir'] === 'string' ? ipam['dataDir'] : HOST_LOCAL_DEFAULT_DATA_DIR;
            hostLocalDirs.add(join(dataDir, conf.name));
          }
        }
      }

      const veths: string[] = [];
      if (bridges.size > 0) {
        const hostLinks = await runTool('ip', ['-j', '-d', 'link', 'show', 'type', 'veth'], 'listing veths', timeoutMs);
        if (hostLinks.isErr()) throw hostLinks.error;
        const peers = await peerIndexes(live, timeoutMs);
        for (const l of parseLinks(hostLinks.value)) {
          const onBridge = l.master !== undefined && bridges.has(l.master);
          if (onBridge && l.link_netnsid !== undefined && !peers.has(l.ifindex)) veths.push(l.ifname);
        }
      }

      const ipAllocations: string[] = [];
      for (const dir of hostLocalDirs) ipAllocations.push(...(await hostLocalLeaks(dir, live)));

      return { netns, veths: veths.sort(), ipAllocations: ipAllocations.sort() };
    })(),
    (e) => toHcrError(e, 'looking for leaked pod networking'),
  );
}

import { isIP } from 'node:net';
import { err, ok, type Result } from 'neverthrow';
import type { PodInterface, PodNetwork } from '../types.js';

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** An address of a result, normalised across result versions. */
interface ResultIp {
  /** CIDR, e.g. `10.88.0.5/16`. */
  readonly address: string;
  readonly gateway: string | null;
  /** Index into the result's `interfaces`, or null when the plugin gave none. */
  readonly iface: number | null;
}

function cidrAddress(cidr: unknown): string | null {
  if (typeof cidr !== 'string') return null;
  const slash = cidr.indexOf('/');
  const addr = slash < 0 ? cidr : cidr.slice(0, slash);
  return isIP(addr) === 0 ? null : addr;
}

function optionalIp(v: unknown): string | null {
  return typeof v === 'string' && isIP(v) !== 0 ? v : null;
}

/** Reads the addresses of a 0.3.0+ result (`ips`) or a 0.1/0.2 result (`ip4`/`ip6`). */
function resultIps(result: Record<string, unknown>): Result<ResultIp[], string> {
  const ips: ResultIp[] = [];
  if (result['ips'] !== undefined) {
    if (!Array.isArray(result['ips'])) return err('"ips" is not a list');
    for (const [i, entry] of result['ips'].entries()) {
      if (!isRecord(entry) || cidrAddress(entry['address']) === null) {
        return err(`ips[${i}] has no valid "address"`);
      }
      const idx = entry['interface'];
      ips.push({
        address: entry['address'] as string,
        gateway: optionalIp(entry['gateway']),
        iface: typeof idx === 'number' && Number.isInteger(idx) && idx >= 0 ? idx : null,
      });
    }
  }
  for (const key of ['ip4', 'ip6']) {
    const legacy = result[key];
    if (legacy === undefined) continue;
    if (!isRecord(legacy) || cidrAddress(legacy['ip']) === null) return err(`"${key}" has no valid "ip"`);
    ips.push({ address: legacy['ip'] as string, gateway: optionalIp(legacy['gateway']), iface: null });
  }
  return ok(ips);
}

/** The next hop of the result's default route for the primary IP's family, when the IP config named none. */
function defaultRouteGateway(result: Record<string, unknown>, primary: string | undefined): string | null {
  if (primary === undefined || !Array.isArray(result['routes'])) return null;
  const dst = isIP(primary) === 6 ? '::/0' : '0.0.0.0/0';
  for (const r of result['routes']) {
    if (isRecord(r) && r['dst'] === dst) {
      const gw = optionalIp(r['gw']);
      if (gw !== null) return gw;
    }
  }
  return null;
}

/**
 * Turns the final CNI ADD result into the {@link PodNetwork} engines see.
 *
 * Pod interfaces are the ones the plugins placed in the sandbox. The primary IP
 * is the first IPv4 address of `ifName` (IPv6 after it), as the kubelet expects
 * the first pod IP to be; addresses the plugins did not tie to an interface are
 * counted as `ifName`'s, which is where CNI put them.
 */
export function podNetworkFromResult(result: unknown, netnsPath: string, ifName: string): Result<PodNetwork, string> {
  if (!isRecord(result)) return err('the result is not a JSON object');
  const ipsResult = resultIps(result);
  if (ipsResult.isErr()) return err(ipsResult.error);
  const ips = ipsResult.value;

  const rawIfaces = result['interfaces'];
  if (rawIfaces !== undefined && !Array.isArray(rawIfaces)) return err('"interfaces" is not a list');
  const all = (rawIfaces ?? []).map((x) => (isRecord(x) ? x : {}));
  for (const [i, x] of all.entries()) {
    if (typeof x['name'] !== 'string' || x['name'] === '') return err(`interfaces[${i}] has no "name"`);
  }

  const interfaces: PodInterface[] = [];
  const indexOf = new Map<number, number>();
  for (const [i, x] of all.entries()) {
    if (typeof x['sandbox'] !== 'string' || x['sandbox'] === '') continue;
    indexOf.set(i, interfaces.length);
    interfaces.push({ name: x['name'] as string, mac: typeof x['mac'] === 'string' ? x['mac'] : '', addresses: [] });
  }
  let main = interfaces.findIndex((x) => x.name === ifName);
  const unbound = ips.filter((ip) => ip.iface === null);
  if (main < 0 && unbound.length > 0) {
    main = interfaces.length;
    interfaces.push({ name: ifName, mac: '', addresses: [] });
  }
  const addresses = interfaces.map(() => [] as string[]);
  const gateways = interfaces.map(() => [] as (string | null)[]);
  for (const ip of ips) {
    const at = ip.iface === null ? main : indexOf.get(ip.iface);
    if (at === undefined || at < 0) continue; // an address on a host-side interface
    addresses[at]?.push(ip.address);
    gateways[at]?.push(ip.gateway);
  }

  // Primary interface first, then the others in result order; IPv4 before IPv6 within each.
  const order = [...interfaces.keys()].sort((a, b) => (a === main ? -1 : b === main ? 1 : a - b));
  const podIps: { ip: string; gateway: string | null; v: number }[] = [];
  for (const i of order) {
    for (const [j, cidr] of (addresses[i] ?? []).entries()) {
      const ip = cidrAddress(cidr) as string;
      podIps.push({ ip, gateway: gateways[i]?.[j] ?? null, v: isIP(ip) });
    }
  }
  const primaryIface = order[0] === undefined ? [] : (addresses[order[0]] ?? []);
  const sorted = [
    ...podIps.slice(0, primaryIface.length).sort((a, b) => a.v - b.v),
    ...podIps.slice(primaryIface.length),
  ];
  const unique = [...new Map(sorted.map((p) => [p.ip, p])).values()];

  return ok({
    netnsPath,
    ips: unique.map((p) => p.ip),
    interfaces: interfaces.map((x, i) => ({ ...x, addresses: addresses[i] ?? [] })),
    gateway: unique[0]?.gateway ?? defaultRouteGateway(result, unique[0]?.ip),
    cniResult: result,
  });
}

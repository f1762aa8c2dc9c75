import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** One private pod network: its own bridge, subnet and IPAM dir, so runtimes never share addresses. */
export interface BenchNetwork {
  readonly name: string;
  readonly bridge: string;
  /** CIDR, e.g. `10.231.0.0/16` (a /16: density runs hold a few hundred pods). */
  readonly subnet: string;
  readonly confDir: string;
  readonly ipamDir: string;
}

/**
 * Writes the conflist both runtimes get: the one the containerd baseline was
 * measured with (bridge + host-local + portmap + firewall; the firewall
 * plugin opens FORWARD, which dockerd sets to DROP). Identical plugins on
 * both sides keep CNI cost out of the comparison.
 */
export function writeConflist(dir: string, name: string, bridge: string, subnet: string): BenchNetwork {
  const confDir = join(dir, 'net.d');
  const ipamDir = join(dir, 'ipam');
  mkdirSync(confDir, { recursive: true });
  mkdirSync(ipamDir, { recursive: true });
  writeFileSync(
    join(confDir, '10-bench.conflist'),
    JSON.stringify(
      {
        cniVersion: '1.0.0',
        name,
        plugins: [
          {
            type: 'bridge',
            bridge,
            isGateway: true,
            ipMasq: true,
            hairpinMode: true,
            ipam: {
              type: 'host-local',
              dataDir: ipamDir,
              ranges: [[{ subnet }]],
              routes: [{ dst: '0.0.0.0/0' }],
            },
          },
          { type: 'portmap', capabilities: { portMappings: true }, snat: true },
          { type: 'firewall' },
        ],
      },
      null,
      2,
    ),
  );
  return { name, bridge, subnet, confDir, ipamDir };
}

/** Deletes a bench bridge (after its pods are gone); absent is fine. */
export function deleteBridge(bridge: string): void {
  try {
    execFileSync('ip', ['link', 'del', bridge], { stdio: 'ignore' });
  } catch {
    // never created, or already gone
  }
}

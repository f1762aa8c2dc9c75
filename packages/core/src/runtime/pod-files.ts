import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { PodNetwork, SandboxSpec } from '../types.js';

/** Paths of the per-pod files every container mounts. */
export interface PodFiles {
  readonly hosts: string;
  readonly resolvConf: string;
  readonly hostname: string;
}

/** The pod file paths under a sandbox's runtime dir. */
export function podFilePaths(runtimeDir: string): PodFiles {
  return {
    hosts: join(runtimeDir, 'hosts'),
    resolvConf: join(runtimeDir, 'resolv.conf'),
    hostname: join(runtimeDir, 'hostname'),
  };
}

/**
 * Writes `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname` for a pod, the
 * same for every engine. Host-network pods get the host's resolv.conf unless the
 * kubelet gave DNS settings.
 */
export function writePodFiles(
  runtimeDir: string,
  spec: SandboxSpec,
  network: PodNetwork,
  hostResolv: string,
): PodFiles {
  mkdirSync(runtimeDir, { recursive: true, mode: 0o711 });
  const files = podFilePaths(runtimeDir);
  const hostname = spec.hostname !== '' ? spec.hostname : spec.metadata.name.slice(0, 63);
  const hosts = [
    '127.0.0.1\tlocalhost',
    '::1\tlocalhost ip6-localhost ip6-loopback',
    'fe00::0\tip6-localnet',
    'fe00::1\tip6-allnodes',
    'fe00::2\tip6-allrouters',
  ];
  for (const ip of network.ips) hosts.push(`${ip}\t${hostname}`);
  writeFileSync(files.hosts, hosts.join('\n') + '\n', { mode: 0o644 });
  const dns = spec.dns;
  const resolv =
    dns !== null && (dns.servers.length > 0 || dns.searches.length > 0 || dns.options.length > 0)
      ? [
          ...dns.servers.map((s) => `nameserver ${s}`),
          ...(dns.searches.length > 0 ? [`search ${dns.searches.join(' ')}`] : []),
          ...(dns.options.length > 0 ? [`options ${dns.options.join(' ')}`] : []),
        ].join('\n') + '\n'
      : hostResolv;
  writeFileSync(files.resolvConf, resolv, { mode: 0o644 });
  writeFileSync(files.hostname, hostname + '\n', { mode: 0o644 });
  return files;
}

import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CniNetworkManager,
  networkLeaks,
  OciImageService,
  silentLogger,
  type EngineContext,
  type RuntimeEngine,
} from '@hcr/core';
import type { ConformanceHarness, Workload } from '@hcr/core/testing';
import { registration } from '../src/index.js';

/** The local registry every test image comes from (see test/fixtures/build-images.sh). */
export const BUSYBOX = '127.0.0.1:5000/hcr-test/busybox:latest';
/** busybox httpd serving /www on :80. */
export const HTTPD = '127.0.0.1:5000/hcr-test/httpd:latest';

/** This package's own CNI network, so its pods never meet other suites' pods. */
export const BRIDGE = 'hcrgv0';
export const SUBNET = '10.97.0.0/24';

/** What the busybox image can be told to do. */
export const busyboxWorkload: Workload = {
  image: BUSYBOX,
  longRunning: { command: ['sleep', '3600'], args: [] },
  echo: (text) => ({ command: ['echo', text], args: [] }),
  exitWith: (code) => ({ command: ['sh', '-c', `exit ${code}`], args: [] }),
};

/** A conformance harness plus what the package's own tests look at. */
export interface GvisorHarness extends ConformanceHarness {
  readonly dir: string;
  /** runsc's state directory. */
  readonly runscRoot: string;
  readonly cniOptions: { confDir: string; netnsDir: string; cacheDir: string };
  /** Creates another engine over the same directories (an HCR restart). */
  reopenEngine(): Promise<RuntimeEngine>;
}

/** Writes the test conflist: bridge, host-local IPAM in the test dir, firewall (dockerd drops forwarding). */
function writeConflist(confDir: string, dataDir: string): void {
  mkdirSync(confDir, { recursive: true });
  writeFileSync(
    join(confDir, '10-gvisor-test.conflist'),
    JSON.stringify({
      cniVersion: '1.0.0',
      name: 'hcr-gvisor-test',
      plugins: [
        {
          type: 'bridge',
          bridge: BRIDGE,
          isGateway: true,
          ipMasq: false,
          hairpinMode: true,
          ipam: { type: 'host-local', ranges: [[{ subnet: SUBNET }]], routes: [{ dst: '0.0.0.0/0' }], dataDir },
        },
        { type: 'firewall' },
      ],
    }),
  );
}

/**
 * The real thing, all in a private temp dir: runsc, the CNI network manager
 * on its own bridge, and the OCI image service pulling from the local registry.
 */
export async function gvisorHarness(): Promise<GvisorHarness> {
  const dir = mkdtempSync(join(tmpdir(), 'hcr-gvisor-'));
  const cniOptions = { confDir: join(dir, 'cni'), netnsDir: join(dir, 'netns'), cacheDir: join(dir, 'cni-cache') };
  writeConflist(cniOptions.confDir, join(dir, 'ipam'));
  const network = new CniNetworkManager(cniOptions);
  const opened = await OciImageService.open({ root: join(dir, 'images') });
  if (opened.isErr()) throw opened.error;
  const images = opened.value;
  const context: EngineContext = {
    name: 'gvisor',
    logger: silentLogger,
    runtimeDir: join(dir, 'run'),
    stateDir: join(dir, 'state'),
    images,
  };
  const config = registration.configSchema.parse({});
  if (!config.ok) throw new Error(config.error);
  const create = async (): Promise<RuntimeEngine> => {
    const engine = await registration.create(config.value, context);
    if (engine.isErr()) throw engine.error;
    return engine.value;
  };
  let engine = await create();
  const runscRoot = join(context.runtimeDir, 'runsc');
  const harness: GvisorHarness = {
    get engine() {
      return engine;
    },
    images,
    network,
    workload: busyboxWorkload,
    dir,
    runscRoot,
    cniOptions,
    async reopenEngine() {
      await engine.close();
      engine = await create();
      return engine;
    },
    async leaks() {
      const found: string[] = [];
      const listed = execFileSync('runsc', [`--root=${runscRoot}`, 'list', '--quiet'], { encoding: 'utf8' }).trim();
      if (listed !== '') found.push(`runsc containers: ${listed.split('\n').join(' ')}`);
      const procs = runscProcessesUnder(dir);
      if (procs.length > 0) found.push(`runsc processes: ${procs.join(' ')}`);
      const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
        .split('\n')
        .map((l) => l.split(' ')[4] ?? '')
        .filter((m) => m.startsWith(dir) && m !== cniOptions.netnsDir);
      if (mounts.length > 0) found.push(`mounts: ${mounts.join(' ')}`);
      for (const kind of ['sandboxes', 'containers']) {
        const left = readdirOr(join(context.runtimeDir, kind));
        if (left.length > 0) found.push(`engine ${kind}: ${left.join(' ')}`);
      }
      const net = await networkLeaks(cniOptions);
      if (net.isErr()) throw net.error;
      const { netns, veths, ipAllocations } = net.value;
      if (netns.length + veths.length + ipAllocations.length > 0) {
        found.push(`network: ${JSON.stringify(net.value)}`);
      }
      const cgroups = readdirOr('/sys/fs/cgroup/memory/hcr-gvisor').filter((n) => /^[0-9a-f]{64}$/.test(n));
      if (cgroups.length > 0) found.push(`pod cgroups: ${cgroups.join(' ')}`);
      return found;
    },
    async close() {
      await engine.close();
      // The network manager makes its netns dir a mount point (as `ip netns` does).
      spawnSync('umount', ['--lazy', cniOptions.netnsDir], { stdio: 'ignore' });
      spawnSync('ip', ['link', 'del', BRIDGE], { stdio: 'ignore' });
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return harness;
}

function readdirOr(path: string): string[] {
  try {
    return readdirSync(path);
  } catch {
    return [];
  }
}

/** runsc processes (sandboxes, gofers, waits) whose command line mentions `dir`. */
export function runscProcessesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const pid of readdirOr('/proc').filter((p) => /^\d+$/.test(p))) {
    let cmdline: string;
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      continue;
    }
    if (cmdline.startsWith('runsc') && cmdline.includes(dir)) out.push(`${pid}:${cmdline.split('\0')[0]}`);
  }
  return out;
}

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFileSync, spawnSync } from 'node:child_process';
import { criClient, type CriClient } from '../../src/client.js';

const here = dirname(fileURLToPath(import.meta.url));
/** Repository root. */
export const repoRoot = resolve(here, '../../../..');

/** The local registry every test image comes from. */
export const REGISTRY = '127.0.0.1:5000';
/** The default test image: busybox with applets in /bin. */
export const BUSYBOX = `${REGISTRY}/hcr-test/busybox:latest`;
/** busybox httpd serving /www on :80. */
export const HTTPD = `${REGISTRY}/hcr-test/httpd:latest`;

/** Options of {@link startShim}. */
export interface ShimOptions {
  /** Extra TOML appended to the generated config. */
  readonly extraConfig?: string;
  /** Engines to enable (default: docker only). */
  readonly engines?: readonly string[];
  readonly defaultEngine?: string;
  /** Environment for the shim (e.g. HCR_FAULT). */
  readonly env?: Readonly<Record<string, string>>;
  /** Bridge name and /24 subnet prefix for this shim's CNI network. */
  readonly bridge?: string;
  readonly subnet?: string;
  /** Extra keys per engine table, e.g. `{ docker: { socket: '/run/other.sock' } }`. */
  readonly engineOptions?: Readonly<Record<string, Readonly<Record<string, string | number | boolean>>>>;
  /** CNI plugin dirs (default: HCR's default, /usr/lib/cni and /opt/cni/bin). */
  readonly cniBinDirs?: readonly string[];
  /** State dir (default: `state` under the shim's dir), e.g. a small tmpfs for disk-full tests. */
  readonly stateDir?: string;
}

/** A running `hcr serve` child process with private dirs and its own CNI network. */
export interface TestShim {
  readonly dir: string;
  readonly socket: string;
  readonly configPath: string;
  readonly cniDataDir: string;
  readonly bridge: string;
  /** Engine instance name for an engine kind in this shim (e.g. `docker-1a2b3c`). */
  readonly engineName: (kind: string) => string;
  readonly client: CriClient;
  readonly logs: () => string;
  /** SIGKILLs the shim (pods keep running) and waits for it to exit. */
  kill(): Promise<void>;
  /** Starts the shim again on the same dirs. */
  restart(env?: Readonly<Record<string, string>>): Promise<void>;
  /** Waits for the shim to exit by itself (after a fault point). */
  waitExit(timeoutMs?: number): Promise<number | null>;
  /** Stops it gracefully and removes its dirs (after the test removed its pods). */
  stop(): Promise<void>;
}

/** Starts `hcr serve` from the sources on a private socket, state dir, runtime dir and CNI network. */
export async function startShim(opts: ShimOptions = {}): Promise<TestShim> {
  const dir = mkdtempSync(join(tmpdir(), 'hcr-shim-'));
  const socket = join(dir, 'hcr.sock');
  const cniConf = join(dir, 'cni');
  const cniDataDir = join(dir, 'cni-ipam');
  mkdirSync(cniConf, { recursive: true });
  const bridge = opts.bridge ?? `hcrt${process.pid % 1000}`;
  const subnet = opts.subnet ?? `10.${100 + (process.pid % 50)}.0`;
  writeFileSync(
    join(cniConf, '10-test.conflist'),
    JSON.stringify({
      cniVersion: '1.0.0',
      name: `hcr-test-${bridge}`,
      plugins: [
        {
          type: 'bridge',
          bridge,
          isGateway: true,
          ipMasq: false,
          hairpinMode: true,
          ipam: {
            type: 'host-local',
            ranges: [[{ subnet: `${subnet}.0/24` }]],
            routes: [{ dst: '0.0.0.0/0' }],
            dataDir: cniDataDir,
          },
        },
        { type: 'portmap', capabilities: { portMappings: true } },
        { type: 'firewall' },
      ],
    }),
  );
  const engines = opts.engines ?? ['docker'];
  // Engine instance names are unique per shim: engines label what they make with
  // their instance name, so shims running side by side on one dockerd never
  // take each other's objects for orphans (and leak checks stay per shim).
  const tag = randomBytes(3).toString('hex');
  const instance = (kind: string) => `${kind}-${tag}`;
  const configPath = join(dir, 'config.toml');
  writeFileSync(
    configPath,
    [
      `socket = "${socket}"`,
      `state_dir = "${opts.stateDir ?? join(dir, 'state')}"`,
      `runtime_dir = "${join(dir, 'run')}"`,
      `log_level = "debug"`,
      `plugins = []`,
      `[cni]`,
      `conf_dir = "${cniConf}"`,
      ...(opts.cniBinDirs === undefined ? [] : [`bin_dirs = ${JSON.stringify(opts.cniBinDirs)}`]),
      `[images]`,
      `root = "${join(dir, 'images')}"`,
      `[router]`,
      `default_engine = "${instance(opts.defaultEngine ?? engines[0] ?? 'docker')}"`,
      `defer_binding = ${engines.includes('unikernel')}`,
      `unikernel_engine = "${instance('unikernel')}"`,
      ...engines.flatMap((e) => [
        `[engines.${instance(e)}]`,
        `kind = "${e}"`,
        ...Object.entries(opts.engineOptions?.[e] ?? {}).map(([k, v]) => `${k} = ${JSON.stringify(v)}`),
      ]),
      ...engines.flatMap((e) => [`[runtimes.${e}]`, `engine = "${instance(e)}"`]),
      `[registries."registry.k8s.io"]`,
      `mirrors = ["http://${REGISTRY}"]`,
      `[registries."gcr.io"]`,
      `mirrors = ["http://${REGISTRY}"]`,
      opts.extraConfig ?? '',
    ].join('\n'),
  );
  let child: ChildProcess | null = null;
  let output = '';
  const launch = async (env: Readonly<Record<string, string>> = opts.env ?? {}) => {
    output = '';
    child = spawn(
      process.execPath,
      [
        '--conditions=hcr-source',
        '--import',
        'tsx',
        join(repoRoot, 'packages/cri/src/bin.ts'),
        'serve',
        '--config',
        configPath,
      ],
      { cwd: repoRoot, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
    const deadline = Date.now() + 60_000;
    while (!output.includes('hcr serving CRI v1')) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`hcr serve exited (${child.exitCode ?? child.signalCode}):\n${output}`);
      }
      if (Date.now() > deadline) throw new Error(`hcr serve did not start within 60 s:\n${output}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  await launch();
  const client = criClient(socket);
  const exited = () =>
    new Promise<number | null>((res) => {
      const c = child;
      if (c === null || c.exitCode !== null || c.signalCode !== null) return res(c?.exitCode ?? null);
      c.once('exit', (code) => res(code));
    });
  return {
    dir,
    socket,
    configPath,
    cniDataDir,
    bridge,
    engineName: instance,
    client,
    logs: () => output,
    async kill() {
      const done = exited();
      child?.kill('SIGKILL');
      await done;
    },
    async restart(env) {
      await launch(env ?? {});
    },
    async waitExit(timeoutMs = 60_000) {
      return Promise.race([exited(), new Promise<number | null>((r) => setTimeout(() => r(-1), timeoutMs))]);
    },
    async stop() {
      client.close();
      const done = exited();
      child?.kill('SIGTERM');
      await done;
      spawnSync('umount', ['--lazy', join(dir, 'run', 'netns')], { stdio: 'ignore' });
      try {
        execFileSync('ip', ['link', 'del', bridge], { stdio: 'ignore' });
      } catch {
        // already gone
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Everything a shim could leave behind: HCR-labelled Docker containers, netns
 * files and mounts under its dirs, veths on its bridge, CNI IP allocations.
 */
export function leaks(shim: TestShim): string[] {
  const found: string[] = [];
  const anyHcr = execFileSync(
    'docker',
    ['ps', '-a', '--format', '{{.Names}}', '--filter', `label=io.hcr.engine=${shim.engineName('docker')}`],
    {
      encoding: 'utf8',
    },
  )
    .trim()
    .split('\n')
    .filter((n) => n !== '');
  if (anyHcr.length > 0) found.push(`hcr docker containers: ${anyHcr.join(' ')}`);
  const netnsDir = join(shim.dir, 'run', 'netns');
  if (existsSync(netnsDir)) {
    const left = readdirSync(netnsDir);
    if (left.length > 0) found.push(`netns: ${left.join(' ')}`);
  }
  // The network manager makes its netns dir a mount point once (as `ip netns` does); only mounts below it are per-pod.
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m.startsWith(shim.dir) && m !== netnsDir);
  if (mounts.length > 0) found.push(`mounts: ${mounts.length} under ${shim.dir}`);
  let veths = '';
  try {
    veths = execFileSync('ip', ['-o', 'link', 'show', 'master', shim.bridge], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
  } catch {
    veths = ''; // no bridge yet: nothing attached
  }
  if (veths !== '') found.push(`veths on ${shim.bridge}: ${veths.split('\n').length}`);
  for (const net of existsSync(shim.cniDataDir) ? readdirSync(shim.cniDataDir) : []) {
    const ips = readdirSync(join(shim.cniDataDir, net)).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f));
    if (ips.length > 0) found.push(`CNI IPs: ${ips.join(' ')}`);
  }
  return found;
}

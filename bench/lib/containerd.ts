import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { criClient } from '../../packages/cri/src/client.js';
import { REGISTRY } from './hcr.js';
import { deleteBridge, type BenchNetwork } from './net.js';
import { rssKiB } from './machine.js';

/** The sandbox image containerd runs per pod (served by the local registry through the mirror). */
export const CONTAINERD_SANDBOX_IMAGE = 'registry.k8s.io/pause:3.6';

/** A running peer containerd owned by the bench. */
export interface Containerd {
  readonly socket: string;
  readonly pid: number;
  readonly version: string;
  rssKiB(): number;
  /** Removes every pod, stops containerd and its shims, unmounts and deletes its dirs. */
  stop(): Promise<void>;
}

/**
 * Starts Debian's containerd 1.6 with its built-in CRI plugin and runc,
 * everything (root, state, sockets, CNI conflist, registry hosts) under
 * `dir` — the setup the containerd baseline in the conformance harness used,
 * so the peer runs as it would on a node.
 */
export async function startContainerd(dir: string, network: BenchNetwork): Promise<Containerd> {
  for (const d of ['root', 'state', 'runc', 'certs.d']) mkdirSync(join(dir, d), { recursive: true });
  const socket = join(dir, 'containerd.sock');
  const q = (s: string) => JSON.stringify(s);
  writeFileSync(
    join(dir, 'containerd.toml'),
    `version = 2
root = ${q(join(dir, 'root'))}
state = ${q(join(dir, 'state'))}
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = ${q(socket)}

[ttrpc]
  address = ${q(`${socket}.ttrpc`)}

[debug]
  address = ${q(join(dir, 'debug.sock'))}
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = ${q(CONTAINERD_SANDBOX_IMAGE)}
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  netns_mounts_under_state_dir = true
  systemd_cgroup = false
  # This host's capability bounding set lacks CAP_SYS_RESOURCE, so runc cannot
  # set the sandbox's negative oom_score_adj; clamp instead of failing.
  restrict_oom_score_adj = true

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = ${q(join(dir, 'runc'))}

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = ${q(network.confDir)}
    max_conf_num = 1

  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = ${q(join(dir, 'certs.d'))}
`,
  );
  // Mirrors: upstream names resolve to the local plain-HTTP registry, which is
  // also the "server", so nothing ever falls back to (or looks up) the real host.
  for (const host of ['registry.k8s.io', 'gcr.io', 'docker.io', REGISTRY]) {
    mkdirSync(join(dir, 'certs.d', host), { recursive: true });
    writeFileSync(
      join(dir, 'certs.d', host, 'hosts.toml'),
      `server = "http://${REGISTRY}"\n\n[host."http://${REGISTRY}"]\n  capabilities = ["pull", "resolve"]\n  skip_verify = true\n`,
    );
  }
  const version = execFileSync('containerd', ['--version'], { encoding: 'utf8' }).trim();
  const fd = openSync(join(dir, 'containerd.log'), 'a');
  let child: ChildProcess;
  try {
    child = spawn('containerd', ['--config', join(dir, 'containerd.toml')], { stdio: ['ignore', fd, fd] });
  } finally {
    closeSync(fd);
  }
  const pid = child.pid ?? -1;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async () => {
    await removeAllPods(socket).catch(() => undefined);
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    }
    killShims(dir);
    unmountUnder(dir);
    deleteBridge(network.bridge);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitReady(socket, child, join(dir, 'containerd.log'));
  } catch (e) {
    await stop();
    throw e;
  }
  return { socket, pid, version, rssKiB: () => rssKiB(pid), stop };
}

async function waitReady(socket: string, child: ChildProcess, log: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(
        `containerd exited (${child.exitCode ?? child.signalCode}):\n${readFileSync(log, 'utf8').slice(-2000)}`,
      );
    }
    if (existsSync(socket)) {
      const c = criClient(socket);
      try {
        await c.call('runtime', 'Version', {}, 2_000);
        return;
      } catch {
        // CRI plugin not up yet
      } finally {
        c.close();
      }
    }
    if (Date.now() > deadline) throw new Error(`containerd CRI not ready within 30 s; see ${log}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Stops and removes every pod (so no containerd-shim outlives the daemon). */
async function removeAllPods(socket: string): Promise<void> {
  const c = criClient(socket);
  try {
    const { items } = await c.call<{ items: { id: string }[] }>('runtime', 'ListPodSandbox', {}, 30_000);
    for (const p of items) {
      await c.call('runtime', 'StopPodSandbox', { podSandboxId: p.id }, 120_000).catch(() => undefined);
      await c.call('runtime', 'RemovePodSandbox', { podSandboxId: p.id }, 120_000).catch(() => undefined);
    }
  } finally {
    c.close();
  }
}

/** SIGKILLs containerd-shim processes whose working dir is under `dir` (only ours: they live in our state dir). */
function killShims(dir: string): void {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmd = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (!cmd.startsWith('/usr/bin/containerd-shim') && !cmd.includes('containerd-shim-runc-v2')) continue;
      if (!cmd.includes(`${dir}/`) && !readlinkSync(`/proc/${entry}/cwd`).startsWith(dir)) continue;
      process.kill(Number(entry), 'SIGKILL');
    } catch {
      // gone meanwhile
    }
  }
}

/** Lazily unmounts everything containerd left mounted under `dir` (deepest first). */
function unmountUnder(dir: string): void {
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
  for (const m of mounts) {
    try {
      execFileSync('umount', ['--lazy', m], { stdio: 'ignore' });
    } catch {
      // already gone
    }
  }
}

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { criClient } from '../../packages/cri/src/client.js';
import type { BenchNetwork } from './net.js';
import { deleteBridge } from './net.js';
import { rssKiB } from './machine.js';

/** The local registry every bench image comes from. */
export const REGISTRY = '127.0.0.1:5000';

/** Engine kinds the bench knows how to drive. */
export type EngineKind = 'docker' | 'hyper' | 'unikernel';

/** Options of {@link startHcr}. */
export interface HcrOptions {
  readonly repoRoot: string;
  /** Work dir (config, state, runtime, images, log); removed by {@link HcrShim.stop}. */
  readonly dir: string;
  readonly network: BenchNetwork;
  readonly engines: readonly EngineKind[];
  /** Extra keys per engine table. */
  readonly engineOptions?: Partial<Record<EngineKind, Readonly<Record<string, string | number | boolean>>>>;
  /** `info` is what a node runs with; it is the default so logging cost is measured, not hidden. */
  readonly logLevel?: 'debug' | 'info' | 'warn';
  /**
   * `source` runs packages/cri/src/bin.ts through tsx (no build needed, as the
   * tests do); `dist` runs the built packages/cri/dist/bin.js (`pnpm build`),
   * which is what a node runs and what memory figures should come from: tsx
   * keeps transpiled sources and source maps resident (about 40 MiB here).
   */
  readonly shim?: ShimForm;
  /**
   * More engine instances of a kind, each under its own runtime handler
   * (e.g. `hyper-template`: the hyper engine with VM templates).
   */
  readonly variants?: readonly EngineVariant[];
}

/** An extra engine instance: `kind` with `options`, reached through RuntimeClass handler `handler`. */
export interface EngineVariant {
  readonly handler: string;
  readonly kind: EngineKind;
  readonly options: Readonly<Record<string, string | number | boolean>>;
}

/** How the shim is started: from TypeScript sources or from the build. */
export type ShimForm = 'source' | 'dist';

/** The node argv (after the node binary) that runs `hcr` in `form` from `root`. */
export function shimArgv(root: string, form: ShimForm): string[] {
  return form === 'dist'
    ? [join(root, 'packages/cri/dist/bin.js')]
    : ['--conditions=hcr-source', '--import', 'tsx', join(root, 'packages/cri/src/bin.ts')];
}

/** A running `hcr serve` owned by the bench. */
export interface HcrShim {
  readonly socket: string;
  readonly pid: number;
  readonly logFile: string;
  /** Engine kinds whose instance is configured but failed to start, with the reason (from Status). */
  readonly failedEngines: Readonly<Partial<Record<EngineKind, string>>>;
  /** Variant handlers whose instance failed to start, with the reason. */
  readonly failedVariants: Readonly<Record<string, string>>;
  /** Resident set size of the shim process now (KiB). */
  rssKiB(): number;
  /** SIGTERM, wait, then remove its dirs and bridge (pods must be gone first). */
  stop(): Promise<void>;
}

/**
 * Starts HCR from the sources exactly as `hcr serve` runs on a node, with
 * private state, runtime, image and CNI dirs under `dir`, one engine
 * instance per kind (instance name = kind = runtime handler), and registry
 * mirrors that send every pull to the local registry.
 */
export async function startHcr(o: HcrOptions): Promise<HcrShim> {
  mkdirSync(o.dir, { recursive: true });
  const socket = join(o.dir, 'hcr.sock');
  const configPath = join(o.dir, 'config.toml');
  const toml = (v: unknown) => JSON.stringify(v);
  // Engines label what they make with their instance name and, on start, remove
  // labelled objects no record of theirs owns: a name shared with any other shim
  // on this dockerd would make each remove the other's pods. Unique per run.
  const tag = randomBytes(3).toString('hex');
  const instance = (kind: EngineKind) => `${kind}-bench-${tag}`;
  writeFileSync(
    configPath,
    [
      `socket = ${toml(socket)}`,
      `state_dir = ${toml(join(o.dir, 'state'))}`,
      `runtime_dir = ${toml(join(o.dir, 'run'))}`,
      `log_level = ${toml(o.logLevel ?? 'info')}`,
      `plugins = []`,
      `[cni]`,
      `conf_dir = ${toml(o.network.confDir)}`,
      `[images]`,
      `root = ${toml(join(o.dir, 'images'))}`,
      `[router]`,
      // Pods name their engine by runtime handler; the default only has to exist.
      `default_engine = "${instance(o.engines.includes('docker') ? 'docker' : (o.engines[0] ?? 'docker'))}"`,
      `defer_binding = false`,
      ...(o.engines.includes('unikernel') ? [`unikernel_engine = "${instance('unikernel')}"`] : []),
      ...o.engines.flatMap((e) => [
        `[engines.${instance(e)}]`,
        `kind = "${e}"`,
        ...Object.entries(o.engineOptions?.[e] ?? {}).map(([k, v]) => `${k} = ${toml(v)}`),
      ]),
      ...o.engines.flatMap((e) => [`[runtimes.${e}]`, `engine = "${instance(e)}"`]),
      ...(o.variants ?? []).flatMap((v) => [
        `[engines.${v.handler}-bench-${tag}]`,
        `kind = "${v.kind}"`,
        ...Object.entries(v.options).map(([k, val]) => `${k} = ${toml(val)}`),
        `[runtimes.${toml(v.handler)}]`,
        `engine = "${v.handler}-bench-${tag}"`,
      ]),
      ...['registry.k8s.io', 'gcr.io', 'docker.io'].flatMap((h) => [
        `[registries.${toml(h)}]`,
        `mirrors = [${toml(`http://${REGISTRY}`)}]`,
        `server = ${toml(`http://${REGISTRY}`)}`,
      ]),
      '',
    ].join('\n'),
  );
  const logFile = join(o.dir, 'hcr.log');
  const fd = openSync(logFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn(process.execPath, [...shimArgv(o.repoRoot, o.shim ?? 'source'), 'serve', '--config', configPath], {
      cwd: o.repoRoot,
      stdio: ['ignore', fd, fd],
      detached: false,
    });
  } finally {
    closeSync(fd);
  }
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const pid = child.pid ?? -1;
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      await exited;
      clearTimeout(timer);
    }
    // `hcr serve` makes its netns dir a mount point (as `ip netns` does).
    spawnSync('umount', ['--lazy', join(o.dir, 'run', 'netns')], { stdio: 'ignore' });
    deleteBridge(o.network.bridge);
    rmSync(o.dir, { recursive: true, force: true });
  };
  try {
    const failedByInstance = await waitReady(socket, child, logFile);
    const failedEngines = Object.fromEntries(
      o.engines.flatMap((e) => {
        const why = failedByInstance[instance(e)];
        return why === undefined ? [] : [[e, why]];
      }),
    ) as Partial<Record<EngineKind, string>>;
    const failedVariants = Object.fromEntries(
      (o.variants ?? []).flatMap((v) => {
        const why = failedByInstance[`${v.handler}-bench-${tag}`];
        return why === undefined ? [] : [[v.handler, why]];
      }),
    );
    return { socket, pid, logFile, failedEngines, failedVariants, rssKiB: () => rssKiB(pid), stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

/** Waits until the socket answers Status; returns the engines that failed to start. */
async function waitReady(socket: string, child: ChildProcess, logFile: string): Promise<Record<string, string>> {
  const deadline = Date.now() + 90_000;
  const tail = () => readFileSync(logFile, 'utf8').split('\n').slice(-20).join('\n');
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`hcr serve exited (${child.exitCode ?? child.signalCode}) while starting:\n${tail()}`);
    }
    if (existsSync(socket)) {
      const client = criClient(socket);
      try {
        const st = await client.call<{ info: Record<string, string> }>('runtime', 'Status', { verbose: true }, 5_000);
        return JSON.parse(st.info['failedEngines'] ?? '{}') as Record<string, string>;
      } catch {
        // not serving yet
      } finally {
        client.close();
      }
    }
    if (Date.now() > deadline) throw new Error(`hcr serve did not answer on ${socket} within 90 s:\n${tail()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * `pnpm bench`: HCR's pod start, shim overhead, density and engine limits,
 * side by side with containerd 1.6 + runc started by the bench itself, all
 * driven through the same CRI client. Writes bench/results/latest.json and
 * regenerates docs/benchmarks.md (and its chart) from it.
 *
 *   pnpm bench [--parts podstart,limits,overhead,density] [-n 20] [--help]
 */
import { execFileSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as prettier from 'prettier';
import { Cleanup } from './lib/cleanup.js';
import { startContainerd, CONTAINERD_SANDBOX_IMAGE, type Containerd } from './lib/containerd.js';
import { CriDriver, type Workload } from './lib/cri.js';
import { REGISTRY, startHcr, type EngineKind, type HcrShim, type ShimForm } from './lib/hcr.js';
import { commitInfo, load1, machineInfo, type CommitInfo } from './lib/machine.js';
import { deleteBridge, writeConflist } from './lib/net.js';
import { dockerDaemonPids, findPids } from './lib/procs.js';
import { RESULT_SCHEMA, type BenchResults, type TargetInfo } from './lib/results.js';
import { snapshot } from './lib/snapshot.js';
import { writeReport } from './report/markdown.js';
import { runDensity, type DensityResult } from './suites/density.js';
import {
  rawDockerPauseStart,
  rawHyperBoot,
  rawUnikernelBoot,
  type DockerPauseStart,
  type RawBoot,
} from './suites/limits.js';
import { runOverhead, type OverheadResult } from './suites/overhead.js';
import { errorText, runPodStart, type PodStartResult } from './suites/podstart.js';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');

const PARTS = ['podstart', 'limits', 'overhead', 'density'] as const;
type Part = (typeof PARTS)[number];

const BUSYBOX = `${REGISTRY}/hcr-test/busybox:latest`;
const UNIKERNEL_HELLO = `${REGISTRY}/hcr-test/unikernel-hello:latest`;
/** RuntimeClass handler of the hyper engine instance with VM templates (target `hcr-hyper-template`). */
const HYPER_TEMPLATE_HANDLER = 'hyper-template';

/** Bridges and subnets of the bench's own pod networks (distinct from the host's hcr0 and the tests'). */
const NETS = {
  hcr: { bridge: 'hcrbench0', subnet: '10.231.0.0/16' },
  containerd: { bridge: 'hcrbench1', subnet: '10.232.0.0/16' },
  before: { bridge: 'hcrbench2', subnet: '10.233.0.0/16' },
} as const;

const HELP = `pnpm bench [options]          (root; needs dockerd, the local registry, containerd, QEMU)

  --parts LIST           podstart,limits,overhead,density (default: all)      env BENCH_PARTS
  --engines LIST         HCR engines: docker,unikernel,hyper (default: all)   env BENCH_ENGINES
  --no-containerd        skip the containerd peer                              env BENCH_CONTAINERD=0
  -n, --iterations N     pod starts per target, serial and parallel (20)       env BENCH_N
  --concurrency N        pods in flight in the parallel runs (10)
  --no-parallel          serial pod starts only
  --raw-runs N           raw QEMU boots per engine limit (10)
  --overhead-pods N      pods for the list/status population (100)
  --containers-per-pod N created containers per pod there (10)
  --stats-pods N         running pods for the stats calls (10)
  --density LIST         per-target pod limits, e.g. docker=200,containerd=200,unikernel=50,hyper=20
  --hold N               seconds the density pods are held before the health check (10)
  --shim source|dist     run the shim from sources through tsx (default) or from the build (pnpm build first;
                         memory figures are only representative of a node from the build)
  --ref REF              run HCR from commit REF (a git archive snapshot) instead of the working tree
  --before REF           also run HCR from commit REF in the same run (targets *-before): fast paths before/after
  --label TEXT           name of this run in the result file
  --out FILE             result file (bench/results/latest.json)
  --no-docs              do not regenerate docs/benchmarks.md
  --report-only          only regenerate docs/benchmarks.md from --out
`;

interface Options {
  readonly parts: ReadonlySet<Part>;
  readonly engines: readonly EngineKind[];
  readonly containerd: boolean;
  readonly iterations: number;
  readonly concurrency: number;
  readonly parallel: boolean;
  readonly rawRuns: number;
  readonly overheadPods: number;
  readonly containersPerPod: number;
  readonly statsPods: number;
  readonly density: Readonly<Record<string, number>>;
  readonly holdSeconds: number;
  readonly label: string;
  readonly ref: string | null;
  readonly shim: ShimForm;
  readonly before: string | null;
  readonly out: string;
  readonly docs: boolean;
  readonly reportOnly: boolean;
}

function shimForm(v: string): ShimForm {
  if (v !== 'source' && v !== 'dist') throw new Error(`--shim must be "source" or "dist", got "${v}"`);
  return v;
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      parts: { type: 'string' },
      engines: { type: 'string' },
      'no-containerd': { type: 'boolean' },
      iterations: { type: 'string', short: 'n' },
      concurrency: { type: 'string' },
      'no-parallel': { type: 'boolean' },
      'raw-runs': { type: 'string' },
      'overhead-pods': { type: 'string' },
      'containers-per-pod': { type: 'string' },
      'stats-pods': { type: 'string' },
      density: { type: 'string' },
      hold: { type: 'string' },
      label: { type: 'string' },
      ref: { type: 'string' },
      shim: { type: 'string' },
      before: { type: 'string' },
      out: { type: 'string' },
      'no-docs': { type: 'boolean' },
      'report-only': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help === true) {
    process.stdout.write(HELP);
    process.exit(0);
  }
  const env = process.env;
  const int = (name: string, v: string | undefined, def: number, min = 1): number => {
    if (v === undefined || v === '') return def;
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new Error(`${name} must be an integer ≥ ${min}, got "${v}"`);
    return n;
  };
  const list = (v: string | undefined): string[] | null =>
    v === undefined || v === ''
      ? null
      : v
          .split(',')
          .map((s) => s.trim())
          .filter((s) => s !== '');
  const parts = list(values.parts ?? env['BENCH_PARTS']) ?? [...PARTS];
  for (const p of parts)
    if (!(PARTS as readonly string[]).includes(p)) throw new Error(`unknown part "${p}" (${PARTS.join(', ')})`);
  const engines = list(values.engines ?? env['BENCH_ENGINES']) ?? ['docker', 'unikernel', 'hyper'];
  for (const e of engines) if (!['docker', 'unikernel', 'hyper'].includes(e)) throw new Error(`unknown engine "${e}"`);
  const density: Record<string, number> = { docker: 200, containerd: 200, unikernel: 50, hyper: 20 };
  for (const kv of list(values.density) ?? []) {
    const [k, v] = kv.split('=');
    if (k === undefined || !(k in density)) throw new Error(`--density: unknown target "${k}"`);
    density[k] = int(`--density ${k}`, v, 0, 0);
  }
  return {
    parts: new Set(parts as Part[]),
    engines: engines as EngineKind[],
    containerd: values['no-containerd'] !== true && env['BENCH_CONTAINERD'] !== '0',
    iterations: int('--iterations', values.iterations ?? env['BENCH_N'], 20),
    concurrency: int('--concurrency', values.concurrency, 10),
    parallel: values['no-parallel'] !== true,
    rawRuns: int('--raw-runs', values['raw-runs'], 10),
    overheadPods: int('--overhead-pods', values['overhead-pods'], 100),
    containersPerPod: int('--containers-per-pod', values['containers-per-pod'], 10),
    statsPods: int('--stats-pods', values['stats-pods'], 10),
    density,
    holdSeconds: int('--hold', values.hold, 10, 0),
    label: values.label ?? '',
    ref: values.ref ?? env['BENCH_REF'] ?? null,
    shim: shimForm(values.shim ?? env['BENCH_SHIM'] ?? 'source'),
    before: values.before ?? env['BENCH_BEFORE'] ?? null,
    out: resolve(values.out ?? join(repoRoot, 'bench/results/latest.json')),
    docs: values['no-docs'] !== true,
    reportOnly: values['report-only'] === true,
  };
}

const log = (line: string) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${line}`);

/**
 * Fails early, with what to do, when the host lacks something the bench needs.
 * Returns how many sources are newer than the build `--shim dist` runs.
 */
async function preflight(o: Options): Promise<number> {
  let staleSources = 0;
  if (process.getuid?.() !== 0) throw new Error('the bench needs root (network namespaces, CNI, containerd)');
  try {
    execFileSync('/usr/bin/docker', ['info', '--format', '{{.ServerVersion}}'], { stdio: 'pipe', timeout: 10_000 });
  } catch {
    throw new Error('dockerd is not reachable; start it with `bash scripts/setup.sh --no-images`');
  }
  const reg = await fetch(`http://${REGISTRY}/v2/`).catch(() => null);
  if (reg === null || !reg.ok) throw new Error(`the local registry ${REGISTRY} is not answering; run scripts/setup.sh`);
  if (o.containerd) {
    try {
      execFileSync('containerd', ['--version'], { stdio: 'pipe' });
    } catch {
      throw new Error('containerd is not installed (apt-get install containerd), or pass --no-containerd');
    }
  }
  if (o.shim === 'dist') {
    if (o.ref !== null) throw new Error("--shim dist runs the working tree's build; it cannot be combined with --ref");
    const bin = join(repoRoot, 'packages/cri/dist/bin.js');
    if (!existsSync(bin)) throw new Error(`${bin} is missing; run \`pnpm build\` first or use --shim source`);
    const built = statSync(bin).mtimeMs;
    const stale = newestSource().filter((f) => f.mtimeMs > built);
    staleSources = stale.length;
    if (stale.length > 0) {
      log(
        `WARNING: the build is older than ${stale.length} source file(s), e.g. ${stale[0]!.path}; run \`pnpm build\``,
      );
    }
  }
  for (const n of Object.values(NETS)) {
    const ports = `/sys/class/net/${n.bridge}/brif`;
    if (existsSync(ports) && readdirSync(ports).length > 0) {
      throw new Error(`bridge ${n.bridge} still has pods attached (another bench running, or a crashed one?)`);
    }
  }
  return staleSources;
}

/** Source files of the packages the shim is built from, with their modification times. */
function newestSource(): { path: string; mtimeMs: number }[] {
  const out: { path: string; mtimeMs: number }[] = [];
  for (const pkg of ['core', 'cri', 'engine-docker', 'engine-hyper', 'engine-unikernel']) {
    const src = join(repoRoot, 'packages', pkg, 'src');
    if (!existsSync(src)) continue;
    for (const f of readdirSync(src, { recursive: true, encoding: 'utf8' })) {
      if (!f.endsWith('.ts') || f.endsWith('.test.ts')) continue;
      out.push({ path: join(src, f), mtimeMs: statSync(join(src, f)).mtimeMs });
    }
  }
  return out;
}

/** Which HCR engines of the tree at `root` can run here, and why the others cannot. */
async function engineAvailability(
  root: string,
  engines: readonly EngineKind[],
): Promise<Map<EngineKind, string | null>> {
  const out = new Map<EngineKind, string | null>();
  for (const e of engines) {
    if (e === 'docker') {
      out.set(e, null);
      continue;
    }
    const entry = join(root, `packages/engine-${e}/src/index.ts`);
    try {
      const mod = (await import(entry)) as Record<string, unknown>;
      out.set(e, mod['registration'] === undefined ? `@hcr/engine-${e} exports no registration yet` : null);
    } catch (err) {
      out.set(e, `@hcr/engine-${e} cannot be loaded: ${(err as Error).message.split('\n')[0]}`);
    }
  }
  return out;
}

async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2));
  if (o.reportOnly) {
    const results = JSON.parse(readFileSync(o.out, 'utf8')) as BenchResults;
    await writeReport(repoRoot, results);
    log(`regenerated docs/benchmarks.md from ${o.out}`);
    return;
  }
  const staleSources = await preflight(o);
  const cleanup = new Cleanup();
  let interrupted = false;
  const onSignal = (sig: string) => {
    if (interrupted) return;
    interrupted = true;
    log(`${sig}: cleaning up`);
    void cleanup.runAll(log).then(() => process.exit(130));
  };
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('SIGTERM', () => onSignal('SIGTERM'));

  const startedAt = new Date();
  const machine = machineInfo();
  const base = mkdtempSync('/tmp/hcrb-');
  cleanup.defer(`remove ${base}`, () => rmSync(base, { recursive: true, force: true }));
  const logRoot = join(base, 'logs');
  mkdirSync(logRoot);
  // HCR runs from the working tree, or from snapshots of commits (--ref, --before).
  const tree = o.ref === null ? null : snapshot(repoRoot, o.ref, join(base, 'tree'));
  const before = o.before === null ? null : snapshot(repoRoot, o.before, join(base, 'tree-before'));
  const commit: CommitInfo =
    tree === null ? commitInfo(repoRoot) : { sha: tree.sha, subject: tree.subject, dirty: false };
  log(
    `HCR bench at ${commit.sha.slice(0, 12)}${commit.dirty ? ' (dirty)' : ''}` +
      `${before === null ? '' : `, before = ${before.sha.slice(0, 12)}`}, load ${machine.loadAtStart.toFixed(2)}`,
  );

  const targets: Record<string, TargetInfo> = {};
  const failures: { part: string; error: string }[] = [];
  const drivers: CriDriver[] = [];
  const shims = new Map<string, HcrShim>();
  let ctd: Containerd | null = null;
  let podStart: Record<string, PodStartResult> | undefined;
  let limits: { hyper?: RawBoot; unikernel?: RawBoot; dockerPause?: DockerPauseStart } | undefined;
  let overhead: Record<string, OverheadResult> | undefined;
  let density: Record<string, DensityResult> | undefined;
  const workloads: Record<EngineKind, Workload> = {
    docker: { image: BUSYBOX, command: ['sleep', '3600'], args: [] },
    hyper: { image: BUSYBOX, command: ['sleep', '3600'], args: [] },
    // No exit= on the command line: the hello unikernel prints it and idles.
    unikernel: { image: UNIKERNEL_HELLO, command: [], args: ['hcr-bench'] },
  };

  /** Starts one HCR shim from `root` and adds a target per engine it runs (ids end in `suffix`). */
  const startTargets = async (
    root: string,
    name: 'hcr' | 'before',
    engines: readonly EngineKind[],
    suffix: string,
  ): Promise<void> => {
    const avail = await engineAvailability(root, engines);
    const usable = [...avail].filter(([, why]) => why === null).map(([e]) => e);
    const net = NETS[name];
    const conf = writeConflist(join(base, `${name}-cni`), `${name}-bench`, net.bridge, net.subnet);
    cleanup.defer(`delete bridge ${net.bridge}`, () => deleteBridge(net.bridge));
    log(`starting HCR${suffix} from ${root === repoRoot ? 'the working tree' : root} (engines: ${usable.join(', ')})`);
    // Snapshots have no build: an earlier commit always runs from its sources.
    const form: ShimForm = name === 'hcr' ? o.shim : 'source';
    // The hyper engine once more with VM templates, as its own target (the main tree only).
    const variants =
      name === 'hcr' && usable.includes('hyper')
        ? [{ handler: HYPER_TEMPLATE_HANDLER, kind: 'hyper' as const, options: { template: true } }]
        : [];
    const shim = await startHcr({
      repoRoot: root,
      dir: join(base, name),
      network: conf,
      engines: usable,
      shim: form,
      variants,
    });
    cleanup.defer(`stop HCR${suffix}`, () => shim.stop());
    for (const [e, why] of avail) {
      const id = `hcr-${e}${suffix}`;
      shims.set(id, shim);
      const failed = shim.failedEngines[e];
      const reason = why ?? (failed === undefined ? null : `engine failed to start: ${failed}`);
      const w = workloads[e];
      const description = `HCR${suffix === '' ? '' : ` at ${root === repoRoot ? 'working tree' : (before?.sha.slice(0, 12) ?? '')}`}, ${e} engine, ${w.image} ${[...w.command, ...w.args].join(' ')}`;
      targets[id] = reason === null ? { available: true, description } : { available: false, reason, description };
      if (reason !== null) {
        log(`  ${id}: not measured: ${reason}`);
        continue;
      }
      const d = new CriDriver({ id, socket: shim.socket, runtimeHandler: e, workload: w, logRoot });
      drivers.push(d);
      cleanup.defer(`remove ${id} pods`, async () => {
        await d.removeAllBenchPods();
        d.close();
      });
    }
    for (const v of variants) {
      const id = `hcr-${v.handler}`;
      const w = workloads[v.kind];
      const description = `HCR, ${v.kind} engine with ${Object.entries(v.options)
        .map(([k, val]) => `${k} = ${String(val)}`)
        .join(', ')}, ${w.image} ${[...w.command, ...w.args].join(' ')}`;
      const failed = shim.failedVariants[v.handler];
      if (failed !== undefined) {
        targets[id] = { available: false, reason: `engine failed to start: ${failed}`, description };
        log(`  ${id}: not measured: ${failed}`);
        continue;
      }
      shims.set(id, shim);
      targets[id] = { available: true, description };
      const d = new CriDriver({ id, socket: shim.socket, runtimeHandler: v.handler, workload: w, logRoot });
      drivers.push(d);
      cleanup.defer(`remove ${id} pods`, async () => {
        await d.removeAllBenchPods();
        d.close();
      });
    }
  };

  try {
    await startTargets(tree?.dir ?? repoRoot, 'hcr', o.engines, '');
    for (const e of ['docker', 'unikernel', 'hyper'] as const) {
      if (!o.engines.includes(e))
        targets[`hcr-${e}`] = { available: false, reason: 'not selected (--engines)', description: `HCR, ${e} engine` };
    }
    if (before !== null) {
      // The fast paths under comparison are the docker engine's and core's; VMs add minutes, not information.
      await startTargets(
        before.dir,
        'before',
        ['docker', 'unikernel'].filter((e) => o.engines.includes(e as EngineKind)) as EngineKind[],
        '-before',
      );
    }
    if (o.containerd) {
      const cnet = writeConflist(join(base, 'ctd-cni'), 'ctd-bench', NETS.containerd.bridge, NETS.containerd.subnet);
      log('starting containerd');
      ctd = await startContainerd(join(base, 'ctd'), cnet);
      const c = ctd;
      cleanup.defer('stop containerd', () => c.stop());
      const d = new CriDriver({
        id: 'containerd',
        socket: ctd.socket,
        runtimeHandler: '',
        workload: workloads.docker,
        logRoot,
      });
      drivers.push(d);
      cleanup.defer('close containerd client', () => d.close());
      targets['containerd'] = { available: true, description: `${ctd.version}, runc, ${BUSYBOX} sleep 3600` };
    } else {
      targets['containerd'] = {
        available: false,
        reason: 'disabled (--no-containerd)',
        description: 'containerd 1.6 + runc',
      };
    }
    log('pulling images');
    for (const d of drivers) {
      await d.pull(d.target.workload.image);
      if (d.target.id === 'containerd') await d.pull(CONTAINERD_SANDBOX_IMAGE);
    }

    const part = async (name: Part, fn: () => Promise<void>) => {
      if (!o.parts.has(name) || interrupted) return;
      log(`== ${name}`);
      try {
        await fn();
      } catch (e) {
        failures.push({ part: name, error: errorText(e) });
        log(`${name} failed: ${errorText(e)}`);
      }
    };

    await part('podstart', async () => {
      podStart = await runPodStart(drivers, {
        iterations: o.iterations,
        concurrency: o.concurrency,
        parallel: o.parallel,
        firstOutput: new Set(['hcr-unikernel', 'hcr-unikernel-before']),
        log,
      });
    });

    await part('limits', async () => {
      limits = {};
      if (o.engines.includes('unikernel')) {
        limits.unikernel = await rawUnikernelBoot(o.rawRuns);
        log(
          `  unikernel raw: ${limits.unikernel.measured ? `p50 ${limits.unikernel.boot.p50} ms` : limits.unikernel.reason}`,
        );
      }
      if (o.engines.includes('docker')) {
        limits.dockerPause = await rawDockerPauseStart(o.rawRuns, o.concurrency);
        const p = limits.dockerPause;
        log(
          `  docker pause create+start: ${p.measured ? `none p50 ${p.networkNone?.p50} ms, host p50 ${p.networkHost?.p50} ms` : p.reason}`,
        );
      }
      if (o.engines.includes('hyper')) {
        limits.hyper = await rawHyperBoot(tree?.dir ?? repoRoot, o.rawRuns);
        log(`  hyper raw: ${limits.hyper.measured ? `p50 ${limits.hyper.boot.p50} ms` : limits.hyper.reason}`);
      }
    });

    await part('overhead', async () => {
      overhead = {};
      const common = {
        versionCalls: 2000,
        pods: o.overheadPods,
        containersPerPod: o.containersPerPod,
        listCalls: 200,
        statusCalls: 1000,
        statsPods: o.statsPods,
        statsCalls: 500,
        log,
      };
      for (const d of drivers) {
        const shim = shims.get(d.target.id);
        if (d.target.id.startsWith('hcr-docker') && shim !== undefined) {
          overhead[d.target.id] = await runOverhead(d, {
            ...common,
            // The "before" tree only needs the per-call figures the fast paths change.
            ...(d.target.id === 'hcr-docker' ? {} : { pods: 0 }),
            rssKiB: () => shim.rssKiB(),
            cpuPid: shim.pid,
            daemonPids: dockerDaemonPids,
          });
        } else if (d.target.id === 'containerd' && ctd !== null) {
          const c = ctd;
          overhead[d.target.id] = await runOverhead(d, {
            ...common,
            rssKiB: () => c.rssKiB(),
            cpuPid: c.pid,
            daemonPids: () => findPids((argv) => argv.some((a) => a.includes(c.socket))),
          });
        }
      }
    });

    await part('density', async () => {
      density = {};
      for (const d of drivers) {
        if (d.target.id.endsWith('-before')) continue;
        const key = d.target.id === 'containerd' ? 'containerd' : d.target.id.replace(/^hcr-/, '');
        const limit = o.density[key] ?? 0;
        if (limit === 0) continue;
        const shim = shims.get(d.target.id);
        const rss = d.target.id === 'containerd' ? () => ctd?.rssKiB() ?? 0 : () => shim?.rssKiB() ?? 0;
        density[d.target.id] = await runDensity(d, {
          limit,
          holdSeconds: o.holdSeconds,
          concurrency: d.target.id === 'hcr-hyper' ? 2 : 4,
          rssKiB: rss,
          log,
        });
      }
    });
  } finally {
    log('cleaning up');
    await cleanup.runAll(log);
  }
  if (interrupted) return;

  const finishedAt = new Date();
  const results: BenchResults = {
    schema: RESULT_SCHEMA,
    label: o.label,
    startedAt: startedAt.toISOString(),
    finishedAt: finishedAt.toISOString(),
    durationSeconds: Math.round((finishedAt.getTime() - startedAt.getTime()) / 1000),
    machine,
    loadAtEnd: load1(),
    commit,
    ...(before === null ? {} : { before: { ref: before.ref, sha: before.sha, subject: before.subject } }),
    options: {
      argv: process.argv.slice(2),
      ...o,
      parts: [...o.parts],
      ...(o.shim === 'dist' ? { sourcesNewerThanBuild: staleSources } : {}),
    },
    targets,
    ...(podStart === undefined ? {} : { podStart }),
    ...(limits === undefined ? {} : { limits }),
    ...(overhead === undefined ? {} : { overhead }),
    ...(density === undefined ? {} : { density }),
    failures,
  };
  mkdirSync(dirname(o.out), { recursive: true });
  writeFileSync(o.out, await prettier.format(JSON.stringify(results), { parser: 'json', printWidth: 120 }));
  log(`wrote ${o.out} (${results.durationSeconds} s)`);
  if (o.docs) {
    await writeReport(repoRoot, results);
    log('regenerated docs/benchmarks.md');
  }
}

main().catch((e: unknown) => {
  console.error(`bench: ${(e as Error).message}`);
  process.exit(1);
});

import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import * as prettier from 'prettier';
import type { BenchResults } from '../lib/results.js';
import type { Summary } from '../lib/stats.js';
import type { RawBoot } from '../suites/limits.js';
import type { PodStartSeries } from '../suites/podstart.js';
import { FAST_PATHS, TARGET_NOTES, METHOD_NOTES } from './notes.js';
import { barChart, type BarGroup, type Panel } from './svg.js';

const ms = (v: number | undefined, digits = 0): string =>
  v === undefined || !Number.isFinite(v) ? '–' : v.toFixed(digits);
const ratio = (a: number | undefined, b: number | undefined): number =>
  a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0 ? Number.NaN : a / b;
const x = (r: number): string => (Number.isFinite(r) ? `${r.toFixed(2)}×` : '–');

/** A goal of issue 9 with the figure this run measured. */
interface Goal {
  readonly id: keyof typeof TARGET_NOTES;
  readonly what: string;
  readonly target: string;
  readonly measured: string;
  /** null: could not be evaluated in this run. */
  readonly met: boolean | null;
}

function goals(r: BenchResults): Goal[] {
  const ps = r.podStart ?? {};
  const dockerVsCtd = ratio(ps['hcr-docker']?.serial.start.p50, ps['containerd']?.serial.start.p50);
  const dockerVsCtdPar = ratio(ps['hcr-docker']?.parallel?.start.p50, ps['containerd']?.parallel?.start.p50);
  const hyperRaw = r.limits?.hyper;
  const hyperRatio = ratio(ps['hcr-hyper']?.serial.start.p50, hyperRaw?.measured ? hyperRaw.boot.p50 : undefined);
  const templRatio = ratio(
    ps['hcr-hyper-template']?.serial.start.p50,
    hyperRaw?.measured ? hyperRaw.boot.p50 : undefined,
  );
  const ukRaw = r.limits?.unikernel;
  const ukRatio = ratio(ps['hcr-unikernel']?.serial.start.p50, ukRaw?.measured ? ukRaw.boot.p50 : undefined);
  const ov = r.overhead?.['hcr-docker'];
  const cmp = (v: number, limit: number): boolean | null => (Number.isFinite(v) ? v <= limit : null);
  return [
    {
      id: 'dockerVsContainerd',
      what: 'docker engine pod start vs containerd + runc (serial p50)',
      target: '≤ 1.00×',
      measured: `${x(dockerVsCtd)} (${ms(ps['hcr-docker']?.serial.start.p50)} / ${ms(ps['containerd']?.serial.start.p50)} ms; 10-way parallel ${x(dockerVsCtdPar)})`,
      met: cmp(dockerVsCtd, 1),
    },
    {
      id: 'hyperVsRaw',
      what: 'hyper pod start vs raw QEMU boot to agent-ready (p50)',
      target: '≤ 1.15×',
      measured: Number.isFinite(hyperRatio)
        ? `${x(hyperRatio)} (${ms(ps['hcr-hyper']?.serial.start.p50)} / ${ms(hyperRaw?.measured ? hyperRaw.boot.p50 : undefined)} ms)`
        : notMeasured(r, 'hcr-hyper', hyperRaw),
      met: cmp(hyperRatio, 1.15),
    },
    {
      id: 'hyperTemplating',
      what: 'hyper pod start with VM templating vs raw boot (p50)',
      target: '≤ 0.50×',
      measured: Number.isFinite(templRatio)
        ? `${x(templRatio)} (${ms(ps['hcr-hyper-template']?.serial.start.p50)} / ${ms(hyperRaw?.measured ? hyperRaw.boot.p50 : undefined)} ms)`
        : notMeasured(r, 'hcr-hyper-template', hyperRaw),
      met: cmp(templRatio, 0.5),
    },
    {
      id: 'unikernelVsRaw',
      what: 'unikernel pod start vs raw monitor launch to first console byte (p50)',
      target: '≤ 1.20×',
      measured: Number.isFinite(ukRatio)
        ? `${x(ukRatio)} (${ms(ps['hcr-unikernel']?.serial.start.p50)} / ${ms(ukRaw?.measured ? ukRaw.boot.p50 : undefined)} ms)`
        : notMeasured(r, 'hcr-unikernel', ukRaw),
      met: cmp(ukRatio, 1.2),
    },
    {
      id: 'version',
      what: 'Version round trip (p50)',
      target: '≤ 2 ms',
      measured: ov === undefined ? 'not measured' : `${ms(ov.version.p50, 2)} ms (p99 ${ms(ov.version.p99, 2)} ms)`,
      met: ov === undefined ? null : cmp(ov.version.p50, 2),
    },
    {
      id: 'listContainers',
      what: `ListContainers with ${ov?.population?.containers ?? 1000} containers (p50)`,
      target: '≤ 20 ms',
      measured: ov?.listContainers === undefined ? 'not measured' : `${ms(ov.listContainers.p50, 1)} ms`,
      met: ov?.listContainers === undefined ? null : cmp(ov.listContainers.p50, 20),
    },
    {
      id: 'rss',
      what: `shim RSS with ${ov?.population?.pods ?? 100} pods`,
      target: '≤ 150 MiB',
      measured:
        ov?.rssWithPodsMiB === undefined
          ? 'not measured'
          : `${ms(ov.rssWithPodsMiB, 1)} MiB (idle ${ms(ov.rssIdleMiB, 1)} MiB)`,
      met: ov?.rssWithPodsMiB === undefined ? null : cmp(ov.rssWithPodsMiB, 150),
    },
  ];
}

function notMeasured(r: BenchResults, target: string, raw: { measured: boolean; reason?: string } | undefined): string {
  const t = r.targets[target];
  if (t !== undefined && !t.available) return `not measured: ${t.reason ?? ''}`;
  if (raw !== undefined && !raw.measured) return `raw boot not measured: ${raw.reason ?? ''}`;
  return 'not measured';
}

function row(cells: readonly string[]): string {
  return `| ${cells.join(' | ')} |`;
}

function table(head: readonly string[], rows: readonly (readonly string[])[], align?: readonly ('l' | 'r')[]): string {
  const sep = head.map((_, i) => ((align?.[i] ?? (i === 0 ? 'l' : 'r')) === 'r' ? '---:' : '---'));
  return [row(head), row(sep), ...rows.map(row)].join('\n');
}

const p = (s: Summary | undefined) => `${ms(s?.p50)} / ${ms(s?.p95)}`;

function podStartTables(r: BenchResults): string {
  const ps = r.podStart;
  if (ps === undefined) return '_Not run._';
  const ids = Object.keys(ps);
  const lines: string[] = [];
  lines.push(
    table(
      [
        'target',
        'n',
        'start p50 / p95 (ms)',
        'teardown p50 / p95',
        '10-way start p50 / p95',
        '10-way teardown p50 / p95',
        'starts/s (10-way)',
        'errors',
      ],
      ids.map((id) => {
        const s = ps[id]!.serial;
        const par = ps[id]!.parallel;
        return [
          `\`${id}\``,
          String(s.start.n),
          p(s.start),
          p(s.teardown),
          p(par?.start),
          p(par?.teardown),
          par === undefined ? '–' : par.startsPerSecond.toFixed(1),
          String(s.errors + (par?.errors ?? 0)) +
            ((s.firstError ?? par?.firstError) ? ` (${(s.firstError ?? par?.firstError ?? '').slice(0, 120)})` : ''),
        ];
      }),
    ),
  );
  lines.push('', 'Per CRI call, serial runs (p50 / p95, ms):', '');
  lines.push(
    table(
      [
        'target',
        'RunPodSandbox',
        'CreateContainer',
        'StartContainer',
        'StopPodSandbox',
        'RemovePodSandbox',
        'first log byte',
      ],
      ids.map((id) => {
        const s: PodStartSeries = ps[id]!.serial;
        return [
          `\`${id}\``,
          p(s.runp),
          p(s.create),
          p(s.startContainer),
          p(s.stopp),
          p(s.rmp),
          s.firstOutput ? p(s.firstOutput) : '–',
        ];
      }),
    ),
  );
  const h = ps['hcr-docker'];
  const c = ps['containerd'];
  if (h !== undefined && c !== undefined) {
    lines.push('', 'HCR-docker / containerd (p50 ratios; < 1 means HCR is faster):', '');
    const rr = (a: Summary | undefined, b: Summary | undefined) => x(ratio(a?.p50, b?.p50));
    lines.push(
      table(
        [
          '',
          'pod start',
          'RunPodSandbox',
          'CreateContainer',
          'StartContainer',
          'teardown',
          '10-way start',
          '10-way teardown',
        ],
        [
          [
            'HCR-docker / containerd',
            rr(h.serial.start, c.serial.start),
            rr(h.serial.runp, c.serial.runp),
            rr(h.serial.create, c.serial.create),
            rr(h.serial.startContainer, c.serial.startContainer),
            rr(h.serial.teardown, c.serial.teardown),
            rr(h.parallel?.start, c.parallel?.start),
            rr(h.parallel?.teardown, c.parallel?.teardown),
          ],
        ],
      ),
    );
  }
  return lines.join('\n');
}

function limitsSection(r: BenchResults): string {
  const l = r.limits;
  if (l === undefined) return '_Not run._';
  const ps = r.podStart ?? {};
  const rows: string[][] = [];
  const add = (engine: string, raw: RawBoot | undefined, hcr: Summary | undefined, extra?: Summary) => {
    if (raw === undefined) return;
    if (!raw.measured) {
      rows.push([engine, raw.what, `not measured: ${raw.reason}`, '–', '–']);
      return;
    }
    rows.push([
      engine,
      raw.what,
      `${ms(raw.boot.p50)} / ${ms(raw.boot.p95)} (n=${raw.boot.n})`,
      hcr === undefined ? '–' : `${ms(hcr.p50)} / ${ms(hcr.p95)}`,
      x(ratio(hcr?.p50, raw.boot.p50)) +
        (extra === undefined ? '' : `; first log byte ${x(ratio(extra.p50, raw.boot.p50))}`),
    ]);
  };
  add('hyper', l.hyper, ps['hcr-hyper']?.serial.start);
  add('unikernel', l.unikernel, ps['hcr-unikernel']?.serial.start, ps['hcr-unikernel']?.serial.firstOutput);
  const dp = l.dockerPause;
  if (dp !== undefined) {
    const runp = ps['hcr-docker']?.serial.runp;
    rows.push(
      dp.measured
        ? [
            'docker',
            'Engine API create + start of the pause container, NetworkMode none (as the engine does)',
            `${ms(dp.networkNone?.p50)} / ${ms(dp.networkNone?.p95)} (n=${dp.networkNone?.n ?? 0})`,
            runp === undefined ? '–' : `RunPodSandbox ${ms(runp.p50)} / ${ms(runp.p95)}`,
            x(ratio(runp?.p50, dp.networkNone?.p50)),
          ]
        : ['docker', 'pause container create + start', `not measured: ${dp.reason ?? ''}`, '–', '–'],
    );
    if (dp.measured) {
      rows.push([
        'docker',
        'the same with NetworkMode host (no libnetwork namespace)',
        `${ms(dp.networkHost?.p50)} / ${ms(dp.networkHost?.p95)}`,
        '–',
        '–',
      ]);
      if (dp.networkNoneParallel !== undefined) {
        const par = ps['hcr-docker']?.parallel?.runp;
        rows.push([
          'docker',
          `the same (NetworkMode none), ${dp.concurrency ?? '?'} at once`,
          `${ms(dp.networkNoneParallel.p50)} / ${ms(dp.networkNoneParallel.p95)} (n=${dp.networkNoneParallel.n})`,
          par === undefined ? '–' : `10-way RunPodSandbox ${ms(par.p50)} / ${ms(par.p95)}`,
          x(ratio(par?.p50, dp.networkNoneParallel.p50)),
        ]);
      }
    }
  }
  const cmds = [l.hyper, l.unikernel].flatMap((b) => (b?.measured === true ? [`- ${b.what}: \`${b.command}\``] : []));
  return [
    table(['engine', 'raw measurement', 'raw p50 / p95 (ms)', 'HCR pod start p50 / p95', 'HCR / raw (p50)'], rows, [
      'l',
      'l',
      'r',
      'r',
      'r',
    ]),
    '',
    ...cmds,
  ].join('\n');
}

function overheadSection(r: BenchResults): string {
  const ov = r.overhead;
  if (ov === undefined) return '_Not run._';
  const ids = Object.keys(ov);
  const pr = (s: Summary | undefined) => `${ms(s?.p50, 2)} / ${ms(s?.p99, 2)}`;
  const lines = [
    table(
      ['', ...ids.map((i) => `\`${i}\``)],
      [
        ['Version p50 / p99 (ms)', ...ids.map((i) => pr(ov[i]!.version))],
        [
          'population: pods / containers (created, not started)',
          ...ids.map((i) => {
            const pop = ov[i]!.population;
            return pop === undefined ? '–' : `${pop.pods} / ${pop.containers} (made in ${pop.createSeconds} s)`;
          }),
        ],
        ['ListContainers p50 / p99 (ms)', ...ids.map((i) => pr(ov[i]!.listContainers))],
        ['ListPodSandbox p50 / p99 (ms)', ...ids.map((i) => pr(ov[i]!.listPodSandbox))],
        ['ContainerStatus p50 / p99 (ms)', ...ids.map((i) => pr(ov[i]!.containerStatus))],
        [
          `ContainerStats p50 / p99 (ms), running containers`,
          ...ids.map((i) => `${pr(ov[i]!.containerStats)} (${ov[i]!.statsPopulation ?? '–'})`),
        ],
        ['ListContainerStats p50 / p99 (ms)', ...ids.map((i) => pr(ov[i]!.listContainerStats))],
        ['CPU per ContainerStats call: runtime process (ms)', ...ids.map((i) => ms(ov[i]!.statsCpuMsPerCall, 2))],
        [
          'CPU per ContainerStats call: daemons behind it (ms, upper bound)',
          ...ids.map((i) => ms(ov[i]!.statsDaemonCpuMsPerCall, 2)),
        ],
        ['RSS idle (MiB)', ...ids.map((i) => ms(ov[i]!.rssIdleMiB, 1))],
        ['RSS with the population (MiB)', ...ids.map((i) => ms(ov[i]!.rssWithPodsMiB, 1))],
      ],
    ),
  ];
  const errs = ids.flatMap((i) => ov[i]!.errors.map((e) => `- \`${i}\`: ${e}`));
  if (errs.length > 0) lines.push('', 'Errors:', '', ...errs);
  return lines.join('\n');
}

function densitySection(r: BenchResults): string {
  const d = r.density;
  if (d === undefined) return '_Not run._';
  return table(
    [
      'target',
      'limit',
      'started',
      'healthy after hold',
      'stopped by',
      'start time (s)',
      'host memory / pod (MiB)',
      'runtime RSS / pod (MiB)',
      'teardown (s)',
    ],
    Object.entries(d).map(([id, v]) => [
      `\`${id}\``,
      String(v.limit),
      String(v.started),
      `${v.healthy} (${v.holdSeconds} s)`,
      v.stoppedBy.slice(0, 160),
      ms(v.startSeconds, 1),
      ms(v.memPerPodMiB, 1),
      ms(v.rssPerPodMiB, 2),
      ms(v.teardownSeconds, 1),
    ]),
    ['l', 'r', 'r', 'r', 'l', 'r', 'r', 'r', 'r'],
  );
}

/** Metrics compared before and after the fast paths: label and getter for a target suffix ('' or '-before'). */
const COMPARED: readonly [string, (r: BenchResults, sfx: string) => number | undefined][] = [
  ['HCR-docker pod start p50 (ms)', (r, sfx) => r.podStart?.[`hcr-docker${sfx}`]?.serial.start.p50],
  ['HCR-docker pod start p95 (ms)', (r, sfx) => r.podStart?.[`hcr-docker${sfx}`]?.serial.start.p95],
  ['HCR-docker RunPodSandbox p50 (ms)', (r, sfx) => r.podStart?.[`hcr-docker${sfx}`]?.serial.runp.p50],
  ['HCR-docker CreateContainer p50 (ms)', (r, sfx) => r.podStart?.[`hcr-docker${sfx}`]?.serial.create.p50],
  ['HCR-docker StartContainer p50 (ms)', (r, sfx) => r.podStart?.[`hcr-docker${sfx}`]?.serial.startContainer.p50],
  ['HCR-docker teardown p50 (ms)', (r, sfx) => r.podStart?.[`hcr-docker${sfx}`]?.serial.teardown.p50],
  ['HCR-docker 10-way start p50 (ms)', (r, sfx) => r.podStart?.[`hcr-docker${sfx}`]?.parallel?.start.p50],
  ['HCR-docker 10-way teardown p50 (ms)', (r, sfx) => r.podStart?.[`hcr-docker${sfx}`]?.parallel?.teardown.p50],
  ['HCR-unikernel pod start p50 (ms)', (r, sfx) => r.podStart?.[`hcr-unikernel${sfx}`]?.serial.start.p50],
  ['HCR-unikernel teardown p50 (ms)', (r, sfx) => r.podStart?.[`hcr-unikernel${sfx}`]?.serial.teardown.p50],
  ['ContainerStats p50 (ms)', (r, sfx) => r.overhead?.[`hcr-docker${sfx}`]?.containerStats?.p50],
  ['ContainerStats p99 (ms)', (r, sfx) => r.overhead?.[`hcr-docker${sfx}`]?.containerStats?.p99],
  ['ListContainerStats p50 (ms)', (r, sfx) => r.overhead?.[`hcr-docker${sfx}`]?.listContainerStats?.p50],
  ['CPU per ContainerStats call, shim (ms)', (r, sfx) => r.overhead?.[`hcr-docker${sfx}`]?.statsCpuMsPerCall],
  [
    'CPU per ContainerStats call, dockerd (ms, upper bound)',
    (r, sfx) => r.overhead?.[`hcr-docker${sfx}`]?.statsDaemonCpuMsPerCall,
  ],
];

function fastPathSection(r: BenchResults): string {
  const lines: string[] = FAST_PATHS.map((f) => `- **${f.name}** — ${f.status}. ${f.detail}`);
  lines.push('');
  if (r.before === undefined) {
    lines.push('_This run has no "before" targets (run with `--before REF` to measure the fast paths against REF)._');
    return lines.join('\n');
  }
  lines.push(
    `Before and after in the same run, interleaved: "before" is HCR at \`${r.before.sha.slice(0, 12)}\` ` +
      '(`--before`, the last commit before these fast paths), started from a snapshot of that commit ' +
      'beside the current HCR; ' +
      `containerd ran in the same loop (pod start p50 ${ms(r.podStart?.['containerd']?.serial.start.p50)} ms, ` +
      `teardown p50 ${ms(r.podStart?.['containerd']?.serial.teardown.p50)} ms).`,
    '',
  );
  const fmtV = (v: number | undefined) => (v === undefined || !Number.isFinite(v) ? '–' : v.toFixed(v < 10 ? 2 : 0));
  lines.push(
    table(
      ['metric', 'before', 'after', 'after / before'],
      COMPARED.map(([label, get]) => [
        label,
        fmtV(get(r, '-before')),
        fmtV(get(r, '')),
        x(ratio(get(r, ''), get(r, '-before'))),
      ]),
    ),
  );
  return lines.join('\n');
}

/**
 * The chart's panels: pods that boot a VM kernel take seconds and would
 * flatten everything else on a shared scale, so targets whose serial start
 * is far above the rest get a panel of their own.
 */
function chartPanels(r: BenchResults): Panel[] {
  const entries = Object.entries(r.podStart ?? {}).filter(([id]) => !id.endsWith('-before'));
  const groups = entries.map(([id, v]): [number, BarGroup] => [
    v.serial.start.p50,
    {
      label: id,
      bars: [
        { series: 'start, serial (p50, whisker p95)', value: v.serial.start.p50, whisker: v.serial.start.p95 },
        {
          series: 'start, 10-way (p50, p95)',
          value: v.parallel?.start.p50 ?? Number.NaN,
          whisker: v.parallel?.start.p95 ?? Number.NaN,
        },
        { series: 'teardown, serial (p50, p95)', value: v.serial.teardown.p50, whisker: v.serial.teardown.p95 },
      ],
    },
  ]);
  const starts = groups
    .map(([p50]) => p50)
    .filter(Number.isFinite)
    .sort((a, b) => a - b);
  const median = starts[Math.floor((starts.length - 1) / 2)] ?? Number.NaN;
  const slow = (p50: number) => Number.isFinite(median) && p50 > 4 * median;
  const panels: Panel[] = [
    { subtitle: 'Containers and unikernels', groups: groups.filter(([p]) => !slow(p)).map(([, g]) => g) },
    { subtitle: 'VM pods (own scale)', groups: groups.filter(([p]) => slow(p)).map(([, g]) => g) },
  ];
  return panels.filter((p) => p.groups.length > 0);
}

/** The fast-path chart: before and after (and containerd) per pod-start metric, starts and teardowns apart. */
function fastPathPanels(r: BenchResults): Panel[] {
  const ps = r.podStart ?? {};
  const bars = (id: string, pick: (s: PodStartSeries) => Summary | undefined, parallel = false) => {
    const get = (target: string) => {
      const t = ps[target];
      return t === undefined ? undefined : pick(parallel ? (t.parallel ?? t.serial) : t.serial);
    };
    const entry = (series: string, s: Summary | undefined) => ({
      series,
      value: s?.p50 ?? Number.NaN,
      whisker: s?.p95 ?? Number.NaN,
    });
    return [
      entry('before (p50, whisker p95)', get(`${id}-before`)),
      entry('after', get(id)),
      ...(id === 'hcr-docker' ? [entry('containerd, same run', get('containerd'))] : []),
    ];
  };
  return [
    {
      subtitle: 'Start',
      groups: [
        { label: 'docker: pod start', bars: bars('hcr-docker', (s) => s.start) },
        { label: 'docker: RunPodSandbox', bars: bars('hcr-docker', (s) => s.runp) },
        { label: 'docker: 10-way pod start', bars: bars('hcr-docker', (s) => s.start, true) },
        { label: 'unikernel: pod start', bars: bars('hcr-unikernel', (s) => s.start) },
      ],
    },
    {
      subtitle: 'Teardown',
      groups: [
        { label: 'docker: teardown', bars: bars('hcr-docker', (s) => s.teardown) },
        { label: 'docker: 10-way teardown', bars: bars('hcr-docker', (s) => s.teardown, true) },
        { label: 'unikernel: teardown', bars: bars('hcr-unikernel', (s) => s.teardown) },
      ],
    },
  ];
}

/**
 * Writes docs/benchmarks.md and docs/benchmarks/pod-start.svg from one result
 * set. The Markdown goes through the repo's prettier config, so the generated
 * file passes `pnpm lint` as written.
 */
export async function writeReport(repoRoot: string, r: BenchResults): Promise<void> {
  const docs = join(repoRoot, 'docs');
  mkdirSync(join(docs, 'benchmarks'), { recursive: true });
  const svgPath = join(docs, 'benchmarks', 'pod-start.svg');
  writeFileSync(svgPath, barChart('Pod start and teardown (ms, lower is better)', 'ms', chartPanels(r)));
  const fastSvg = join(docs, 'benchmarks', 'fast-paths.svg');
  if (r.before !== undefined) {
    writeFileSync(fastSvg, barChart('Fast paths: before and after, same run (ms)', 'ms', fastPathPanels(r)));
  } else {
    rmSync(fastSvg, { force: true });
  }
  const g = goals(r);
  const m = r.machine;
  const unavailable = Object.entries(r.targets).filter(([, t]) => !t.available);
  const md = `<!-- Generated by \`pnpm bench\` (bench/report/markdown.ts) from bench/results/latest.json; edit the generator, not this file. -->
# Benchmarks

HCR against containerd ${m.versions['containerd']?.split(' ')[2] ?? '1.6'} + runc on the same host, in the same run,
through the same TypeScript CRI client (\`packages/cri/src/client.ts\`) — no crictl, so no
per-call process start-up in any figure. Regenerate with \`pnpm bench\` (20–30 minutes on this host, also with
\`--before\`; \`pnpm bench --help\` for parts and sizes) or, from the stored results only,
\`pnpm bench --report-only\`.

- **Command**: \`pnpm bench ${((r.options['argv'] as string[] | undefined) ?? []).join(' ')}\`
- **Run**: ${r.startedAt.slice(0, 19)}Z, ${Math.round(r.durationSeconds / 60)} min${r.label ? `, "${r.label}"` : ''}; commit \`${r.commit.sha.slice(0, 12)}\` ${r.commit.dirty ? '(with uncommitted changes in the tree) ' : ''}— ${r.commit.subject}
- **Machine**: ${m.cpuModel}, ${m.cores} cores, ${Math.round(m.memTotalMiB / 1024)} GiB; ${m.os}, kernel ${m.kernel}; Node ${m.node}
- **Tools**: dockerd ${m.versions['dockerd'] ?? '?'}, ${m.versions['containerd'] ?? '?'}, ${m.versions['runc']?.replace(/\n.*/s, '') ?? '?'}, ${m.versions['qemu'] ?? '?'}, CNI plugins ${m.versions['cniPlugins'] ?? '?'}
- **Shim**: ${r.options['shim'] === 'dist' ? 'the build (`packages/cri/dist/bin.js`, as a node runs it)' : "TypeScript sources through tsx (`--shim source`); its memory includes tsx's transpiled sources and source maps, so RSS figures overstate a built shim"}${r.before === undefined ? '' : '; the `-before` targets run from sources'}
- **Load average** (1 min) at start / end: ${m.loadAtStart.toFixed(2)} / ${r.loadAtEnd.toFixed(2)} — other work on this shared host was running; see [Method](#method).
${unavailable.length > 0 ? `- **Not measured**: ${unavailable.map(([id, t]) => `\`${id}\` (${t.reason ?? ''})`).join('; ')}\n` : ''}${r.failures.length > 0 ? `- **Failed parts**: ${r.failures.map((f) => `${f.part}: ${f.error}`).join('; ')}\n` : ''}
## Goals (issue 9)

${table(
  ['goal', 'target', 'measured', 'met'],
  g.map((goal) => [goal.what, goal.target, goal.measured, goal.met === null ? '–' : goal.met ? 'yes' : '**no**']),
  ['l', 'r', 'l', 'l'],
)}

${g
  .filter((goal) => goal.met !== true && TARGET_NOTES[goal.id] !== '')
  .map((goal) => `- **${goal.what}** — ${TARGET_NOTES[goal.id]}`)
  .join('\n')}

## Pod start and teardown

Pod start = RunPodSandbox → CreateContainer → StartContainer returned (the container is
running); teardown = StopPodSandbox → RemovePodSandbox. Kubelet-like configs: pod network
namespace, a log directory, one container. Serial iterations alternate between targets
after one unmeasured warm-up each; the 10-way runs start 10 pods at once, then tear the 10
down at once.

![pod start and teardown](benchmarks/${relative(docs, svgPath).replace(/^benchmarks\//, '')})

${podStartTables(r)}

## Engine limits: HCR against the bare monitor

${limitsSection(r)}

## Shim overhead

${overheadSection(r)}

## Density

${densitySection(r)}

## Fast paths

${r.before === undefined ? '' : '![fast paths before and after](benchmarks/fast-paths.svg)\n\n'}${fastPathSection(r)}

## Method

${METHOD_NOTES}
`;
  const options = (await prettier.resolveConfig(join(docs, 'benchmarks.md'))) ?? {};
  writeFileSync(join(docs, 'benchmarks.md'), await prettier.format(md, { ...options, parser: 'markdown' }));
}

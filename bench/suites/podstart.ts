import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { CriDriver, StartSteps, TeardownSteps } from '../lib/cri.js';
import { round, summarize, type Summary } from '../lib/stats.js';

/** Per-step summaries of one target's pod starts and teardowns. */
export interface PodStartSeries {
  readonly start: Summary;
  readonly runp: Summary;
  readonly create: Summary;
  readonly startContainer: Summary;
  readonly teardown: Summary;
  readonly stopp: Summary;
  readonly rmp: Summary;
  /** RunPodSandbox → first byte in the container's CRI log (targets whose workload prints at boot). */
  readonly firstOutput?: Summary;
  readonly errors: number;
  readonly firstError?: string;
}

/** Parallel figures add wall-clock time per batch and the throughput it implies. */
export interface ParallelSeries extends PodStartSeries {
  readonly concurrency: number;
  readonly batchStartWall: Summary;
  readonly batchTeardownWall: Summary;
  /** Pods started per second while `concurrency` starts were in flight. */
  readonly startsPerSecond: number;
}

/** Pod start results of one target. */
export interface PodStartResult {
  readonly serial: PodStartSeries;
  readonly parallel?: ParallelSeries;
}

/** Options of {@link runPodStart}. */
export interface PodStartOptions {
  readonly iterations: number;
  readonly concurrency: number;
  readonly parallel: boolean;
  /** Targets whose first log byte is also timed (the unikernel prints at boot). */
  readonly firstOutput: ReadonlySet<string>;
  readonly log: (line: string) => void;
}

class Recorder {
  readonly start: number[] = [];
  readonly runp: number[] = [];
  readonly create: number[] = [];
  readonly startContainer: number[] = [];
  readonly teardown: number[] = [];
  readonly stopp: number[] = [];
  readonly rmp: number[] = [];
  readonly firstOutput: number[] = [];
  errors = 0;
  firstError: string | undefined;

  addStart(s: StartSteps): void {
    this.start.push(s.total);
    this.runp.push(s.runp);
    this.create.push(s.create);
    this.startContainer.push(s.start);
  }

  addTeardown(t: TeardownSteps): void {
    this.teardown.push(t.total);
    this.stopp.push(t.stopp);
    this.rmp.push(t.rmp);
  }

  fail(e: unknown): void {
    this.errors++;
    this.firstError ??= errorText(e);
  }

  series(): PodStartSeries {
    return {
      start: round(summarize(this.start)),
      runp: round(summarize(this.runp)),
      create: round(summarize(this.create)),
      startContainer: round(summarize(this.startContainer)),
      teardown: round(summarize(this.teardown)),
      stopp: round(summarize(this.stopp)),
      rmp: round(summarize(this.rmp)),
      ...(this.firstOutput.length > 0 ? { firstOutput: round(summarize(this.firstOutput)) } : {}),
      errors: this.errors,
      ...(this.firstError === undefined ? {} : { firstError: this.firstError }),
    };
  }
}

/** A gRPC error's details, or any error's message. */
export function errorText(e: unknown): string {
  const g = e as { details?: string; message?: string };
  return (g.details ?? g.message ?? String(e)).slice(0, 500);
}

/**
 * Pod start and teardown, per target. Serial iterations are interleaved
 * across targets (A, B, A, B, …) after one unmeasured warm-up each, so slow
 * drift in background load on a shared 2-core host hits every runtime alike
 * instead of whichever happened to run last. Parallel batches start
 * `concurrency` pods at once, then tear them down at once.
 */
export async function runPodStart(
  drivers: readonly CriDriver[],
  o: PodStartOptions,
): Promise<Record<string, PodStartResult>> {
  const serial = new Map(drivers.map((d) => [d.target.id, new Recorder()]));
  const live = new Set<CriDriver>(drivers);
  for (const d of drivers) {
    try {
      const pod = await d.startPod('warmup');
      await d.teardown(pod.podId);
    } catch (e) {
      o.log(`  ${d.target.id}: warm-up failed, not measured: ${errorText(e)}`);
      serial.get(d.target.id)?.fail(e);
      live.delete(d);
    }
  }
  for (let i = 0; i < o.iterations; i++) {
    for (const d of live) {
      const rec = serial.get(d.target.id) as Recorder;
      await oneSerial(d, rec, o.firstOutput.has(d.target.id), `s${i}`);
    }
    if ((i + 1) % 5 === 0 || i + 1 === o.iterations) {
      o.log(
        `  serial ${i + 1}/${o.iterations}: ` +
          [...live]
            .map((d) => `${d.target.id} p50 ${fmt(summarize(serial.get(d.target.id)!.start).p50)} ms`)
            .join(', '),
      );
    }
  }
  const parallel = new Map<string, { rec: Recorder; startWall: number[]; tearWall: number[] }>();
  if (o.parallel) {
    for (const d of live) parallel.set(d.target.id, { rec: new Recorder(), startWall: [], tearWall: [] });
    const batches = Math.ceil(o.iterations / o.concurrency);
    for (let b = 0; b < batches; b++) {
      for (const d of live) await oneBatch(d, parallel.get(d.target.id)!, o.concurrency, `p${b}`);
      o.log(
        `  parallel batch ${b + 1}/${batches}: ` +
          [...live]
            .map((d) => `${d.target.id} p50 ${fmt(summarize(parallel.get(d.target.id)!.rec.start).p50)} ms`)
            .join(', '),
      );
    }
  }
  const out: Record<string, PodStartResult> = {};
  for (const d of drivers) {
    const p = parallel.get(d.target.id);
    const startWallTotal = p?.startWall.reduce((a, b) => a + b, 0) ?? 0;
    out[d.target.id] = {
      serial: serial.get(d.target.id)!.series(),
      ...(p === undefined
        ? {}
        : {
            parallel: {
              ...p.rec.series(),
              concurrency: o.concurrency,
              batchStartWall: round(summarize(p.startWall)),
              batchTeardownWall: round(summarize(p.tearWall)),
              startsPerSecond:
                startWallTotal > 0 ? Math.round((p.rec.start.length / (startWallTotal / 1000)) * 100) / 100 : 0,
            },
          }),
    };
  }
  return out;
}

async function oneSerial(d: CriDriver, rec: Recorder, firstOutput: boolean, prefix: string): Promise<void> {
  let podId: string | null = null;
  try {
    const t0 = performance.now();
    const pod = await d.startPod(`bench-${prefix}`);
    podId = pod.podId;
    rec.addStart(pod.steps);
    if (firstOutput) {
      const ms = await waitFirstByte(join(pod.config.logDirectory, 'main.log'), t0, 30_000);
      if (ms !== null) rec.firstOutput.push(ms);
    }
    const t = await d.teardown(pod.podId);
    podId = null;
    rec.addTeardown(t);
  } catch (e) {
    rec.fail(e);
    if (podId !== null) await d.teardown(podId).catch(() => undefined);
  }
}

async function oneBatch(
  d: CriDriver,
  acc: { rec: Recorder; startWall: number[]; tearWall: number[] },
  concurrency: number,
  prefix: string,
): Promise<void> {
  const t0 = performance.now();
  const started = await Promise.all(
    Array.from({ length: concurrency }, async (_, k) => {
      try {
        const pod = await d.startPod(`bench-${prefix}-${k}`);
        acc.rec.addStart(pod.steps);
        return pod.podId;
      } catch (e) {
        acc.rec.fail(e);
        return null;
      }
    }),
  );
  acc.startWall.push(performance.now() - t0);
  const t1 = performance.now();
  await Promise.all(
    started.map(async (podId) => {
      if (podId === null) return;
      try {
        acc.rec.addTeardown(await d.teardown(podId));
      } catch (e) {
        acc.rec.fail(e);
        await d.teardown(podId).catch(() => undefined);
      }
    }),
  );
  acc.tearWall.push(performance.now() - t1);
}

/** Polls a log file until it has a byte; returns ms since `t0`, or null on timeout. */
async function waitFirstByte(path: string, t0: number, timeoutMs: number): Promise<number | null> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (existsSync(path) && statSync(path).size > 0) return performance.now() - t0;
    await new Promise((r) => setTimeout(r, 5));
  }
  return null;
}

/** Formats a millisecond figure for progress lines. */
export function fmt(ms: number): string {
  return Number.isFinite(ms) ? ms.toFixed(0) : '–';
}

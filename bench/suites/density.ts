import type { CriDriver } from '../lib/cri.js';
import { memAvailableKiB } from '../lib/machine.js';
import { errorText } from './podstart.js';
import { removePods } from './overhead.js';

/** How many pods one target held, and what they cost the host. */
export interface DensityResult {
  readonly limit: number;
  readonly started: number;
  /** Pods whose container was still running after the hold period. */
  readonly healthy: number;
  /** Why starting stopped: `limit` or the first failure's message. */
  readonly stoppedBy: string;
  readonly holdSeconds: number;
  readonly startSeconds: number;
  /** (MemAvailable before − after the pods started) / pods, MiB. */
  readonly memPerPodMiB: number;
  /** RSS growth of the runtime's main process per pod, MiB. */
  readonly rssPerPodMiB: number;
  readonly teardownSeconds: number;
}

/** Options of {@link runDensity}. */
export interface DensityOptions {
  readonly limit: number;
  readonly holdSeconds: number;
  /** Pods started at once (a few: a node starts pods in bursts, not one by one). */
  readonly concurrency: number;
  readonly rssKiB: () => number;
  readonly log: (line: string) => void;
}

/**
 * Starts pods until `limit` or the first failure, holds them, then checks
 * every container still runs. Memory per pod is the drop in MemAvailable,
 * which counts everything the pods cost the host (runtime daemons, shims,
 * QEMU, page tables, kernel objects), not just one process.
 */
export async function runDensity(d: CriDriver, o: DensityOptions): Promise<DensityResult> {
  const pods: { podId: string; containerId: string }[] = [];
  const mem0 = memAvailableKiB();
  const rss0 = o.rssKiB();
  let stoppedBy = 'limit';
  const t0 = performance.now();
  try {
    let failed = false;
    while (pods.length < o.limit && !failed) {
      const batch = Math.min(o.concurrency, o.limit - pods.length);
      const results = await Promise.allSettled(Array.from({ length: batch }, () => d.startPod('bench-density')));
      for (const r of results) {
        if (r.status === 'fulfilled') pods.push({ podId: r.value.podId, containerId: r.value.containerId });
        else if (!failed) {
          failed = true;
          stoppedBy = `failure after ${pods.length} pods: ${errorText(r.reason)}`;
        }
      }
      if (pods.length % 20 < batch) o.log(`  ${d.target.id}: ${pods.length} pods running`);
    }
    const startSeconds = Math.round((performance.now() - t0) / 100) / 10;
    await new Promise((r) => setTimeout(r, o.holdSeconds * 1000));
    const mem1 = memAvailableKiB();
    const rss1 = o.rssKiB();
    let healthy = 0;
    for (const p of pods) {
      const state = await d.containerState(p.containerId).catch(() => 'UNKNOWN');
      if (state === 'CONTAINER_RUNNING') healthy++;
    }
    const n = Math.max(1, pods.length);
    const t1 = performance.now();
    await removePods(
      d,
      pods.map((p) => p.podId),
    );
    const teardownSeconds = Math.round((performance.now() - t1) / 100) / 10;
    o.log(`  ${d.target.id}: ${pods.length} started, ${healthy} healthy, ${stoppedBy}`);
    return {
      limit: o.limit,
      started: pods.length,
      healthy,
      stoppedBy,
      holdSeconds: o.holdSeconds,
      startSeconds,
      memPerPodMiB: Math.round(((mem0 - mem1) / 1024 / n) * 100) / 100,
      rssPerPodMiB: Math.round(((rss1 - rss0) / 1024 / n) * 100) / 100,
      teardownSeconds,
    };
  } finally {
    // Normal path removed them already; after an exception this is the cleanup.
    await removePods(
      d,
      (await d.benchPods().catch(() => [])).filter((id) => pods.some((p) => p.podId === id)),
    );
  }
}

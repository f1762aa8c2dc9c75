import { readFileSync } from 'node:fs';
import type { CriDriver } from '../lib/cri.js';
import { round, summarize, type Summary } from '../lib/stats.js';
import { errorText } from './podstart.js';

/** Per-call costs of one CRI endpoint. */
export interface OverheadResult {
  readonly version: Summary;
  readonly listPodSandbox?: Summary;
  readonly listContainers?: Summary;
  readonly containerStatus?: Summary;
  /** Containers (and pods) that existed while the list/status calls were timed. */
  readonly population?: { readonly pods: number; readonly containers: number; readonly createSeconds: number };
  readonly containerStats?: Summary;
  readonly listContainerStats?: Summary;
  /** CPU time the runtime's own process (the shim, containerd) spent per ContainerStats call (ms). */
  readonly statsCpuMsPerCall?: number;
  /**
   * CPU time of the daemons behind it (dockerd and its containerd; containerd's
   * shims) per call (ms). dockerd is shared with anything else on the host, so
   * this is an upper bound.
   */
  readonly statsDaemonCpuMsPerCall?: number;
  readonly statsPopulation?: number;
  /** Resident set size of the runtime's main process (MiB). */
  readonly rssIdleMiB: number;
  readonly rssWithPodsMiB?: number;
  readonly errors: readonly string[];
}

/** Options of {@link runOverhead}. */
export interface OverheadOptions {
  readonly versionCalls: number;
  readonly pods: number;
  readonly containersPerPod: number;
  readonly listCalls: number;
  readonly statusCalls: number;
  readonly statsPods: number;
  readonly statsCalls: number;
  /** Main process of the runtime (its RSS is reported). */
  readonly rssKiB: () => number;
  /** The runtime's own process, whose CPU time is the cost of a stats call. */
  readonly cpuPid: number;
  /** Daemons behind the runtime, whose CPU time the calls may also cost. */
  readonly daemonPids: () => readonly number[];
  readonly log: (line: string) => void;
}

async function timeCalls(n: number, call: (i: number) => Promise<unknown>): Promise<Summary> {
  const samples: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await call(i);
    samples.push(performance.now() - t0);
  }
  return round(summarize(samples), 2);
}

/** utime + stime of a process, in ms (clock ticks are 100 Hz on Linux). */
function cpuMs(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) * 10;
  } catch {
    return 0;
  }
}

/**
 * Shim overhead: unary round trip (Version), list and status calls over a
 * large population of containers that exist but do not run (100 pods × 10
 * created containers by default — CreateContainer without StartContainer, so
 * the population costs dockerd no processes), stats calls over running
 * containers, and the runtime's RSS at idle and with the pods.
 */
export async function runOverhead(d: CriDriver, o: OverheadOptions): Promise<OverheadResult> {
  const errors: string[] = [];
  for (let i = 0; i < 100; i++) await d.rt('Version', {});
  const version = await timeCalls(o.versionCalls, () => d.rt('Version', {}));
  o.log(`  ${d.target.id}: Version p50 ${version.p50} ms, p99 ${version.p99} ms`);
  const rssIdleMiB = Math.round(o.rssKiB() / 102.4) / 10;

  let result: OverheadResult = { version, rssIdleMiB, errors };
  if (o.pods > 0) {
    try {
      result = { ...result, ...(await populationPhase(d, o)) };
    } catch (e) {
      errors.push(`list/status phase: ${errorText(e)}`);
      o.log(`  ${d.target.id}: list/status phase failed: ${errorText(e)}`);
    }
  }
  if (o.statsPods > 0) {
    try {
      result = { ...result, ...(await statsPhase(d, o)) };
    } catch (e) {
      errors.push(`stats phase: ${errorText(e)}`);
      o.log(`  ${d.target.id}: stats phase failed: ${errorText(e)}`);
    }
  }
  return result;
}

/** List and status calls over `pods × containersPerPod` created (not started) containers. */
async function populationPhase(
  d: CriDriver,
  o: OverheadOptions,
): Promise<
  Pick<OverheadResult, 'listContainers' | 'listPodSandbox' | 'containerStatus' | 'population' | 'rssWithPodsMiB'>
> {
  const pods: string[] = [];
  const containers: string[] = [];
  try {
    const t0 = performance.now();
    for (let p = 0; p < o.pods; p++) {
      const config = d.podConfig('bench-ovh');
      const { podSandboxId } = await d.rt<{ podSandboxId: string }>('RunPodSandbox', {
        config,
        runtimeHandler: d.target.runtimeHandler,
      });
      pods.push(podSandboxId);
      for (let k = 0; k < o.containersPerPod; k++) {
        const { containerId } = await d.rt<{ containerId: string }>('CreateContainer', {
          podSandboxId,
          config: d.containerConfig(`c${k}`),
          sandboxConfig: config,
        });
        containers.push(containerId);
      }
      if ((p + 1) % 20 === 0)
        o.log(`  ${d.target.id}: ${p + 1}/${o.pods} pods, ${containers.length} containers created`);
    }
    const createSeconds = Math.round((performance.now() - t0) / 100) / 10;
    const rssWithPodsMiB = Math.round(o.rssKiB() / 102.4) / 10;
    for (let i = 0; i < 5; i++) {
      await d.rt('ListContainers', {});
      await d.rt('ListPodSandbox', {});
    }
    const listed = await d.rt<{ containers: unknown[] }>('ListContainers', {});
    if (listed.containers.length < containers.length)
      throw new Error(`ListContainers returned ${listed.containers.length} of ${containers.length} containers`);
    // Timed without decoding the reply in this client (see CriDriver.rtRaw).
    const listContainers = await timeCalls(o.listCalls, () => d.rtRaw('ListContainers', {}));
    const listPodSandbox = await timeCalls(o.listCalls, () => d.rtRaw('ListPodSandbox', {}));
    const containerStatus = await timeCalls(o.statusCalls, (i) =>
      d.rt('ContainerStatus', { containerId: containers[(i * 7919) % containers.length] }),
    );
    o.log(
      `  ${d.target.id}: ${containers.length} containers: ListContainers p50 ${listContainers.p50} ms, ` +
        `ListPodSandbox p50 ${listPodSandbox.p50} ms, ContainerStatus p99 ${containerStatus.p99} ms, RSS ${rssWithPodsMiB} MiB`,
    );
    return {
      listContainers,
      listPodSandbox,
      containerStatus,
      population: { pods: pods.length, containers: containers.length, createSeconds },
      rssWithPodsMiB,
    };
  } finally {
    await removePods(d, pods);
  }
}

/** Stats calls over running containers: what the kubelet polls every few seconds, and what they cost in CPU. */
async function statsPhase(
  d: CriDriver,
  o: OverheadOptions,
): Promise<
  Pick<
    OverheadResult,
    'containerStats' | 'listContainerStats' | 'statsCpuMsPerCall' | 'statsDaemonCpuMsPerCall' | 'statsPopulation'
  >
> {
  const running: { podId: string; containerId: string }[] = [];
  try {
    for (let p = 0; p < o.statsPods; p++) {
      const pod = await d.startPod('bench-stats');
      running.push({ podId: pod.podId, containerId: pod.containerId });
    }
    for (const r of running) await d.rt('ContainerStats', { containerId: r.containerId });
    const daemons = o.daemonPids();
    const own0 = cpuMs(o.cpuPid);
    const daemon0 = daemons.reduce((a, p) => a + cpuMs(p), 0);
    const containerStats = await timeCalls(o.statsCalls, (i) =>
      d.rt('ContainerStats', { containerId: running[i % running.length]!.containerId }),
    );
    const own1 = cpuMs(o.cpuPid);
    const daemon1 = daemons.reduce((a, p) => a + cpuMs(p), 0);
    const listContainerStats = await timeCalls(Math.max(10, Math.floor(o.statsCalls / 10)), () =>
      d.rt('ListContainerStats', {}),
    );
    const perCall = (ms: number) => Math.round((ms / o.statsCalls) * 100) / 100;
    const statsCpuMsPerCall = perCall(own1 - own0);
    const statsDaemonCpuMsPerCall = perCall(daemon1 - daemon0);
    o.log(
      `  ${d.target.id}: ContainerStats p50 ${containerStats.p50} ms p99 ${containerStats.p99} ms, ` +
        `ListContainerStats(${running.length}) p50 ${listContainerStats.p50} ms, ` +
        `CPU ${statsCpuMsPerCall} ms/call (+ daemons ${statsDaemonCpuMsPerCall})`,
    );
    return {
      containerStats,
      listContainerStats,
      statsCpuMsPerCall,
      statsDaemonCpuMsPerCall,
      statsPopulation: running.length,
    };
  } finally {
    await removePods(
      d,
      running.map((r) => r.podId),
    );
  }
}

/** Tears pods down four at a time (faster cleanup without flooding the runtime). */
export async function removePods(d: CriDriver, ids: readonly string[]): Promise<void> {
  const queue = [...ids];
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      for (let id = queue.shift(); id !== undefined; id = queue.shift()) {
        await d.teardown(id).catch(() => undefined);
      }
    }),
  );
}

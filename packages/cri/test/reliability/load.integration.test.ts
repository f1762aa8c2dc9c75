import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { criClient, type CriClient } from '../../src/client.js';
import { containerConfig, cri, podConfig } from '../helpers/cri.js';
import { BUSYBOX, type TestShim } from '../helpers/shim.js';
import {
  allLeaks,
  rssKiB,
  shimPid,
  sleep,
  startPrivateDockerd,
  startReliabilityShim,
  type PrivateDockerd,
} from './harness.js';

/** Seconds of load: 15 in CI; `HCR_LOAD_SECONDS=60` for the full figure. */
const SECONDS = Number(process.env['HCR_LOAD_SECONDS'] ?? 15);
/** Concurrent read clients, each on its own connection. */
const CLIENTS = Number(process.env['HCR_LOAD_CLIENTS'] ?? 50);
/** Pods created and removed side by side while the clients read. */
const CHURNERS = 2;
/**
 * The p99 latency (client-measured, so including the 50 clients' own queueing
 * in one Node process) the reads must stay under while pods churn. Set for
 * the 2-core CI machine shared with dockerd, QEMU and other suites, where
 * p99 measured 0.9-1.4 s at load average 8-11; an idle machine does far
 * better (docs/reliability.md). It catches a blocked event loop or a lock
 * held across a List, not jitter.
 */
const P99_BOUND_MS = 2500;
/**
 * What "no memory growth after the churn ends" allows: the shim's RSS over
 * the second half of a 10 s idle spell against the first half. Both are
 * troughs (the lowest sample of a window): V8's heap saws by tens of MiB
 * between collections, and a trough is what survives them. A leak that
 * continues without requests shows here; leaks per pod lifecycle are the
 * soak test's (hundreds of cycles, not the ten or so of this test).
 */
const IDLE_GROWTH_BOUND_KIB = 8 * 1024;
/**
 * A gross bound on the idle RSS against the warm churn: the heap V8 sized up
 * for 50 clients is not handed back at once, so this only catches runaway
 * growth (the CI machine has shown 38 MiB of heap sizing here).
 */
const RSS_GROWTH_BOUND_KIB = 96 * 1024;

const sleeper = { command: ['sh', '-c', 'trap "exit 0" TERM; sleep 3600 & wait'] };

/** CPU time (user + system) a process has used, in seconds. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

// Many kubelet-like readers against a shim whose pods churn: every call must
// succeed, latency must stay bounded, and the shim must not keep growing.
describe('load: concurrent readers while pods churn', () => {
  let dockerd: PrivateDockerd;
  let shim: TestShim;
  let c: ReturnType<typeof cri>;
  const stable: { pod: string; container: string }[] = [];

  beforeAll(async () => {
    dockerd = await startPrivateDockerd();
    shim = await startReliabilityShim(6);
    c = cri(shim);
    await c.pull(BUSYBOX);
    for (let i = 0; i < 3; i++) {
      const config = podConfig();
      const pod = await c.runp(config);
      const container = await c.create(pod, containerConfig(BUSYBOX, sleeper), config);
      await c.start(container);
      stable.push({ pod, container });
    }
  }, 300_000);

  afterAll(async () => {
    for (const s of stable) await c.rmp(s.pod);
    if (shim !== undefined) expect(allLeaks(shim)).toEqual([]);
    await shim?.stop();
    await dockerd?.close();
  }, 120_000);

  it(
    `serves ${CLIENTS} clients for ${SECONDS} s of churn without an error, with bounded p99 and no RSS growth`,
    async () => {
      const pid = shimPid(shim);
      const clients: CriClient[] = Array.from({ length: CLIENTS }, () => criClient(shim.socket));
      const latencies = new Map<string, number[]>();
      const errors: string[] = [];
      const rss: { t: number; kib: number }[] = [];
      const started = Date.now();
      const warmupEnd = started + (SECONDS * 1000) / 3;
      const end = started + SECONDS * 1000;
      let cycles = 0;

      const reads: { name: string; call: (cl: CriClient) => Promise<unknown> }[] = [
        { name: 'ListPodSandbox', call: (cl) => cl.call('runtime', 'ListPodSandbox', {}) },
        { name: 'ListContainers', call: (cl) => cl.call('runtime', 'ListContainers', {}) },
        {
          name: 'PodSandboxStatus',
          call: (cl) =>
            cl.call('runtime', 'PodSandboxStatus', { podSandboxId: stable[Math.floor(Math.random() * 3)]!.pod }),
        },
        {
          name: 'ContainerStatus',
          call: (cl) =>
            cl.call('runtime', 'ContainerStatus', { containerId: stable[Math.floor(Math.random() * 3)]!.container }),
        },
        { name: 'ListContainerStats', call: (cl) => cl.call('runtime', 'ListContainerStats', {}) },
        { name: 'Status', call: (cl) => cl.call('runtime', 'Status', {}) },
      ];

      const reader = async (cl: CriClient) => {
        while (Date.now() < end) {
          const r = reads[Math.floor(Math.random() * reads.length)]!;
          const t0 = process.hrtime.bigint();
          try {
            await r.call(cl);
            const ms = Number(process.hrtime.bigint() - t0) / 1e6;
            const list = latencies.get(r.name) ?? [];
            list.push(ms);
            latencies.set(r.name, list);
          } catch (e) {
            const se = e as { code?: number; details?: string };
            errors.push(`${r.name}: ${status[se.code ?? 2]} ${se.details ?? String(e)}`);
          }
        }
      };
      const churner = async () => {
        while (Date.now() < end) {
          const config = podConfig();
          const pod = await c.runp(config);
          const container = await c.create(pod, containerConfig(BUSYBOX, sleeper), config);
          await c.start(container);
          await c.stopp(pod);
          await c.rmp(pod);
          cycles++;
        }
      };
      const sampler = async () => {
        while (Date.now() < end) {
          rss.push({ t: Date.now(), kib: rssKiB(pid) });
          await sleep(500);
        }
      };

      const cpu0 = { shim: cpuSeconds(pid), self: process.cpuUsage() };
      await Promise.all([...clients.map(reader), ...Array.from({ length: CHURNERS }, churner), sampler()]);
      const cpu = {
        shim: cpuSeconds(pid) - cpu0.shim,
        self: (process.cpuUsage(cpu0.self).user + process.cpuUsage(cpu0.self).system) / 1e6,
      };
      for (const cl of clients) cl.close();
      const idle: number[] = [];
      for (let i = 0; i < 20; i++) {
        await sleep(500);
        idle.push(rssKiB(pid));
      }
      const idleEarly = Math.min(...idle.slice(0, 10));
      const idleLate = Math.min(...idle.slice(10));
      // Trough of the middle third (warm, churning) against the trough of the 10 s idle after the churn.
      const middle = rss.filter((r) => r.t >= warmupEnd && r.t < warmupEnd + (end - warmupEnd) / 2).map((r) => r.kib);
      const baseline = Math.min(...middle);
      const after = Math.min(...idle);

      const all = [...latencies.values()].flat().sort((a, b) => a - b);
      const perOp = [...latencies]
        .map(([name, l]) => {
          const s = [...l].sort((a, b) => a - b);
          return `${name} n=${s.length} p50=${percentile(s, 50).toFixed(1)} p99=${percentile(s, 99).toFixed(1)}`;
        })
        .join('; ');
      console.log(
        `load: ${CLIENTS} clients, ${SECONDS} s, ${cycles} pod churn cycles, ${all.length} reads (${(all.length / SECONDS).toFixed(0)}/s), ` +
          `${errors.length} errors; latency ms p50=${percentile(all, 50).toFixed(1)} p99=${percentile(all, 99).toFixed(1)} ` +
          `max=${(all[all.length - 1] ?? 0).toFixed(1)}; ${perOp}; RSS KiB baseline=${baseline} after=${after} idle ${idleEarly}→${idleLate} ` +
          `range during churn ${Math.min(...rss.map((r) => r.kib))}-${Math.max(...rss.map((r) => r.kib))}; CPU s shim=${cpu.shim.toFixed(1)} clients=${cpu.self.toFixed(1)}; load ${loadavg()[0]?.toFixed(1)}`,
      );
      expect(errors.slice(0, 10)).toEqual([]);
      expect(cycles).toBeGreaterThan(0);
      expect(percentile(all, 99)).toBeLessThan(P99_BOUND_MS);
      expect(idleLate - idleEarly).toBeLessThan(IDLE_GROWTH_BOUND_KIB);
      expect(after - baseline).toBeLessThan(RSS_GROWTH_BOUND_KIB);
      expect(shimPid(shim)).toBe(pid);
      const pods = (await c.rt<{ items: { id: string }[] }>('ListPodSandbox', {})).items.map((p) => p.id).sort();
      expect(pods).toEqual(stable.map((s) => s.pod).sort());
    },
    SECONDS * 1000 + 180_000,
  );
});

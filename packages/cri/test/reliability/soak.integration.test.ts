import { readdirSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { containerConfig, cri, podConfig } from '../helpers/cri.js';
import { BUSYBOX, type TestShim } from '../helpers/shim.js';
import {
  allLeaks,
  rssKiB,
  shimPid,
  startPrivateDockerd,
  startReliabilityShim,
  type PrivateDockerd,
} from './harness.js';

/** Create/delete cycles: 40 in CI; `HCR_SOAK_CYCLES=500` for the full figure. */
const CYCLES = Number(process.env['HCR_SOAK_CYCLES'] ?? 40);
/** Cycles run side by side (the kubelet starts pods in parallel too). */
const WORKERS = 2;
/** Open descriptors the shim may gain over the soak (pooled connections to dockerd, not one per pod). */
const FD_GROWTH_BOUND = 16;

const sleeper = { command: ['sh', '-c', 'trap "exit 0" TERM; sleep 3600 & wait'] };
const openFds = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;

// The whole lifecycle, over and over: at the end nothing HCR made may be left,
// and the shim's descriptors must not have grown with the number of pods.
describe('leak soak: create/delete cycles', () => {
  let dockerd: PrivateDockerd;
  let shim: TestShim;
  let c: ReturnType<typeof cri>;

  beforeAll(async () => {
    dockerd = await startPrivateDockerd();
    shim = await startReliabilityShim(7);
    c = cri(shim);
    await c.pull(BUSYBOX);
  }, 300_000);

  afterAll(async () => {
    await shim?.stop();
    await dockerd?.close();
  }, 120_000);

  it(
    `runs ${CYCLES} pod lifecycles and ends with zero leaks`,
    async () => {
      const pid = shimPid(shim);
      // One cycle first, so lazily opened resources (pause image, connections) are in the baseline.
      const cycle = async (i: number) => {
        const config = podConfig({}, `soak-${i}`);
        const pod = await c.runp(config);
        const a = await c.create(pod, containerConfig(BUSYBOX, sleeper, 'a'), config);
        const b = await c.create(pod, containerConfig(BUSYBOX, { command: ['true'] }, 'b'), config);
        await c.start(a);
        await c.start(b);
        await c.stop(a, 5);
        await c.rm(a);
        await c.stopp(pod);
        await c.rmp(pod);
      };
      await cycle(-1);
      const fds0 = openFds(pid);
      const rss0 = rssKiB(pid);
      const started = Date.now();
      let next = 0;
      await Promise.all(
        Array.from({ length: WORKERS }, async () => {
          while (next < CYCLES) await cycle(next++);
        }),
      );
      const seconds = (Date.now() - started) / 1000;
      const fds1 = openFds(pid);
      const rss1 = rssKiB(pid);
      console.log(
        `soak: ${CYCLES} cycles in ${seconds.toFixed(1)} s (${(seconds / CYCLES).toFixed(2)} s each with ${WORKERS} workers); ` +
          `fds ${fds0} -> ${fds1}; RSS KiB ${rss0} -> ${rss1}`,
      );
      expect(allLeaks(shim)).toEqual([]);
      expect((await c.rt<{ items: unknown[] }>('ListPodSandbox', {})).items).toEqual([]);
      expect((await c.rt<{ containers: unknown[] }>('ListContainers', {})).containers).toEqual([]);
      expect(fds1 - fds0).toBeLessThan(FD_GROWTH_BOUND);
      expect(shimPid(shim)).toBe(pid);
    },
    Math.max(300_000, CYCLES * 10_000),
  );
});

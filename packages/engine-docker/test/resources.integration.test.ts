import { readFileSync, rmdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { emptyResources, type ContainerRef, type ImageInfo, type LinuxResources, type SandboxRef } from '@hcr/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseCgroupMounts, parseProcCgroup } from '../src/cgroups.js';
import {
  BUSYBOX,
  containerRef,
  ensurePulled,
  expectNoLeftovers,
  imageInfo,
  makeEngine,
  makeNetns,
  ok,
  sandboxRef,
  waitFor,
  type TestEngine,
  type TestNetns,
} from './helpers.js';

let te: TestEngine;
let busybox: ImageInfo;
let ns: TestNetns;
let pod: SandboxRef;
const cgroupParent = `/hcr-test-${randomBytes(4).toString('hex')}`;
const mounts = parseCgroupMounts(readFileSync('/proc/self/mountinfo', 'utf8'));

beforeAll(async () => {
  ensurePulled(BUSYBOX);
  busybox = await imageInfo(BUSYBOX);
  te = await makeEngine();
  ns = makeNetns();
  pod = sandboxRef({ netns: ns, linux: { cgroupParent } });
  await ok(te.engine.createSandbox(pod));
});

afterAll(async () => {
  await ok(te.engine.stopSandbox(pod, 0));
  await ok(te.engine.removeSandbox(pod));
  await te.engine.close();
  ns.remove();
  await expectNoLeftovers(te.name);
  // runc made the pod's parent cgroup (the kubelet would own and remove it): remove it in every hierarchy.
  for (const m of mounts) {
    const dir = join(m.mountPoint, cgroupParent);
    if (existsSync(dir)) rmdirSync(dir);
  }
});

/** Reads a cgroup v1 file of a running process, e.g. ('cpu', 'cpu.shares'). */
function cgroupFile(pid: number, controller: string, file: string): string {
  const path = parseProcCgroup(readFileSync(`/proc/${pid}/cgroup`, 'utf8')).get(controller);
  const mount = mounts.find((m) => m.version === 1 && m.controllers.includes(controller));
  if (path === undefined || mount === undefined) throw new Error(`no ${controller} cgroup for pid ${pid}`);
  return readFileSync(join(mount.mountPoint, path, file), 'utf8').trim();
}

async function started(c: ContainerRef): Promise<number> {
  await ok(te.engine.createContainer(c));
  await ok(te.engine.startContainer(c));
  return (await ok(te.engine.containerStatus(c))).pid;
}

const resources = (r: Partial<LinuxResources>): LinuxResources => ({ ...emptyResources, ...r });

describe('resources', () => {
  it('applies CPU, memory and cpuset limits, under the pod cgroup parent, and updates them', async () => {
    const c = containerRef(pod, busybox, {
      command: ['sleep', '3600'],
      linux: {
        resources: resources({
          cpuShares: 512,
          cpuQuota: 50_000,
          cpuPeriod: 100_000,
          memoryLimitInBytes: 64 << 20,
          cpusetCpus: '0',
        }),
        security: containerRef(pod, busybox).spec.linux.security,
      },
    });
    const pid = await started(c);
    expect(parseProcCgroup(readFileSync(`/proc/${pid}/cgroup`, 'utf8')).get('memory')).toMatch(
      new RegExp(`^${cgroupParent}/[0-9a-f]{64}$`),
    );
    expect(cgroupFile(pid, 'cpu', 'cpu.shares')).toBe('512');
    expect(cgroupFile(pid, 'cpu', 'cpu.cfs_quota_us')).toBe('50000');
    expect(cgroupFile(pid, 'cpu', 'cpu.cfs_period_us')).toBe('100000');
    expect(cgroupFile(pid, 'memory', 'memory.limit_in_bytes')).toBe(String(64 << 20));
    expect(cgroupFile(pid, 'cpuset', 'cpuset.cpus')).toBe('0');

    await ok(
      te.engine.updateContainerResources(
        c,
        resources({ cpuShares: 256, cpuQuota: 20_000, cpuPeriod: 100_000, memoryLimitInBytes: 128 << 20 }),
      ),
    );
    expect(cgroupFile(pid, 'cpu', 'cpu.shares')).toBe('256');
    expect(cgroupFile(pid, 'cpu', 'cpu.cfs_quota_us')).toBe('20000');
    expect(cgroupFile(pid, 'memory', 'memory.limit_in_bytes')).toBe(String(128 << 20));
    // Unset fields stay as they were.
    expect(cgroupFile(pid, 'cpuset', 'cpuset.cpus')).toBe('0');
    await ok(te.engine.stopContainer(c, 0));
    await ok(te.engine.removeContainer(c));
  });

  it('clamps a negative oom_score_adj to 0 with a warning, and applies a positive one', async () => {
    const neg = containerRef(pod, busybox, { command: ['sleep', '3600'] });
    const negRef = {
      ...neg,
      spec: { ...neg.spec, linux: { ...neg.spec.linux, resources: resources({ oomScoreAdj: -500 }) } },
    };
    const pos = containerRef(pod, busybox, { command: ['sleep', '3600'] });
    const posRef = {
      ...pos,
      spec: { ...pos.spec, linux: { ...pos.spec.linux, resources: resources({ oomScoreAdj: 500 }) } },
    };
    const negPid = await started(negRef);
    const posPid = await started(posRef);
    const canLower =
      (BigInt(`0x${/^CapBnd:\s*(\w+)/m.exec(readFileSync('/proc/self/status', 'utf8'))![1]}`) >> 24n) & 1n;
    expect(readFileSync(`/proc/${negPid}/oom_score_adj`, 'utf8').trim()).toBe(canLower ? '-500' : '0');
    if (!canLower)
      expect(te.logger.lines.some((l) => l.level === 'warn' && l.message.includes('oom_score_adj -500 clamped'))).toBe(
        true,
      );
    expect(readFileSync(`/proc/${posPid}/oom_score_adj`, 'utf8').trim()).toBe('500');
    for (const c of [negRef, posRef]) {
      await ok(te.engine.stopContainer(c, 0));
      await ok(te.engine.removeContainer(c));
    }
  });

  it('reports OOMKilled when the memory limit kills the container', async () => {
    const c = containerRef(pod, busybox, {
      // tail keeps the whole "line" of an endless newline-free stream in memory.
      command: ['tail', '/dev/zero'],
      linux: {
        resources: resources({ memoryLimitInBytes: 16 << 20 }),
        security: containerRef(pod, busybox).spec.linux.security,
      },
    });
    await started(c);
    const st = await waitFor('OOM kill', async () => {
      const s = await ok(te.engine.containerStatus(c));
      return s.state === 'exited' ? s : undefined;
    });
    expect(st).toMatchObject({ exitCode: 137, reason: 'OOMKilled' });
    const event = await waitFor('exit event', () =>
      te.events.find((e) => e.type === 'container-exited' && e.containerId === c.id),
    );
    expect(event).toMatchObject({ reason: 'OOMKilled', exitCode: 137 });
    await ok(te.engine.removeContainer(c));
  });
});

describe('stats', () => {
  it('reads container and pod usage from cgroups, with the writable layer size', async () => {
    const c = containerRef(pod, busybox, {
      command: [
        'sh',
        '-c',
        'dd if=/dev/zero of=/var/blob bs=1M count=20 2>/dev/null; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 3600',
      ],
    });
    await started(c);
    const stats = await waitFor('usage to show', async () => {
      const s = await ok(te.engine.containerStats(c));
      return s.writableLayerBytes >= 20 << 20 && s.cpuUsageCoreNanoSeconds > 0n ? s : undefined;
    });
    expect(stats.memoryUsageBytes).toBeGreaterThan(0);
    expect(stats.memoryWorkingSetBytes).toBeGreaterThan(0);
    expect(stats.memoryWorkingSetBytes).toBeLessThanOrEqual(stats.memoryUsageBytes);
    expect(stats.timestamp).toBeGreaterThan(BigInt(Date.now() - 60_000) * 1_000_000n);

    const podStats = await ok(te.engine.sandboxStats(pod, [c]));
    expect(podStats.cpuUsageCoreNanoSeconds).toBeGreaterThanOrEqual(stats.cpuUsageCoreNanoSeconds);
    expect(podStats.memoryUsageBytes).toBeGreaterThan(0);
    expect(podStats.processes).toBeGreaterThanOrEqual(2);
    expect(podStats.network).not.toBeNull();

    await ok(te.engine.stopContainer(c, 0));
    const after = await ok(te.engine.containerStats(c));
    expect(after).toMatchObject({ cpuUsageCoreNanoSeconds: 0n, memoryUsageBytes: 0 });
    expect(after.writableLayerBytes).toBeGreaterThanOrEqual(20 << 20);
    await ok(te.engine.removeContainer(c));
    const gone = await te.engine.containerStats(c);
    expect(gone.isErr() && gone.error.code).toBe('NotFound');
  });
});

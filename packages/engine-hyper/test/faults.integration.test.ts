/**
 * Faults inside a live pod VM: the guest agent (PID 1) crashing, through
 * the test-only HCR_AGENT_FAULT hook, and the agent not answering, through
 * a VM paused with QMP `stop`. The engine must notice, say what happened,
 * fail the requests in flight instead of hanging, and still stop and remove
 * the pod without leaving anything behind.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { ErrorCode, type HcrError, type ResultAsync, type SandboxRef } from '@hcr/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HyperEngine } from '../src/engine.js';
import { qmpCommand } from '../src/vm/qmp.js';
import { BUSYBOX, closeHarness, eventually, Harness, ok } from './helpers.js';

/** The error a call failed with (the test fails if it succeeded). */
async function failure<T>(r: ResultAsync<T, HcrError>): Promise<HcrError> {
  const v = await r;
  if (v.isOk()) throw new Error('expected the call to fail');
  return v.error;
}

/** True when `pid` is gone or a zombie (a daemonized QEMU's parent may reap it late). */
function processGone(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0] === 'Z';
  } catch {
    return true;
  }
}

describe('hyper engine: the guest agent crashes or hangs', () => {
  let h: Harness;

  const finish = (engine: HyperEngine, pod: SandboxRef) => h.finishPod(engine, pod, 10);

  beforeAll(async () => {
    h = await Harness.open();
    await h.image(BUSYBOX);
  });

  afterAll(async () => {
    try {
      expect(await h.leaks()).toEqual([]);
    } finally {
      await closeHarness(h);
    }
  });

  it('reports a crashed agent: in-flight exec fails with the cause, pod dead, container exited GuestAgentCrashed', async () => {
    // The hook is read when the engine is created; only this engine's VMs get it.
    process.env['HCR_AGENT_FAULT'] = 'abort:Exec';
    let engine: HyperEngine;
    try {
      engine = await h.engine();
    } finally {
      delete process.env['HCR_AGENT_FAULT'];
    }
    const pod = await h.sandbox();
    await ok(engine.createSandbox(pod));
    const c = await h.container(pod, BUSYBOX, { command: ['sleep', '3600'] });
    await ok(engine.createContainer(c));
    await ok(engine.startContainer(c));

    const started = performance.now();
    const e = await failure(engine.execSync(c, ['echo', 'never'], 30));
    const ms = performance.now() - started;
    console.log(`hyper: exec into a crashing agent failed after ${ms.toFixed(0)} ms: ${e.message.split(';')[0]}`);
    expect(e.code).toBe(ErrorCode.FailedPrecondition);
    expect(e.message).toMatch(/guest agent of pod .* died.*Attempted to kill init/);
    expect(ms).toBeLessThan(20_000);

    await eventually(
      async () => (h.events.some((x) => x.type === 'sandbox-died' && x.sandboxId === pod.id) ? true : null),
      20_000,
      'the sandbox-died event',
    );
    const exited = h.events.find((x) => x.type === 'container-exited' && x.containerId === c.id);
    expect(exited).toMatchObject({ reason: 'GuestAgentCrashed', exitCode: 255 });
    const ps = await ok(engine.sandboxStatus(pod));
    expect(ps.alive).toBe(false);
    expect(String(ps.info['died'])).toContain('Attempted to kill init');
    const st = await ok(engine.containerStatus(c));
    expect(st).toMatchObject({ state: 'exited', exitCode: 255, reason: 'GuestAgentCrashed' });
    expect(st.message).toContain(String(ps.info['console']));
    // Later requests fail at once with the same cause.
    const again = await failure(engine.containerStats(c));
    expect(again.code).toBe(ErrorCode.FailedPrecondition);
    expect(again.message).toMatch(/guest agent of pod .* died/);

    await finish(engine, pod);
    await engine.close();
  });

  it('bounds requests to a hung agent (VM paused) with a clear error, recovers when it answers; stop kills a hung VM', async () => {
    const setup = await h.engine();
    const pod = await h.sandbox();
    await ok(setup.createSandbox(pod));
    const c = await h.container(pod, BUSYBOX, { command: ['sleep', '3600'] });
    await ok(setup.createContainer(c));
    await ok(setup.startContainer(c));
    await setup.close();
    // A short request timeout only for the hung part: setting the pod up under a loaded TCG host may take longer.
    const engine = await h.engine({ request_timeout_seconds: 4 });
    const info = (await ok(engine.sandboxStatus(pod))).info;
    const vmPid = info['vmPid'] as number;
    const qmp = join(dirname(String(info['console'])), 'qmp.sock');
    await ok(qmpCommand(qmp, 'stop', {}, 10_000));

    const first = await failure(engine.execSync(c, ['echo', 'never'], 30));
    expect(first.code).toBe(ErrorCode.DeadlineExceeded);
    expect(first.message).toMatch(/did not answer Exec within 4000 ms.*agent is hung or the guest is stalled/);
    // The pod is not ready while its agent does not answer; each further request fails within the stalled bound.
    const ps = await ok(engine.sandboxStatus(pod));
    expect(ps.alive).toBe(false);
    expect(ps.info['agentStalledSince']).not.toBe('');
    const t = performance.now();
    const second = await failure(engine.containerStatus(c));
    expect(second.code).toBe(ErrorCode.DeadlineExceeded);
    expect(second.message).toMatch(/nothing heard from it for \d+ s/);
    expect(performance.now() - t).toBeLessThan(10_000);

    // Resumed, the agent answers again: the pod is ready and requests work.
    await ok(qmpCommand(qmp, 'cont', {}, 10_000));
    await eventually(
      async () => ((await ok(engine.sandboxStatus(pod))).alive ? true : null),
      30_000,
      'the pod to be alive again',
    );
    expect((await ok(engine.execSync(c, ['echo', 'back'], 30))).stdout.toString()).toBe('back\n');

    await ok(qmpCommand(qmp, 'stop', {}, 10_000));
    const stopStarted = performance.now();
    await ok(engine.stopSandbox(pod, 10));
    console.log(`hyper: stop of a pod with a hung agent took ${(performance.now() - stopStarted).toFixed(0)} ms`);
    expect(processGone(vmPid)).toBe(true);
    await h.dropNetwork(pod);
    await ok(engine.removeSandbox(pod));
    await engine.close();
  });
});

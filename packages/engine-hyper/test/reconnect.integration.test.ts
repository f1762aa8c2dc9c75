/**
 * HCR restarts while hyper pods run: the VM is detached from HCR (QEMU
 * daemonized, pidfile and sockets in the runtime dir), so a new engine object
 * finds it, reconnects to the agent and resumes the container's CRI log from
 * exactly where the old one stopped — after a graceful close and after a
 * SIGKILL of the process that ran the engine.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseCriLogLine, type ContainerRef, type SandboxRef } from '@hcr/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HyperEngine } from '../src/engine.js';
import { BUSYBOX, closeHarness, eventually, Harness, ok } from './helpers.js';

const here = dirname(fileURLToPath(import.meta.url));

/** The numbers of the `line N` records in a CRI log, in file order. */
function lineNumbers(path: string): number[] {
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => {
      const r = parseCriLogLine(l);
      if (r === null || r.partial) throw new Error(`unexpected log line: ${l}`);
      const m = /^line (\d+)$/.exec(r.content);
      if (m === null) throw new Error(`unexpected content: ${r.content}`);
      return Number(m[1]);
    });
}

/** Fails unless the log holds line 0..n-1 once each, in order: no gap, no duplicate. */
function expectContinuous(path: string, atLeast: number): void {
  const nums = lineNumbers(path);
  expect(nums.length).toBeGreaterThanOrEqual(atLeast);
  expect(nums).toEqual(nums.map((_, i) => i));
}

async function waitForLines(path: string, n: number): Promise<void> {
  await eventually(async () => (lineNumbers(path).length >= n ? true : null), 60_000, `${n} log lines`);
}

describe('hyper engine: reconnect after an HCR restart', () => {
  let h: Harness;

  /** Stops and removes a pod the way core does, and closes the engine. */
  const finish = async (engine: HyperEngine, pod: SandboxRef) => {
    await h.finishPod(engine, pod, 0);
    await engine.close();
  };

  beforeAll(async () => {
    h = await Harness.open();
    await h.image(BUSYBOX);
  });

  afterAll(async () => {
    // The harness goes even when teardown or the leak check fails, so a failed run leaves nothing.
    try {
      expect(await h.leaks()).toEqual([]);
    } finally {
      await closeHarness(h);
    }
  });

  it('resumes after the engine object is closed and created again', async () => {
    const logPath = join(h.dir, 'graceful.log');
    const first = await h.engine();
    const pod = await h.sandbox();
    await ok(first.createSandbox(pod));
    const c = await h.container(
      pod,
      BUSYBOX,
      { command: ['sh', '-c', 'i=0; while true; do echo "line $i"; i=$((i+1)); sleep 0.1; done'] },
      logPath,
    );
    await ok(first.createContainer(c));
    await ok(first.startContainer(c));
    await waitForLines(logPath, 5);
    await first.close();
    const seenWhileAway = lineNumbers(logPath).length;
    await new Promise((r) => setTimeout(r, 2_000)); // the container keeps logging into the agent's buffer

    const second = await h.engine();
    expect((await ok(second.inventory())).sandboxIds).toContain(pod.id);
    expect((await ok(second.sandboxStatus(pod))).alive).toBe(true);
    expect((await ok(second.containerStatus(c))).state).toBe('running');
    await waitForLines(logPath, seenWhileAway + 25);
    expectContinuous(logPath, seenWhileAway + 25);
    const r = await ok(second.execSync(c, ['echo', 'still here'], 30));
    expect(r.stdout.toString()).toBe('still here\n');
    await finish(second, pod);
  });

  it('reports a pod whose VM died, and its containers as exited', async () => {
    const engine = await h.engine();
    const pod = await h.sandbox();
    await ok(engine.createSandbox(pod));
    const c = await h.container(pod, BUSYBOX, { command: ['sleep', '3600'] });
    await ok(engine.createContainer(c));
    await ok(engine.startContainer(c));
    const vmPid = (await ok(engine.sandboxStatus(pod))).info['vmPid'];
    expect(typeof vmPid).toBe('number');
    process.kill(vmPid as number, 'SIGKILL');
    await eventually(
      async () => (h.events.some((e) => e.type === 'sandbox-died' && e.sandboxId === pod.id) ? true : null),
      30_000,
      'the sandbox-died event',
    );
    expect((await ok(engine.sandboxStatus(pod))).alive).toBe(false);
    const st = await ok(engine.containerStatus(c));
    expect(st.state).toBe('exited');
    expect(st.reason).toBe('Error');
    await finish(engine, pod);
  });

  it('resumes after the process running the engine is killed with SIGKILL', async () => {
    const logPath = join(h.dir, 'killed.log');
    const child = spawn(
      'npx',
      ['tsx', '--conditions=hcr-source', join(here, 'fixtures', 'crash-child.ts'), h.dir, logPath],
      { cwd: join(here, '..'), stdio: ['ignore', 'pipe', 'inherit'], detached: true },
    );
    const refs = await new Promise<{ sandbox: SandboxRef; container: ContainerRef }>((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        const nl = out.indexOf('\n');
        if (nl >= 0) resolve(JSON.parse(out.slice(0, nl)) as { sandbox: SandboxRef; container: ContainerRef });
      });
      child.on('exit', (code) => reject(new Error(`crash-child exited with ${code} before reporting`)));
    });
    await waitForLines(logPath, 5);
    // kill -9 of "HCR": the whole process group (npx, tsx, node).
    process.kill(-(child.pid ?? 0), 'SIGKILL');
    await new Promise((r) => child.once('exit', r));
    const seenAtKill = lineNumbers(logPath).length;
    await new Promise((r) => setTimeout(r, 2_000));

    const started = performance.now();
    const engine = await h.engine();
    console.log(`hyper: new engine reattached in ${(performance.now() - started).toFixed(0)} ms`);
    expect((await ok(engine.sandboxStatus(refs.sandbox))).alive).toBe(true);
    expect((await ok(engine.containerStatus(refs.container))).state).toBe('running');
    await waitForLines(logPath, seenAtKill + 25);
    // The agent holds output on a new connection until its Hello says where the log ends: the line in flight at
    // the kill is sent again, and nothing twice.
    expectContinuous(logPath, seenAtKill + 25);
    await finish(engine, refs.sandbox);
  });
});

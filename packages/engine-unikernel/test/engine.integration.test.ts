import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ErrorCode, type EngineContext, type EngineEvent, type ImageInfo, type RuntimeEngine } from '@hcr/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import registration from '../src/index.js';
import {
  containerRef,
  createTestPod,
  destroyTestPod,
  DockerExportImages,
  HELLO_IMAGE,
  HTTP_IMAGE,
  logContents,
  podLinks,
  processesMentioning,
  pullImage,
  sandboxRef,
  testContext,
  type TestPod,
} from './harness.js';

const run = promisify(execFile);

let engine: RuntimeEngine;
let context: EngineContext;
let workDir: string;
let runtimeDir: string;
let pod: TestPod;
let hello: ImageInfo;
let http: ImageInfo;
const events: EngineEvent[] = [];

beforeAll(async () => {
  await run('bash', [join(import.meta.dirname, '../scripts/setup-assets.sh')], {
    env: { ...process.env, HCR_SETUP_QUIET: '1' },
  });
  [hello, http] = await Promise.all([pullImage(HELLO_IMAGE), pullImage(HTTP_IMAGE)]);
  const t = await testContext((dir) => new DockerExportImages(dir));
  workDir = t.workDir;
  context = t.context;
  runtimeDir = t.context.runtimeDir;
  engine = await newEngine();
  pod = await createTestPod(7);
});

async function newEngine(table: Record<string, unknown> = {}): Promise<RuntimeEngine> {
  const config = registration.configSchema.parse(table);
  if (!config.ok) throw new Error(config.error);
  const e = (await registration.create(config.value, context))._unsafeUnwrap();
  e.subscribe((ev) => events.push(ev));
  return e;
}

async function fetchPod(deadlineMs: number): Promise<string> {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    try {
      const r = await fetch(`http://${pod.podIp}:8080/`, { signal: AbortSignal.timeout(2000) });
      expect(r.status).toBe(200);
      return await r.text();
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

afterAll(async () => {
  await engine?.close();
  if (pod !== undefined) await destroyTestPod(pod);
  if (workDir !== undefined) await rm(workDir, { recursive: true, force: true });
});

async function waitExited(id: string, timeoutMs: number) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ev = events.find((e) => e.type === 'container-exited' && e.containerId === id);
    if (ev !== undefined) return ev;
    if (Date.now() > deadline) throw new Error(`container ${id} did not exit within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function expectNoLeaks(id: string) {
  expect(await processesMentioning(join(runtimeDir, 'containers', id))).toEqual([]);
  expect((await podLinks(pod)).filter((l) => l.startsWith('uk'))).toEqual([]);
  expect(existsSync(join(runtimeDir, 'containers', id))).toBe(false);
  expect(existsSync(join(workDir, 'rootfs', id))).toBe(false);
}

describe('unikernel engine on QEMU', () => {
  it('reports healthy with QEMU and names the accelerator', async () => {
    const h = (await engine.health())._unsafeUnwrap();
    expect(h.ready).toBe(true);
    expect(h.info['monitor.qemu']).toMatch(/accelerator (kvm|tcg)/);
    expect(h.info['monitor.hvt']).toMatch(/solo5-hvt not found/);
  });

  it('boots the hello unikernel: its command line reaches the CRI log and its exit code the status', async () => {
    const sandbox = sandboxRef('pod-hello', pod, runtimeDir);
    (await engine.createSandbox(sandbox))._unsafeUnwrap();
    const logPath = join(workDir, 'logs', 'hello.log');
    const c = containerRef('c0hello00000000000001', sandbox, hello, logPath, { args: ['exit=7'] });
    (await engine.createContainer(c))._unsafeUnwrap();
    expect((await engine.containerStatus(c))._unsafeUnwrap().state).toBe('created');
    (await engine.startContainer(c))._unsafeUnwrap();
    const ev = await waitExited(c.id, 10_000);
    expect(ev).toMatchObject({ exitCode: 7, reason: 'Error' });
    const status = (await engine.containerStatus(c))._unsafeUnwrap();
    expect(status).toMatchObject({ state: 'exited', exitCode: 7, reason: 'Error' });
    expect(status.message).toContain('isa-debug-exit with code 7');
    expect(status.finishedAt).toBeGreaterThanOrEqual(status.startedAt);
    const lines = await logContents(logPath);
    expect(lines).toContain('hello from the HCR test unikernel');
    // Unikraft's convention: app name, env.vars=[ … ] (docker gives every image PATH), netdev.ip, --, args.
    expect(lines).toContain(
      `cmdline: hello env.vars=[ ${hello.config.env.join(' ')} ] netdev.ip=${pod.podIp}/24:${pod.hostIp} -- exit=7`,
    );
    expect(lines).toContain('exiting with code 7');
    (await engine.removeContainer(c))._unsafeUnwrap();
    await expectNoLeaks(c.id);
    (await engine.removeSandbox(sandbox))._unsafeUnwrap();
  });

  it('uses the image command line by default and reports exit 0 as Completed', async () => {
    const sandbox = sandboxRef('pod-hello0', pod, runtimeDir);
    const logPath = join(workDir, 'logs', 'hello0.log');
    const c = containerRef('c0hello00000000000002', sandbox, hello, logPath);
    (await engine.createContainer(c))._unsafeUnwrap();
    (await engine.startContainer(c))._unsafeUnwrap();
    expect(await waitExited(c.id, 10_000)).toMatchObject({ exitCode: 0, reason: 'Completed' });
    expect((await logContents(logPath)).find((l) => l.startsWith('cmdline:'))).toMatch(/ -- exit=0$/);
    (await engine.removeContainer(c))._unsafeUnwrap();
    await expectNoLeaks(c.id);
  });

  it('passes an argument with a space as one word (quoted on the command line): the hello image echoes it', async () => {
    const sandbox = sandboxRef('pod-echo', pod, runtimeDir);
    const logPath = join(workDir, 'logs', 'echo.log');
    const c = containerRef('c0echo000000000000001', sandbox, hello, logPath, { args: ['echo', 'hello World'] });
    (await engine.createContainer(c))._unsafeUnwrap();
    (await engine.startContainer(c))._unsafeUnwrap();
    expect(await waitExited(c.id, 10_000)).toMatchObject({ exitCode: 0, reason: 'Completed' });
    const lines = await logContents(logPath);
    expect(lines.find((l) => l.startsWith('cmdline:'))).toMatch(/ -- echo "hello World"$/);
    expect(lines).toContain('hello World');
    (await engine.removeContainer(c))._unsafeUnwrap();
    await expectNoLeaks(c.id);
  });

  it('stops a unikernel of a type without graceful shutdown at once, without waiting out the grace period', async () => {
    const sandbox = sandboxRef('pod-idle', pod, runtimeDir);
    const c = containerRef('c0idle000000000000002', sandbox, hello, join(workDir, 'logs', 'idle2.log'), {
      args: ['idle'],
    });
    (await engine.createContainer(c))._unsafeUnwrap();
    (await engine.startContainer(c))._unsafeUnwrap();
    const t0 = Date.now();
    (await engine.stopContainer(c, 60))._unsafeUnwrap();
    // The hello unikernel (type unikraft) never answers the power button; the default
    // graceful_stop_types is ["linux"], so it is not asked and nobody waits 60 s.
    expect(Date.now() - t0).toBeLessThan(30_000);
    const status = (await engine.containerStatus(c))._unsafeUnwrap();
    expect(status).toMatchObject({ state: 'exited', exitCode: 137, reason: 'Error' });
    expect(status.message).toMatch(/a unikraft unikernel has no graceful shutdown/);
    (await engine.removeContainer(c))._unsafeUnwrap();
    await expectNoLeaks(c.id);
  });

  it('refuses an unknown type in graceful_stop_types', async () => {
    const config = registration.configSchema.parse({ graceful_stop_types: ['linux', 'osv'] });
    if (!config.ok) throw new Error(config.error);
    const r = await registration.create(config.value, context);
    expect(r._unsafeUnwrapErr().message).toMatch(/graceful_stop_types: "osv" is not a unikernel type/);
  });

  it('stops a guest that ignores the power button by killing it after the grace period', async () => {
    // This engine asks unikraft guests too, so the hello unikernel shows a grace period running out.
    await engine.close();
    engine = await newEngine({ graceful_stop_types: ['linux', 'unikraft'] });
    const sandbox = sandboxRef('pod-idle', pod, runtimeDir);
    const c = containerRef('c0idle000000000000001', sandbox, hello, join(workDir, 'logs', 'idle.log'), {
      args: ['idle'],
      memoryBytes: 32 * 1024 * 1024,
    });
    (await engine.createContainer(c))._unsafeUnwrap();
    (await engine.startContainer(c))._unsafeUnwrap();
    const running = (await engine.containerStatus(c))._unsafeUnwrap();
    expect(running.state).toBe('running');
    expect(running.pid).toBeGreaterThan(0);
    const cmdline = (await run('cat', [`/proc/${running.pid}/cmdline`])).stdout.split('\0');
    expect(cmdline).toContain('32M');
    const stats = (await engine.containerStats(c))._unsafeUnwrap();
    expect(stats.memoryWorkingSetBytes).toBeGreaterThan(1024 * 1024);
    expect(stats.cpuUsageCoreNanoSeconds).toBeGreaterThan(0n);
    expect((await podLinks(pod)).some((l) => l.startsWith('uk'))).toBe(true);

    const t0 = Date.now();
    (await engine.stopContainer(c, 1))._unsafeUnwrap();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1000);
    const status = (await engine.containerStatus(c))._unsafeUnwrap();
    expect(status).toMatchObject({ state: 'exited', exitCode: 137, reason: 'Error' });
    expect(status.message).toMatch(/did not shut down within the 1 s grace period/);
    (await engine.stopContainer(c, 1))._unsafeUnwrap(); // stopping again is a no-op
    (await engine.removeContainer(c))._unsafeUnwrap();
    await expectNoLeaks(c.id);
    await engine.close();
    engine = await newEngine();
  });

  it('serves HTTP from the linux unikernel on the pod IP, logs its console across an HCR restart, and powers off on stop', async () => {
    const sandbox = sandboxRef('pod-http', pod, runtimeDir);
    const logPath = join(workDir, 'logs', 'http.log');
    const c = containerRef('c0http000000000000001', sandbox, http, logPath);
    (await engine.createContainer(c))._unsafeUnwrap();
    (await engine.startContainer(c))._unsafeUnwrap();
    expect(await fetchPod(60_000)).toBe('hello from the HCR unikernel-http image\n');
    await new Promise((r) => setTimeout(r, 300));
    const lines = await logContents(logPath);
    expect(lines).toContain('unikernel-http: listening on port 8080');
    expect(lines.filter((l) => l.startsWith(`unikernel-http: ${pod.hostIp} "GET / HTTP/1.1" 200`))).toHaveLength(1);
    expect(lines.some((l) => l.includes('\r'))).toBe(false);

    // An HCR restart: the VM keeps running, a new engine picks its console up where the old one stopped.
    await engine.close();
    engine = await newEngine();
    expect((await engine.inventory())._unsafeUnwrap().containerIds).toContain(c.id);
    expect((await engine.containerStatus(c))._unsafeUnwrap().state).toBe('running');
    expect(await fetchPod(10_000)).toBe('hello from the HCR unikernel-http image\n');
    await new Promise((r) => setTimeout(r, 300));
    const after = await logContents(logPath);
    expect(after.filter((l) => l.startsWith(`unikernel-http: ${pod.hostIp} "GET / HTTP/1.1" 200`))).toHaveLength(2);
    expect(after.filter((l) => l === 'unikernel-http: listening on port 8080')).toHaveLength(1);

    (await engine.stopContainer(c, 20))._unsafeUnwrap();
    const status = (await engine.containerStatus(c))._unsafeUnwrap();
    expect(status).toMatchObject({ state: 'exited', exitCode: 0, reason: 'Completed' });
    expect(await logContents(logPath)).toContain('unikernel-http: power button pressed; powering off');
    (await engine.removeContainer(c))._unsafeUnwrap();
    await expectNoLeaks(c.id);
  });

  it('refuses bad annotations naming the key and the value, and leaves nothing behind', async () => {
    const sandbox = sandboxRef('pod-bad', pod, runtimeDir);
    const bad = (labels: Record<string, string>): ImageInfo => ({
      ...hello,
      config: { ...hello.config, labels: { ...hello.config.labels, ...labels } },
    });
    const cases: [Record<string, string>, ErrorCode, RegExp][] = [
      [
        { 'com.urunc.unikernel.hypervisor': 'xen' },
        ErrorCode.InvalidArgument,
        /com\.urunc\.unikernel\.hypervisor="xen"/,
      ],
      [
        { 'com.urunc.unikernel.binary': '/unikernel/missing' },
        ErrorCode.InvalidArgument,
        /com\.urunc\.unikernel\.binary="\/unikernel\/missing": no such file/,
      ],
      [
        { 'com.urunc.unikernel.binary': '../etc/passwd' },
        ErrorCode.InvalidArgument,
        /com\.urunc\.unikernel\.binary="\.\.\/etc\/passwd"/,
      ],
      [
        { 'com.urunc.unikernel.mountRootfs': 'maybe' },
        ErrorCode.InvalidArgument,
        /mountRootfs="maybe" is not a boolean/,
      ],
      [
        { 'com.urunc.unikernel.unikernelType': 'rumprun', 'com.urunc.unikernel.hypervisor': 'hvt' },
        ErrorCode.FailedPrecondition,
        /monitor "hvt": monitor binary solo5-hvt not found on PATH/,
      ],
      [
        { 'com.urunc.unikernel.unikernelType': 'linux', 'com.urunc.unikernel.hypervisor': 'firecracker' },
        ErrorCode.FailedPrecondition,
        /monitor binary firecracker not found on PATH/,
      ],
    ];
    for (const [i, [labels, code, message]] of cases.entries()) {
      const c = containerRef(`c0bad00000000000000${i}`, sandbox, bad(labels), '');
      const r = await engine.createContainer(c);
      expect(r.isErr(), JSON.stringify(labels)).toBe(true);
      const e = r._unsafeUnwrapErr();
      expect(e.code).toBe(code);
      expect(e.message).toMatch(message);
      expect(existsSync(join(runtimeDir, 'containers', c.id))).toBe(false);
      expect(existsSync(join(workDir, 'rootfs', c.id))).toBe(false);
    }
  });

  it('refuses exec, attach and port-forward as unsupported with the reason', async () => {
    const sandbox = sandboxRef('pod-exec', pod, runtimeDir);
    const c = containerRef('c0exec000000000000001', sandbox, hello, '');
    const r = await engine.execSync(c, ['sh'], 1);
    expect(r._unsafeUnwrapErr().code).toBe(ErrorCode.Unsupported);
    expect(r._unsafeUnwrapErr().message).toMatch(/a unikernel has no processes to exec into/);
    expect((await engine.exec(c, ['sh'], undefined as never))._unsafeUnwrapErr().code).toBe(ErrorCode.Unsupported);
    expect((await engine.attach(c, undefined as never))._unsafeUnwrapErr().code).toBe(ErrorCode.Unsupported);
    expect((await engine.portForward(sandbox, 80, undefined as never))._unsafeUnwrapErr().code).toBe(
      ErrorCode.Unsupported,
    );
    expect(engine.capabilities).toMatchObject({
      exec: false,
      execSync: false,
      attachStdin: false,
      portForward: false,
      tty: false,
    });
  });

  it('leaves no VM, TAP or file after all tests', async () => {
    expect(await processesMentioning(runtimeDir)).toEqual([]);
    expect((await podLinks(pod)).filter((l) => l.startsWith('uk'))).toEqual([]);
    expect(await readdir(join(runtimeDir, 'containers'))).toEqual([]);
  });
});

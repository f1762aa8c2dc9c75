import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { containerConfig, cri, podConfig, rejectsWith } from '../helpers/cri.js';
import { BUSYBOX, type TestShim } from '../helpers/shim.js';
import {
  allLeaks,
  startPrivateDockerd,
  startReliabilityShim,
  stateDirOf,
  waitFor,
  type PrivateDockerd,
} from './harness.js';

// Security properties of the running shim, checked through the real socket.
// Streaming tokens (single use, expiry, no cross-operation use) are covered by
// packages/cri/test/streaming.test.ts; spawns taking argv arrays by
// spawn-argv.test.ts next to this file.
describe('security checks', () => {
  let dockerd: PrivateDockerd;
  let shim: TestShim;
  let c: ReturnType<typeof cri>;
  let logRoot: string;
  const pods = new Set<string>();

  const runPod = async (overrides: Record<string, unknown> = {}) => {
    const config = podConfig({ logDirectory: join(logRoot, `pod-${pods.size}`), ...overrides });
    const id = await c.runp(config);
    pods.add(id);
    return { id, config };
  };

  beforeAll(async () => {
    dockerd = await startPrivateDockerd();
    shim = await startReliabilityShim(8);
    c = cri(shim);
    await c.pull(BUSYBOX);
    logRoot = mkdtempSync(join(tmpdir(), 'hcr-sec-logs-'));
  }, 300_000);

  afterEach(async () => {
    for (const id of pods) await c.rmp(id);
    pods.clear();
    expect(allLeaks(shim)).toEqual([]);
  }, 120_000);

  afterAll(async () => {
    await shim?.stop();
    await dockerd?.close();
    if (logRoot) rmSync(logRoot, { recursive: true, force: true });
  }, 120_000);

  it('creates the CRI socket root-owned with mode 0660 and keeps its state dir private (0700)', () => {
    const sock = statSync(shim.socket);
    expect(sock.isSocket()).toBe(true);
    expect((sock.mode & 0o777).toString(8)).toBe('660');
    expect([sock.uid, sock.gid]).toEqual([0, 0]);
    const state = statSync(stateDirOf(shim));
    expect((state.mode & 0o777).toString(8)).toBe('700');
  });

  it('hands out streaming URLs on loopback only', async () => {
    const pod = await runPod();
    const cid = await c.create(pod.id, containerConfig(BUSYBOX, { command: ['sleep', '60'] }), pod.config);
    await c.start(cid);
    const exec = await c.rt<{ url: string }>('Exec', { containerId: cid, cmd: ['true'], stdout: true });
    expect(new URL(exec.url).hostname).toBe('127.0.0.1');
    const pf = await c.rt<{ url: string }>('PortForward', { podSandboxId: pod.id, port: [80] });
    expect(new URL(pf.url).hostname).toBe('127.0.0.1');
  }, 120_000);

  it('refuses malformed mount paths before anything is made', async () => {
    const pod = await runPod();
    const cases: { containerPath: string; hostPath: string; why: RegExp }[] = [
      { containerPath: '/data', hostPath: 'relative/dir', why: /host_path "relative\/dir" must be an absolute path/ },
      { containerPath: '/data', hostPath: '../../etc', why: /host_path "..\/..\/etc" must be an absolute path/ },
      { containerPath: '/data', hostPath: '/tmp/a\0b', why: /host_path .* must be an absolute path/ },
      { containerPath: 'data', hostPath: '/tmp', why: /container_path "data" must be an absolute path/ },
      { containerPath: '/', hostPath: '/tmp', why: /cannot mount over the container's root/ },
      { containerPath: '/a/..', hostPath: '/tmp', why: /cannot mount over the container's root/ },
    ];
    for (const m of cases) {
      const msg = await rejectsWith(
        c.create(pod.id, containerConfig(BUSYBOX, { mounts: [m] }), pod.config),
        status.INVALID_ARGUMENT,
      );
      expect(msg).toMatch(m.why);
    }
    const list = await c.rt<{ containers: unknown[] }>('ListContainers', { filter: { podSandboxId: pod.id } });
    expect(list.containers).toEqual([]);
  }, 120_000);

  it('refuses log paths that leave the log directory, and log directories that are not absolute', async () => {
    const pod = await runPod();
    for (const logPath of ['../escape.log', 'a/../../escape.log', '/etc/passwd', '..', 'x\0.log', './']) {
      await rejectsWith(c.create(pod.id, containerConfig(BUSYBOX, { logPath }), pod.config), status.INVALID_ARGUMENT);
    }
    const noDir = await runPod({ logDirectory: '' });
    const msg = await rejectsWith(
      c.create(noDir.id, containerConfig(BUSYBOX, { logPath: 'c.log' }), noDir.config),
      status.INVALID_ARGUMENT,
    );
    expect(msg).toMatch(/no log_directory/);
    for (const logDirectory of ['relative/logs', 'logs\0x']) {
      await rejectsWith(c.runp(podConfig({ logDirectory })), status.INVALID_ARGUMENT);
    }
    expect(readdirSync(logRoot).filter((f) => f.includes('escape'))).toEqual([]);
    expect(existsSync(join(logRoot, '..', 'escape.log'))).toBe(false);
  }, 120_000);

  it('refuses pod and container names with "/" or NUL, and pod identity with ";" or "="', async () => {
    for (const [field, value] of [
      ['name', 'a/b'],
      ['name', 'a\0b'],
      ['namespace', 'ns/../x'],
      ['namespace', '\0'],
      ['uid', 'u/v'],
    ] as const) {
      const config = podConfig();
      const msg = await rejectsWith(
        c.runp({ ...config, metadata: { ...config.metadata, [field]: value } }),
        status.INVALID_ARGUMENT,
      );
      expect(msg).toMatch(/must not contain "\/" or NUL/);
    }
    // Pod identity is handed to CNI plugins in CNI_ARGS, which cannot escape its separators.
    for (const field of ['name', 'namespace', 'uid'] as const) {
      const config = podConfig();
      const msg = await rejectsWith(
        c.runp({ ...config, metadata: { ...config.metadata, [field]: 'x=y;z' } }),
        status.INVALID_ARGUMENT,
      );
      expect(msg).toMatch(/must not contain ";" or "="/);
    }
    const pod = await runPod();
    for (const name of ['c/d', 'c\0d']) {
      await rejectsWith(c.create(pod.id, containerConfig(BUSYBOX, {}, name), pod.config), status.INVALID_ARGUMENT);
    }
  }, 120_000);

  it("never applies a host-network pod's network sysctls to the host", async () => {
    const path = '/proc/sys/net/ipv4/ip_unprivileged_port_start';
    const before = readFileSync(path, 'utf8').trim();
    const other = before === '1000' ? '1001' : '1000';
    try {
      await runPod({
        linux: {
          sysctls: { 'net.ipv4.ip_unprivileged_port_start': other },
          securityContext: { namespaceOptions: { network: 'NODE', pid: 'CONTAINER', ipc: 'POD' } },
        },
      }).catch((e: { code: number }) => {
        // Refusing the pod is as good as ignoring the sysctl; anything else is not.
        expect(e.code).toBe(status.INVALID_ARGUMENT);
      });
      expect(readFileSync(path, 'utf8').trim()).toBe(before);
    } finally {
      if (readFileSync(path, 'utf8').trim() !== before) {
        await import('node:fs').then((fs) => fs.writeFileSync(path, before));
      }
    }
  }, 120_000);

  it('writes CRI logs that only root can change', async () => {
    const pod = await runPod();
    const cid = await c.create(
      pod.id,
      containerConfig(BUSYBOX, { command: ['echo', 'secret-ish'], logPath: 'c/0.log' }),
      pod.config,
    );
    await c.start(cid);
    await c.waitState(cid, 'CONTAINER_EXITED');
    const logDir = (pod.config as unknown as { logDirectory: string }).logDirectory;
    const file = join(logDir, 'c/0.log');
    await waitFor('the log line', async () => (readFileSync(file, 'utf8').includes('secret-ish') ? true : undefined));
    const st = statSync(file);
    expect(st.uid).toBe(0);
    expect(st.mode & 0o022).toBe(0);
  }, 120_000);
});

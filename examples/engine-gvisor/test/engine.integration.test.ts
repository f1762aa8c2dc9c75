import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { createServer, connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { RuntimeService, SqliteStateStore, parseCriLogLine, type HcrError, type RuntimeEngine } from '@hcr/core';
import { containerSpec, defaultSecurity, podSpec } from '@hcr/core/testing';
import type { ResultAsync } from 'neverthrow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUSYBOX, HTTPD, gvisorHarness, type GvisorHarness } from './harness.js';

/** What gVisor does beyond the conformance kit: its network mode, files, exec, logs across restarts, limits. */
describe('gvisor engine', () => {
  let h: GvisorHarness;
  let store: SqliteStateStore;
  let rt: RuntimeService;
  let dir: string;
  const pods: string[] = [];

  const runtime = (engine: RuntimeEngine) =>
    new RuntimeService({
      store,
      network: h.network,
      images: h.images,
      engines: new Map([[engine.name, engine]]),
      router: { handlers: {}, defaultEngine: engine.name, rules: [], deferBinding: false, unikernelEngine: null },
      sandboxDir: join(dir, 'sandboxes'),
    });
  const ok = async <T>(p: ResultAsync<T, HcrError>): Promise<T> => {
    const r = await p;
    if (r.isErr()) throw r.error;
    return r.value;
  };
  const fails = async <T>(p: ResultAsync<T, HcrError>): Promise<HcrError> => {
    const r = await p;
    if (r.isOk()) throw new Error('expected an error');
    return r.error;
  };
  const newPod = async (overrides: Parameters<typeof podSpec>[0] = {}) => {
    const id = await ok(rt.runPodSandbox(podSpec(overrides)));
    pods.push(id);
    return id;
  };
  const run = async (pod: string, spec: Parameters<typeof containerSpec>[1], image = BUSYBOX) => {
    const id = await ok(rt.createContainer(pod, containerSpec(image, spec)));
    await ok(rt.startContainer(id));
    return id;
  };
  const sh = async (id: string, script: string) => {
    const r = await ok(rt.execSync(id, ['sh', '-c', script], 30));
    return { out: r.stdout.toString().trim(), err: r.stderr.toString().trim(), code: r.exitCode };
  };
  const until = async (what: string, check: () => Promise<boolean> | boolean, ms = 20_000) => {
    const deadline = Date.now() + ms;
    while (!(await check())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };

  beforeAll(async () => {
    h = await gvisorHarness();
    dir = mkdtempSync(join(tmpdir(), 'hcr-gvisor-rt-'));
    store = new SqliteStateStore(join(dir, 'state.db'));
    rt = runtime(h.engine);
    for (const image of [BUSYBOX, HTTPD]) {
      const pulled = await h.images.pull(image);
      if (pulled.isErr()) throw pulled.error;
    }
  }, 180_000);

  afterAll(async () => {
    for (const id of pods) await rt.removePodSandbox(id);
    rt.close();
    store.close();
    await h.close();
    rmSync(dir, { recursive: true, force: true });
  }, 120_000);

  it("serves on the pod IP through gVisor's network stack, and port-forwards to it", async () => {
    const pod = await newPod();
    const ip = (await ok(rt.podSandboxStatus(pod))).record.network.ips[0]!;
    expect(ip).toMatch(/^10\.97\.0\.\d+$/);
    const web = await run(pod, {}, HTTPD);
    await until('httpd to listen', async () => (await sh(web, 'netstat -ltn | grep -q ":80 "')).code === 0);
    // gVisor took the interface: the address lives in the sandbox, not in the pod's namespace on the host.
    expect((await sh(web, 'ip -4 addr show eth0')).out).toContain(ip);
    // The test talks only to the pod it made (its IP on the test bridge) and to loopback.
    expect(await fetch(`http://${ip}/`).then((r) => r.text())).toContain('hcr-test httpd OK');
    // A client that sends its request slowly still gets an answer (the host network stack of this
    // runsc leaves such a reader asleep forever, which is why the engine uses gVisor's own).
    expect(await slowGet(ip, 80, 1_500)).toContain('hcr-test httpd OK');
    expect(await forwardedGet(rt, pod, 80)).toContain('hcr-test httpd OK');
    // A server bound to the pod loopback alone is out of reach, and the error says why.
    const local = await run(pod, { command: ['busybox', 'httpd', '-f', '-p', '127.0.0.1:8080', '-h', '/www'] }, HTTPD);
    await until(
      'the loopback server',
      async () => (await sh(local, 'netstat -ltn | grep -q "127.0.0.1:8080"')).code === 0,
    );
    const refused = await rt.portForward(pod, 8080, new PassThrough()).then(
      () => null,
      (e: unknown) => e as HcrError,
    );
    expect(refused?.code).toBe('Unavailable');
    expect(refused?.message).toContain('127.0.0.1');
    await ok(rt.removePodSandbox(pod));
  });

  it('runs the container inside gVisor with the pod files, the CRI user and environment', async () => {
    const pod = await newPod({ hostname: 'gv-files' });
    const ip = (await ok(rt.podSandboxStatus(pod))).record.network.ips[0]!;
    const id = await run(pod, {
      command: ['sleep', '3600'],
      envs: [{ key: 'GREETING', value: 'from-cri' }],
      workingDir: '/tmp',
      linux: {
        resources: containerSpec(BUSYBOX).linux.resources,
        security: { ...defaultSecurity, runAsUsername: 'nobody' },
      },
    });
    expect((await sh(id, 'dmesg | head -1')).out).toContain('Starting gVisor');
    expect((await sh(id, 'cat /etc/hostname; hostname')).out).toBe('gv-files\ngv-files');
    expect((await sh(id, 'cat /etc/hosts')).out).toContain(`${ip}\tgv-files`);
    expect((await sh(id, 'id -u; id -g; pwd; echo $GREETING $HOME')).out).toBe(
      '65534\n65534\n/tmp\nfrom-cri /nonexistent',
    );
    await ok(rt.removePodSandbox(pod));
  });

  it('execs with streams, tells exit codes from failures, and kills what times out', async () => {
    const pod = await newPod();
    const id = await run(pod, { command: ['sleep', '3600'] });
    const stdin = new PassThrough();
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    let out = '';
    let err = '';
    stdout.on('data', (d: Buffer) => (out += d.toString()));
    stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exec = rt.exec(id, ['sh', '-c', 'cat; echo to-stderr >&2; exit 7'], {
      stdin,
      stdout,
      stderr,
      tty: false,
      onResize: () => undefined,
    });
    stdin.end('through stdin\n');
    expect((await exec).exitCode).toBe(7);
    expect(out).toBe('through stdin\n');
    expect(err).toBe('to-stderr\n');

    expect((await sh(id, 'exit 128')).code).toBe(128);
    expect((await fails(rt.execSync(id, ['/no/such/binary'], 10))).code).toBe('InvalidArgument');
    const started = Date.now();
    expect((await fails(rt.execSync(id, ['sleep', '300'], 1))).code).toBe('DeadlineExceeded');
    expect(Date.now() - started).toBeLessThan(10_000);
    await until(
      'the timed-out sleep to be killed',
      async () => (await sh(id, 'ps -o args')).out.includes('sleep 300') === false,
    );
    await ok(rt.removePodSandbox(pod));
  });

  it('keeps the log whole across an engine restart, reopens a rotated log, and records the exit', async () => {
    const logDir = mkdtempSync(join(tmpdir(), 'hcr-gvisor-logs-'));
    try {
      const pod = await newPod({ logDirectory: logDir });
      const log = join(logDir, 'counter.log');
      const id = await run(pod, {
        command: ['sh', '-c', 'i=0; while true; do echo line-$i; i=$((i+1)); sleep 0.1; done'],
        logPath: 'counter.log',
      });
      const lines = (path: string) =>
        readFileSync(path, 'utf8')
          .split('\n')
          .filter((l) => l !== '')
          .map((l) => parseCriLogLine(l)?.content ?? '<malformed>');
      await until('some output', () => existsSync(log) && lines(log).length >= 5);

      // An HCR restart: the engine goes away while the container keeps writing, a new one takes over.
      rt.close();
      const engine = await h.reopenEngine();
      rt = runtime(engine);
      expect((await ok(rt.containerStatus(id))).state).toBe('running');
      const before = lines(log).length;
      await until('output after the restart', () => lines(log).length >= before + 5);
      const all = lines(log);
      expect(all).toEqual(all.map((_l, i) => `line-${i}`)); // no gap, no duplicate

      renameSync(log, `${log}.1`);
      await ok(rt.reopenContainerLog(id));
      await until('output in the reopened log', () => existsSync(log) && lines(log).length >= 3);
      const rotated = lines(`${log}.1`);
      expect(lines(log)[0]).toBe(`line-${rotated.length}`);

      await ok(rt.stopContainer(id, 5));
      const status = await ok(rt.containerStatus(id));
      expect(status.state).toBe('exited');
      expect(status.record.exitCode).toBe(143); // SIGTERM
      expect(status.record.reason).toBe('Error');
      await ok(rt.removePodSandbox(pod));
    } finally {
      rmSync(logDir, { recursive: true, force: true });
    }
  });

  it('kills a container that ignores SIGTERM once the grace period is over', async () => {
    const pod = await newPod();
    const id = await run(pod, { command: ['sh', '-c', 'trap "" TERM; while true; do sleep 0.2; done'] });
    const started = Date.now();
    await ok(rt.stopContainer(id, 1));
    const took = Date.now() - started;
    expect(took).toBeGreaterThanOrEqual(1_000);
    expect(took).toBeLessThan(15_000);
    expect((await ok(rt.containerStatus(id))).record.exitCode).toBe(137);
    await ok(rt.removePodSandbox(pod));
  });

  it('stops a pod with running and never-started containers, then removes it', async () => {
    const pod = await newPod();
    const running = await run(pod, { command: ['sleep', '3600'] });
    const idle = await ok(rt.createContainer(pod, containerSpec(BUSYBOX, { command: ['true'] })));
    await ok(rt.stopPodSandbox(pod));
    expect((await ok(rt.podSandboxStatus(pod))).state).toBe('notready');
    expect((await ok(rt.containerStatus(running))).record).toMatchObject({ exitCode: 143, reason: 'Error' });
    expect((await ok(rt.containerStatus(idle))).state).toBe('exited');
    // runsc can no longer reach the sandbox to stop these containers; removal must still converge.
    await ok(rt.removePodSandbox(pod));
    expect(await h.leaks()).toEqual([]);
  });

  it('puts a pod with limits into a cgroup of its own and reports usage', async () => {
    const spec = podSpec();
    const limit = 256 * 1024 * 1024;
    const pod = await newPod({
      linux: {
        ...spec.linux,
        resources: {
          ...containerSpec(BUSYBOX).linux.resources,
          memoryLimitInBytes: limit,
          cpuQuota: 50_000,
          cpuPeriod: 100_000,
        },
      },
    });
    const cgroup = `/sys/fs/cgroup/memory/hcr-gvisor/${pod}`;
    expect(Number(readFileSync(join(cgroup, 'memory.limit_in_bytes'), 'utf8'))).toBe(limit);
    expect(readFileSync(`/sys/fs/cgroup/cpu/hcr-gvisor/${pod}/cpu.cfs_quota_us`, 'utf8').trim()).toBe('50000');
    const id = await run(pod, { command: ['sh', '-c', 'while true; do :; done'] });
    await new Promise((r) => setTimeout(r, 500));
    const c = await ok(rt.containerStats(id));
    expect(c.stats.cpuUsageCoreNanoSeconds).toBeGreaterThan(0n);
    expect(c.stats.memoryUsageBytes).toBeGreaterThan(0);
    const p = await ok(rt.podSandboxStats(pod));
    expect(p.stats.cpuUsageCoreNanoSeconds).toBeGreaterThanOrEqual(c.stats.cpuUsageCoreNanoSeconds);
    expect(p.stats.network).not.toBeNull();
    await ok(rt.removePodSandbox(pod));
    expect(existsSync(cgroup)).toBe(false);
  });

  it('leaves nothing behind', async () => {
    for (const id of pods.splice(0)) await ok(rt.removePodSandbox(id));
    expect(await h.leaks()).toEqual([]);
    expect(execFileSync('runsc', [`--root=${h.runscRoot}`, 'list', '--quiet'], { encoding: 'utf8' }).trim()).toBe('');
  });
});

/** An HTTP/1.0 GET whose request line and end of headers come `delayMs` apart. */
async function slowGet(ip: string, port: number, delayMs: number): Promise<string> {
  const socket = connect(port, ip);
  await once(socket, 'connect');
  let response = '';
  socket.on('data', (d: Buffer) => (response += d.toString()));
  socket.write('GET / HTTP/1.0\r\n');
  await new Promise((r) => setTimeout(r, delayMs));
  socket.write('Host: pod\r\n\r\n');
  const closed = await Promise.race([
    once(socket, 'close').then(() => true),
    new Promise((r) => setTimeout(() => r(false), 10_000)),
  ]);
  socket.destroy();
  if (closed !== true) throw new Error(`no answer within 10 s after a ${delayMs} ms pause in the request`);
  return response;
}

/** Sends an HTTP request through the engine's port-forward and returns the raw response. */
async function forwardedGet(rt: RuntimeService, pod: string, port: number): Promise<string> {
  // A loopback socket pair: one end goes to the engine as the forwarded stream, the test speaks HTTP on the other.
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no address');
  const accepted = new Promise<Socket>((r) => server.once('connection', r));
  const client = connect(address.port, '127.0.0.1');
  const remote = await accepted;
  server.close();
  const forwarding = rt.portForward(pod, port, remote);
  let response = '';
  client.on('data', (d: Buffer) => (response += d.toString()));
  client.write('GET / HTTP/1.0\r\nHost: pod\r\n\r\n');
  await new Promise<void>((r) => client.once('end', () => r()));
  client.destroy();
  remote.destroy();
  await forwarding;
  return response;
}

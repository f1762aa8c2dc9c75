import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { containerConfig, cri, podConfig, rejectsWith } from './helpers/cri.js';
import { BUSYBOX, REGISTRY, leaks, startShim, type TestShim } from './helpers/shim.js';

const HELLO = `${REGISTRY}/hcr-test/unikernel-hello:latest`;
const HTTP = `${REGISTRY}/hcr-test/unikernel-http:latest`;

// Unikernel pods through the CRI socket: deferred binding by image, HTTP from a
// docker pod by pod IP, console in the CRI log, exit codes, refusals.
describe('CRI v1 with the unikernel engine', () => {
  let shim: TestShim;
  let c: ReturnType<typeof cri>;
  let logDir: string;
  const pods = new Set<string>();

  const runPod = async (overrides: Record<string, unknown> = {}, handler = '') => {
    const config = podConfig({ logDirectory: logDir, ...overrides });
    const id = await c.runp(config, handler);
    pods.add(id);
    return { id, config };
  };

  beforeAll(async () => {
    shim = await startShim({ engines: ['docker', 'unikernel'], defaultEngine: 'docker' });
    c = cri(shim);
    logDir = mkdtempSync(join(tmpdir(), 'hcr-uk-logs-'));
    await c.pull(HELLO);
    await c.pull(HTTP);
    await c.pull(BUSYBOX);
  }, 300_000);

  afterEach(async () => {
    for (const id of pods) {
      await c.rmp(id);
      pods.delete(id);
    }
    expect(leaks(shim)).toEqual([]);
  }, 120_000);

  afterAll(async () => {
    await shim?.stop();
    if (logDir) rmSync(logDir, { recursive: true, force: true });
  }, 60_000);

  it('routes an unpinned pod to the unikernel engine by its image and serves HTTP to a docker pod', async () => {
    const uk = await runPod();
    const before = JSON.parse((await c.podStatus(uk.id)).info['info'] ?? '{}') as { engine: string | null };
    expect(before.engine).toBeNull(); // deferred until the first image is known
    const web = await c.create(uk.id, containerConfig(HTTP, { logPath: 'http.log' }), uk.config);
    await c.start(web);
    const after = JSON.parse((await c.podStatus(uk.id)).info['info'] ?? '{}') as {
      engine: string;
      routing: { source: string; reason: string };
    };
    expect(after.engine).toBe(shim.engineName('unikernel'));
    expect(after.routing.source).toBe('image');
    expect(after.routing.reason).toMatch(/unikernel image/);
    const ip = (await c.podStatus(uk.id)).status.network.ip;

    const client = await runPod();
    const cc = await c.create(client.id, containerConfig(BUSYBOX, { command: ['sleep', '3600'] }), client.config);
    await c.start(cc);
    const clientInfo = JSON.parse((await c.podStatus(client.id)).info['info'] ?? '{}') as { engine: string };
    expect(clientInfo.engine).toBe(shim.engineName('docker'));
    let code = -1;
    let body = '';
    // The Linux guest needs a few seconds to boot under software emulation.
    for (let i = 0; i < 60 && code !== 0; i++) {
      const r = await c.execSync(cc, ['wget', '-q', '-O', '-', `http://${ip}:8080/`], 10);
      code = r.exitCode;
      body = r.stdout.toString();
      if (code !== 0) await new Promise((res) => setTimeout(res, 1000));
    }
    expect(code).toBe(0);
    expect(body.length).toBeGreaterThan(0);
    const log = readFileSync(join(logDir, 'http.log'), 'utf8');
    expect(log).toMatch(/ stdout [FP] /);
    await rejectsWith(c.execSync(web, ['true']), status.UNIMPLEMENTED);
  }, 240_000);

  it('shows the unikernel command line in the log and its exit code in the status', async () => {
    const pod = await runPod({}, 'unikernel');
    const hello = await c.create(
      pod.id,
      containerConfig(HELLO, { args: ['hello-from-cri', 'exit=5'], logPath: 'hello.log' }),
      pod.config,
    );
    await c.start(hello);
    await c.waitState(hello, 'CONTAINER_EXITED', 120_000);
    const st = await c.status(hello);
    expect(st.exitCode).toBe(5);
    expect(st.reason).toBe('Error');
    expect(readFileSync(join(logDir, 'hello.log'), 'utf8')).toContain('hello-from-cri');
  }, 180_000);

  it('refuses what a unikernel pod cannot do', async () => {
    const pinned = podConfig({
      logDirectory: logDir,
      linux: { securityContext: { namespaceOptions: { network: 'NODE', pid: 'CONTAINER', ipc: 'POD' } } },
    });
    const msg = await rejectsWith(c.runp(pinned, 'unikernel'), status.UNIMPLEMENTED);
    expect(msg).toMatch(/host network/);
    const pod = await runPod({}, 'unikernel');
    const mixed = await rejectsWith(c.create(pod.id, containerConfig(BUSYBOX), pod.config), status.FAILED_PRECONDITION);
    expect(mixed).toMatch(/cannot mix/);
  }, 120_000);
});

import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { status } from '@grpc/grpc-js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { containerConfig, cri, podConfig, rejectsWith } from './helpers/cri.js';
import { BUSYBOX, HTTPD, leaks, startShim, type TestShim } from './helpers/shim.js';

/** QEMU processes started for this shim (their command lines name its runtime dir). */
function qemuFor(shim: TestShim): string[] {
  let out = '';
  try {
    out = execFileSync('pgrep', ['-af', 'qemu-system'], { encoding: 'utf8' });
  } catch {
    return []; // pgrep exits 1 when nothing matches
  }
  return out
    .split('\n')
    .filter((l) => l.includes(shim.dir))
    .map((l) => l.split(' ')[0] ?? '');
}

// Hyper pods through the CRI socket: a VM per pod with its own kernel, on the
// same CNI network and image service as docker pods.
describe('CRI v1 with the hyper engine', () => {
  let shim: TestShim;
  let c: ReturnType<typeof cri>;
  let logDir: string;
  const pods = new Set<string>();

  const runPod = async (handler: string, overrides: Record<string, unknown> = {}) => {
    const config = podConfig({ logDirectory: logDir, ...overrides });
    const id = await c.runp(config, handler);
    pods.add(id);
    return { id, config };
  };

  beforeAll(async () => {
    shim = await startShim({ engines: ['docker', 'hyper'], defaultEngine: 'docker' });
    c = cri(shim);
    logDir = mkdtempSync(join(tmpdir(), 'hcr-hyper-logs-'));
    await c.pull(BUSYBOX);
    await c.pull(HTTPD);
  }, 300_000);

  afterEach(async () => {
    for (const id of pods) {
      await c.rmp(id);
      pods.delete(id);
    }
    expect(leaks(shim)).toEqual([]);
    expect(qemuFor(shim)).toEqual([]);
  }, 180_000);

  afterAll(async () => {
    await shim?.stop();
    if (logDir) rmSync(logDir, { recursive: true, force: true });
  }, 60_000);

  it('runs a busybox pod in its own VM: guest kernel, logs, exec', async () => {
    const pod = await runPod('hyper');
    const info = JSON.parse((await c.podStatus(pod.id)).info['info'] ?? '{}') as {
      engine: string;
      routing: { reason: string };
    };
    expect(info.engine).toBe(shim.engineName('hyper'));
    expect(info.routing.reason).toMatch(/runtime handler "hyper"/);
    const cid = await c.create(
      pod.id,
      containerConfig(BUSYBOX, { command: ['sh', '-c', 'echo booted-in-vm; sleep 3600'], logPath: 'vm.log' }),
      pod.config,
    );
    await c.start(cid);
    expect((await c.status(cid)).state).toBe('CONTAINER_RUNNING');
    const kernel = (await c.execSync(cid, ['uname', '-r'], 60)).stdout.toString().trim();
    expect(kernel).not.toBe(release());
    expect(kernel.length).toBeGreaterThan(0);
    let log = '';
    for (let i = 0; i < 50 && !log.includes('booted-in-vm'); i++) {
      await new Promise((r) => setTimeout(r, 200));
      log = readFileSync(join(logDir, 'vm.log'), 'utf8');
    }
    expect(log).toMatch(/ stdout F booted-in-vm/);
    const r = await c.execSync(cid, ['sh', '-c', 'echo out; echo err >&2; exit 4'], 60);
    expect([r.stdout.toString(), r.stderr.toString(), r.exitCode]).toEqual(['out\n', 'err\n', 4]);
  }, 300_000);

  it('serves HTTP from a hyper pod to a docker pod by pod IP', async () => {
    const web = await runPod('hyper');
    const httpd = await c.create(web.id, containerConfig(HTTPD), web.config);
    await c.start(httpd);
    const ip = (await c.podStatus(web.id)).status.network.ip;
    const client = await runPod('');
    const cc = await c.create(client.id, containerConfig(BUSYBOX, { command: ['sleep', '3600'] }), client.config);
    await c.start(cc);
    let code = -1;
    for (let i = 0; i < 60 && code !== 0; i++) {
      code = (await c.execSync(cc, ['wget', '-q', '-O', '-', `http://${ip}:80/`], 10)).exitCode;
      if (code !== 0) await new Promise((res) => setTimeout(res, 1000));
    }
    expect(code).toBe(0);
  }, 300_000);

  it("keeps a guest away from HCR's sockets and ports and shares only its own pod's files", async () => {
    const pods = [await runPod('hyper'), await runPod('hyper')];
    const cids: string[] = [];
    for (const pod of pods) {
      const cid = await c.create(pod.id, containerConfig(BUSYBOX, { command: ['sleep', '3600'] }), pod.config);
      await c.start(cid);
      cids.push(cid);
    }
    const [cid] = cids as [string, string];
    const sh = async (script: string) => {
      const r = await c.execSync(cid, ['sh', '-c', script], 60);
      return { out: r.stdout.toString().trim(), err: r.stderr.toString().trim(), code: r.exitCode };
    };
    // HCR's socket, state and runtime dirs are host paths: the guest has its own root filesystem.
    expect((await sh(`test -e ${shim.socket} || test -e ${shim.dir}; echo $?`)).out).toBe('1');
    // The agent's virtio-serial port is the agent's, not the container's.
    expect((await sh('ls /dev')).out.split(/\s+/).filter((d) => /^(vport|hvc|virtio)/.test(d))).toEqual([]);
    // The streaming server listens on the host's loopback: from the pod, the host is its
    // gateway address, where nothing answers on that port; the guest's own loopback is its own.
    const port = new URL((await c.rt<{ url: string }>('Exec', { containerId: cid, cmd: ['true'], stdout: true })).url)
      .port;
    const ip = (await c.podStatus(pods[0]!.id)).status.network.ip;
    const gateway = ip.replace(/\.\d+$/, '.1');
    for (const host of [gateway, '127.0.0.1']) {
      const r = await sh(`nc -w 5 ${host} ${port} </dev/null 2>&1; echo "exit=$?"`);
      expect(r.out).toMatch(/exit=[1-9]/);
      expect(r.out).toMatch(/refused|timed out/i);
    }
    // Each VM's 9p export is its pod's share directory, which holds that pod's containers only.
    pods.forEach((pod, i) => {
      const share = join(shim.dir, 'run', 'sandboxes', pod.id, 'share');
      expect(readdirSync(join(share, 'c'))).toEqual([cids[i]]);
      const qemu = execFileSync('pgrep', ['-af', `qemu-system.*${pod.id.slice(0, 12)}`], { encoding: 'utf8' });
      const exported = [...qemu.matchAll(/-fsdev\s+\S*path=([^,\s]+)/g)].map((m) => m[1]);
      expect(exported).toEqual([share]);
    });
  }, 300_000);

  it('refuses host namespaces and privileged mode, naming the capability', async () => {
    const hostNet = podConfig({
      logDirectory: logDir,
      linux: { securityContext: { namespaceOptions: { network: 'NODE', pid: 'CONTAINER', ipc: 'POD' } } },
    });
    expect(await rejectsWith(c.runp(hostNet, 'hyper'), status.UNIMPLEMENTED)).toMatch(/host network/);
    const priv = podConfig({ logDirectory: logDir, linux: { securityContext: { privileged: true } } });
    expect(await rejectsWith(c.runp(priv, 'hyper'), status.UNIMPLEMENTED)).toMatch(/privileged/);
  }, 60_000);

  it('keeps a hyper pod Ready and its container Running across kill -9 of HCR', async () => {
    const pod = await runPod('hyper');
    const cid = await c.create(pod.id, containerConfig(BUSYBOX, { command: ['sleep', '3600'] }), pod.config);
    await c.start(cid);
    const vmsBefore = qemuFor(shim);
    expect(vmsBefore.length).toBe(1);
    await shim.kill();
    await shim.restart();
    expect((await c.podStatus(pod.id)).status.state).toBe('SANDBOX_READY');
    expect((await c.status(cid)).state).toBe('CONTAINER_RUNNING');
    expect(qemuFor(shim)).toEqual(vmsBefore);
    expect((await c.execSync(cid, ['echo', 'still-here'], 60)).stdout.toString()).toBe('still-here\n');
  }, 300_000);
});

import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { ImageInfo } from '@hcr/core';
import { registration } from '../src/index.js';
import {
  BUSYBOX,
  BUSYBOX_STATIC,
  containerRef,
  docker,
  dockerCli,
  ensurePulled,
  expectNoLeftovers,
  imageInfo,
  makeEngine,
  makeNetns,
  netnsExists,
  ok,
  sandboxRef,
  waitFor,
  type TestEngine,
  type TestNetns,
} from './helpers.js';

let te: TestEngine;
let busybox: ImageInfo;
const namespaces: TestNetns[] = [];

beforeAll(async () => {
  ensurePulled(BUSYBOX);
  ensurePulled(BUSYBOX_STATIC);
  busybox = await imageInfo(BUSYBOX);
  te = await makeEngine();
});

afterEach(async () => {
  await expectNoLeftovers(te.name);
  for (const ns of namespaces.splice(0)) {
    ns.remove();
    expect(netnsExists(ns)).toBe(false);
  }
});

afterAll(async () => {
  await te.engine.close();
});

describe('registration', () => {
  it('declares the docker kind, honest capabilities and a config schema', async () => {
    expect(registration.kind).toBe('docker');
    expect(registration.configSchema.parse({ socket: '/nope' })).toMatchObject({ ok: true });
    expect(registration.configSchema.parse({ sockett: 1 })).toMatchObject({ ok: false });
    expect(te.engine.capabilities.imageKinds).toEqual(['oci']);
    const health = await ok(te.engine.health());
    expect(health).toMatchObject({ ready: true, reason: '' });
    expect(health.info['dockerVersion']).toMatch(/\d+\.\d+/);
  });

  it('reports DockerUnreachable within the health timeout when dockerd is not there', async () => {
    const down = await makeEngine({ socket: '/tmp/hcr-no-such-docker.sock', healthTimeoutMs: 500 });
    const started = Date.now();
    const health = await ok(down.engine.health());
    expect(Date.now() - started).toBeLessThan(2000);
    expect(health).toMatchObject({ ready: false, reason: 'DockerUnreachable' });
    expect(health.message).toContain('/tmp/hcr-no-such-docker.sock');
    const created = await down.engine.createSandbox(sandboxRef());
    expect(created.isErr() && created.error.code).toBe('Unavailable');
    await down.engine.close();
  });
});

describe('sandbox lifecycle', () => {
  it('runs pause inside the pod netns; app containers see the pod IP and hostname', async () => {
    const ns = makeNetns();
    namespaces.push(ns);
    const sb = sandboxRef({ netns: ns, hostname: 'web-0' });
    const created = await ok(te.engine.createSandbox(sb));
    expect(created.engineData['dockerId']).toMatch(/^[0-9a-f]{64}$/);
    expect(await ok(te.engine.sandboxStatus(sb))).toMatchObject({ alive: true });

    const c = containerRef(sb, busybox, { command: ['sh', '-c', 'sleep 3600'] });
    await ok(te.engine.createContainer(c));
    await ok(te.engine.startContainer(c));
    const r = await ok(
      te.engine.execSync(c, ['sh', '-c', 'ip -4 addr show eth0; hostname; cat /etc/hostname /etc/resolv.conf'], 10),
    );
    const out = r.stdout.toString();
    expect(r.exitCode).toBe(0);
    expect(out).toContain(`inet ${ns.ip}/24`);
    expect(out).toMatch(/^web-0$/m);
    expect(out).toContain('search test.hcr');

    await ok(te.engine.stopSandbox(sb, 2));
    expect(await ok(te.engine.sandboxStatus(sb))).toMatchObject({ alive: false });
    expect((await ok(te.engine.containerStatus(c))).state).toBe('exited');
    await ok(te.engine.removeSandbox(sb));
    // The netns is core's: the engine must leave it in place.
    expect(netnsExists(ns)).toBe(true);
  });

  it('stop and remove are idempotent, also for pods that never existed', async () => {
    const sb = sandboxRef();
    await ok(te.engine.createSandbox(sb));
    await ok(te.engine.stopSandbox(sb, 0));
    await ok(te.engine.stopSandbox(sb, 0));
    await ok(te.engine.removeSandbox(sb));
    await ok(te.engine.removeSandbox(sb));
    const ghost = sandboxRef();
    await ok(te.engine.stopSandbox(ghost, 0));
    await ok(te.engine.removeSandbox(ghost));
    expect(await ok(te.engine.sandboxStatus(ghost))).toMatchObject({ alive: false });
  });

  it('adopts the pause container a crashed createSandbox left behind', async () => {
    const sb = sandboxRef();
    await ok(te.engine.createSandbox(sb));
    await docker.getContainer(`hcr_sandbox_${sb.id}`).stop({ t: 0 });
    await ok(te.engine.createSandbox(sb));
    expect(await ok(te.engine.sandboxStatus(sb))).toMatchObject({ alive: true });
    await ok(te.engine.removeSandbox(sb));
  });

  it('removeSandbox removes app containers too, running or not', async () => {
    const sb = sandboxRef();
    await ok(te.engine.createSandbox(sb));
    const running = containerRef(sb, busybox, { command: ['sleep', '3600'] });
    const created = containerRef(sb, busybox, { command: ['true'] });
    await ok(te.engine.createContainer(running));
    await ok(te.engine.startContainer(running));
    await ok(te.engine.createContainer(created));
    await ok(te.engine.removeSandbox(sb));
    const st = await te.engine.containerStatus(running);
    expect(st.isErr() && st.error.code).toBe('NotFound');
  });

  it('fails clearly when pause cannot enter the netns, leaving nothing behind', async () => {
    const sb = sandboxRef();
    const bogus = { ...sb, network: { ...sb.network, netnsPath: mkdtempSync(join(tmpdir(), 'not-a-netns-')) } };
    writeFileSync(join(bogus.network.netnsPath, 'x'), '');
    const r = await te.engine.createSandbox(bogus);
    expect(r.isErr()).toBe(true);
    if (r.isErr())
      expect(r.error.message).toMatch(/infra container exited .*not-a-netns.*setns \/run\/hcr-netns: Invalid argument/);
    rmSync(bogus.network.netnsPath, { recursive: true });
  });
});

describe('container lifecycle', () => {
  it('creates, starts, stops and removes; status has timestamps and reasons', async () => {
    const sb = sandboxRef();
    await ok(te.engine.createSandbox(sb));
    const c = containerRef(sb, busybox, { command: ['sleep', '3600'] });
    await ok(te.engine.createContainer(c));
    const created = await ok(te.engine.containerStatus(c));
    expect(created).toMatchObject({ state: 'created', startedAt: 0n, finishedAt: 0n, reason: '' });
    const before = BigInt(Date.now() - 1000) * 1_000_000n;
    await ok(te.engine.startContainer(c));
    const running = await ok(te.engine.containerStatus(c));
    expect(running.state).toBe('running');
    expect(running.pid).toBeGreaterThan(0);
    expect(running.startedAt).toBeGreaterThan(before);
    await ok(te.engine.stopContainer(c, 1));
    const exited = await ok(te.engine.containerStatus(c));
    expect(exited.state).toBe('exited');
    expect(exited.finishedAt).toBeGreaterThanOrEqual(exited.startedAt);
    expect(exited.exitCode).toBe(137); // sleep ignores SIGTERM as PID 1: killed after the timeout
    expect(exited.reason).toBe('Error');
    await ok(te.engine.stopContainer(c, 1));
    await ok(te.engine.removeContainer(c));
    await ok(te.engine.removeContainer(c));
    const gone = await te.engine.containerStatus(c);
    expect(gone.isErr() && gone.error.code).toBe('NotFound');
    await ok(te.engine.removeSandbox(sb));
  });

  it('reports Completed and Error exits, with container-exited events', async () => {
    const sb = sandboxRef();
    await ok(te.engine.createSandbox(sb));
    const good = containerRef(sb, busybox, { command: ['true'] });
    const bad = containerRef(sb, busybox, { command: ['sh', '-c', 'exit 3'] });
    for (const c of [good, bad]) {
      await ok(te.engine.createContainer(c));
      await ok(te.engine.startContainer(c));
    }
    const exits = await waitFor('two container-exited events', () => {
      const ev = te.events.filter(
        (e) => e.type === 'container-exited' && (e.containerId === good.id || e.containerId === bad.id),
      );
      return ev.length === 2 ? ev : undefined;
    });
    expect(exits.find((e) => e.type === 'container-exited' && e.containerId === good.id)).toMatchObject({
      exitCode: 0,
      reason: 'Completed',
    });
    expect(exits.find((e) => e.type === 'container-exited' && e.containerId === bad.id)).toMatchObject({
      exitCode: 3,
      reason: 'Error',
    });
    expect(await ok(te.engine.containerStatus(good))).toMatchObject({
      state: 'exited',
      exitCode: 0,
      reason: 'Completed',
    });
    expect(await ok(te.engine.containerStatus(bad))).toMatchObject({ state: 'exited', exitCode: 3, reason: 'Error' });
    await ok(te.engine.removeSandbox(sb));
  });

  it('follows Kubernetes command/args rules, env merge, working dir and user', async () => {
    const sb = sandboxRef();
    await ok(te.engine.createSandbox(sb));
    const c = containerRef(sb, busybox, {
      command: ['sh', '-c'],
      args: ['echo "$0|$FOO|$PATH|$(pwd)|$(id -u):$(id -g)|$(id -G)"'],
      envs: [{ key: 'FOO', value: 'bar baz' }],
      workingDir: '/tmp',
      security: { runAsUser: 65534, runAsGroup: 65534, supplementalGroups: [33] },
    });
    await ok(te.engine.createContainer(c));
    await ok(te.engine.startContainer(c));
    await waitFor('exit', async () => ((await ok(te.engine.containerStatus(c))).state === 'exited' ? true : undefined));
    const line = readFileSync(c.logPath, 'utf8').trim().split(' ').slice(3).join(' ');
    expect(line).toMatch(/^sh\|bar baz\|.*\/bin.*\|\/tmp\|65534:65534\|65534 33$/);
    await ok(te.engine.removeSandbox(sb));
  });

  it('creates a missing bind-mount source as a directory and honours read-only mounts', async () => {
    const sb = sandboxRef();
    await ok(te.engine.createSandbox(sb));
    const base = mkdtempSync(join(tmpdir(), 'hcr-mnt-'));
    const missing = join(base, 'made', 'by', 'engine');
    const ro = join(base, 'ro');
    const c = containerRef(sb, busybox, {
      command: ['sh', '-c', 'touch /rw/ok && ! touch /ro/no 2>/dev/null && echo done'],
      mounts: [
        { containerPath: '/rw', hostPath: missing, readonly: false, propagation: 'private', selinuxRelabel: false },
        { containerPath: '/ro', hostPath: ro, readonly: true, propagation: 'private', selinuxRelabel: false },
      ],
    });
    await ok(te.engine.createContainer(c));
    await ok(te.engine.startContainer(c));
    const st = await waitFor('exit', async () => {
      const s = await ok(te.engine.containerStatus(c));
      return s.state === 'exited' ? s : undefined;
    });
    expect(st.exitCode).toBe(0);
    expect(readFileSync(join(missing, 'ok'), 'utf8')).toBe('');
    await ok(te.engine.removeSandbox(sb));
    rmSync(base, { recursive: true });
  });

  it('refuses a container with nothing to run, before touching dockerd', async () => {
    const sb = sandboxRef();
    await ok(te.engine.createSandbox(sb));
    const noCmd = { ...busybox, config: { ...busybox.config, cmd: [], entrypoint: [] } };
    const r = await te.engine.createContainer(containerRef(sb, noCmd));
    expect(r.isErr() && r.error.code).toBe('InvalidArgument');
    await ok(te.engine.removeSandbox(sb));
  });
});

describe('images', () => {
  it('loads a missing image from the image service archive, once', async () => {
    // A private image (unique id) so removing it from dockerd cannot disturb anyone else.
    const tag = `hcr-test/engine-docker-load:${Date.now()}`;
    const cid = dockerCli(['create', BUSYBOX_STATIC, '/bin/true']).trim();
    const exported = await docker.getContainer(cid).export();
    const chunks: Buffer[] = [];
    for await (const chunk of exported) chunks.push(chunk as Buffer);
    dockerCli(['rm', cid]);
    dockerCli(['import', '-c', 'CMD ["/bin/echo","loaded"]', '-', tag], Buffer.concat(chunks));
    const info = await imageInfo(tag);
    const dir = mkdtempSync(join(tmpdir(), 'hcr-archive-'));
    const archive = join(dir, 'image.tar');
    dockerCli(['save', '-o', archive, tag]);
    dockerCli(['rmi', tag]);
    te.images.archives.set(info.id, archive);
    try {
      const sb = sandboxRef();
      await ok(te.engine.createSandbox(sb));
      const a = containerRef(sb, info);
      const b = containerRef(sb, info);
      await Promise.all([ok(te.engine.createContainer(a)), ok(te.engine.createContainer(b))]);
      expect(te.images.requested.filter((id) => id === info.id)).toHaveLength(1);
      await ok(te.engine.startContainer(a));
      await waitFor('exit', async () =>
        (await ok(te.engine.containerStatus(a))).state === 'exited' ? true : undefined,
      );
      expect(readFileSync(a.logPath, 'utf8')).toMatch(/ stdout F loaded\n$/);
      await ok(te.engine.removeSandbox(sb));
    } finally {
      try {
        dockerCli(['rmi', info.id]);
      } catch {
        // not loaded
      }
      rmSync(dir, { recursive: true });
    }
  });

  it('fails with NotFound when dockerd lacks the image and no archive exists', async () => {
    const sb = sandboxRef();
    await ok(te.engine.createSandbox(sb));
    const ghost = { ...busybox, id: `sha256:${'0'.repeat(64)}` };
    const r = await te.engine.createContainer(containerRef(sb, ghost));
    expect(r.isErr() && r.error.code).toBe('NotFound');
    await ok(te.engine.removeSandbox(sb));
  });
});

describe('recovery', () => {
  it('a re-created engine finds its objects in dockerd (inventory)', async () => {
    const sb = sandboxRef();
    await ok(te.engine.createSandbox(sb));
    const c = containerRef(sb, busybox, { command: ['sleep', '3600'] });
    await ok(te.engine.createContainer(c));
    await ok(te.engine.startContainer(c));
    const again = await te.recreate();
    const inv = await ok(again.engine.inventory());
    expect(inv.sandboxIds).toEqual([sb.id]);
    expect(inv.containerIds).toEqual([c.id]);
    expect((await ok(again.engine.containerStatus(c))).state).toBe('running');
    await ok(again.engine.stopContainer(c, 0));
    await ok(again.engine.removeSandbox(sb));
    await again.engine.close();
  });
});

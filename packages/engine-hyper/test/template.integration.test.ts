/**
 * VM templating (`template = true`): pod VMs resumed from a saved template
 * behave like booted ones — exec with the guest kernel, a log, HTTP by pod IP
 * from the host — while each gets its own MAC, IP and RNG state; a template
 * QEMU cannot load falls back to a normal boot; nothing is left behind.
 * Traffic goes only to the pod IPs of the pods made here.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ContainerRef, SandboxRef } from '@hcr/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HyperEngine } from '../src/engine.js';
import { createHash } from 'node:crypto';
import { ASSETS, closeHarness, eventually, Harness, HTTPD, httpGet, ok } from './helpers.js';

interface Pod {
  readonly sandbox: SandboxRef;
  readonly container: ContainerRef;
  readonly engineData: Record<string, unknown>;
}

describe('hyper engine: pods from a VM template', () => {
  let h: Harness;
  let engine: HyperEngine;
  const pods: Pod[] = [];
  const templatesDir = () => join(h.context().stateDir, 'templates');

  const startPod = async (): Promise<Pod> => {
    const sandbox = await h.sandbox();
    const created = await ok(engine.createSandbox(sandbox));
    const container = await h.container(sandbox, HTTPD, {}, join(h.dir, `log-${sandbox.id.slice(0, 8)}`));
    const pod = { sandbox, container, engineData: created.engineData };
    pods.push(pod);
    await ok(engine.createContainer(container));
    await ok(engine.startContainer(container));
    return pod;
  };

  const sh = async (pod: Pod, script: string): Promise<string> => {
    const r = await ok(engine.execSync(pod.container, ['sh', '-c', script], 30));
    expect(r.exitCode, r.stderr.toString()).toBe(0);
    return r.stdout.toString().trim();
  };

  beforeAll(async () => {
    h = await Harness.open();
    engine = await h.engine({ template: true });
    await h.image(HTTPD);
  });

  afterAll(async () => {
    try {
      for (const p of pods) {
        await ok(engine.stopSandbox(p.sandbox, 0));
        await h.dropNetwork(p.sandbox);
        await ok(engine.removeSandbox(p.sandbox));
      }
      await engine.close();
      expect(await h.leaks()).toEqual([]);
      // Only finished templates stay (the cache); no temporary dir of a build.
      expect(readdirSync(templatesDir()).filter((n) => n.startsWith('.'))).toEqual([]);
    } finally {
      await closeHarness(h);
    }
  });

  it('starts two pods from one template, each a working pod of its own', async () => {
    const a = await startPod();
    const b = await startPod();
    const key = a.engineData['template'];
    expect(typeof key === 'string' && key.length > 0, 'pod A was booted, not cloned').toBe(true);
    expect(b.engineData['template']).toBe(key);
    const status = await ok(engine.sandboxStatus(a.sandbox));
    expect(status.info['template']).toBe(key);

    const manifest = JSON.parse(readFileSync(join(ASSETS, 'manifest.json'), 'utf8')) as { kernelRelease: string };
    expect(await sh(a, 'uname -r')).toBe(manifest.kernelRelease);
    expect(await sh(b, 'hostname')).toBe(b.sandbox.spec.hostname);

    // Each clone carries its pod's MAC and IP (the template's NIC had its own MAC).
    for (const p of [a, b]) {
      const ip = p.sandbox.network.ips[0] ?? '';
      expect(await sh(p, 'cat /sys/class/net/eth0/address')).toBe(p.sandbox.network.interfaces[0]?.mac);
      expect(await sh(p, 'ip -4 -o addr show dev eth0')).toContain(`${ip}/`);
      const body = await eventually(() => httpGet(ip), 60_000, `HTTP from ${ip}`);
      expect(body).toContain('hcr-test httpd OK');
    }
    expect(a.sandbox.network.interfaces[0]?.mac).not.toBe(b.sandbox.network.interfaces[0]?.mac);

    // Same saved generator state, reseeded from the host at Hello: the clones' random bytes differ.
    const [ua, ub] = [await sh(a, 'cat /proc/sys/kernel/random/uuid'), await sh(b, 'cat /proc/sys/kernel/random/uuid')];
    expect(ua).toMatch(/^[0-9a-f-]{36}$/);
    expect(ua).not.toBe(ub);
    const [ra, rb] = [
      await sh(a, 'head -c 32 /dev/urandom | od -An -tx1'),
      await sh(b, 'head -c 32 /dev/urandom | od -An -tx1'),
    ];
    expect(ra).not.toBe(rb);

    // The container's output reaches its CRI log like a booted pod's.
    await sh(a, 'echo clone-log-line > /proc/1/fd/1');
    await eventually(
      async () => (readFileSync(a.container.logPath, 'utf8').includes('clone-log-line') ? true : null),
      15_000,
      'the log line in the CRI log',
    );
  });

  it('boots normally when QEMU cannot load the template, and drops it', async () => {
    const [key] = readdirSync(templatesDir()).filter((n) => !n.startsWith('.'));
    expect(key).toBeDefined();
    const dir = join(templatesDir(), key ?? '');
    // A damaged state whose checksum still matches (as if damaged before it was hashed): only QEMU can tell.
    const state = readFileSync(join(dir, 'state'));
    state.fill(0x5a, 64, 4096);
    writeFileSync(join(dir, 'state'), state);
    const manifestPath = join(dir, 'manifest.json');
    const manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as Record<string, unknown>;
    manifest['stateSha256'] = createHash('sha256').update(state).digest('hex');
    writeFileSync(manifestPath, JSON.stringify(manifest));

    const c = await startPod();
    expect(c.engineData['template']).toBe('');
    expect(await sh(c, 'echo booted')).toBe('booted');
    expect(readdirSync(templatesDir()).filter((n) => !n.startsWith('.'))).toEqual([]);
  });
});

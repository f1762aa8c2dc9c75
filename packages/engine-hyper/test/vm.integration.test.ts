/**
 * The VM layer on its own: the guest assets boot on QEMU's microvm under TCG
 * to a hello from the agent over virtio-serial; a VM whose agent never
 * answers is killed by the boot watchdog with its console in the error; the
 * KVM probe settles within its bound.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentClient } from '../src/agent/client.js';
import { PROTOCOL_VERSION } from '../src/protocol/wire.gen.js';
import { QemuDriver } from '../src/vm/qemu.js';
import { ASSETS, bootKernel, closeHarness, eventually, Harness, ok } from './helpers.js';

describe('guest assets boot', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hcr-hyper-boot-'));
  const driver = new QemuDriver();

  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('boots to a hello from the agent, then powers off on Shutdown', async () => {
    const manifest = JSON.parse(readFileSync(join(ASSETS, 'manifest.json'), 'utf8')) as { kernelRelease: string };
    const t0 = performance.now();
    const handle = await ok(
      driver.start({
        name: 'hcr-boot-test',
        dir,
        kernel: bootKernel(),
        initrd: join(ASSETS, 'initrd.img'),
        cmdline: [],
        vcpus: 1,
        memoryMiB: 256,
        accel: 'tcg',
        netnsPath: null,
        nics: [],
        shares: [],
      }),
    );
    try {
      const client = await ok(AgentClient.connect(driver.agentTransport(handle), 5_000));
      const hello = await ok(
        client.request(
          'Hello',
          { hostTime: BigInt(Date.now()) * 1_000_000n, resume: [], entropy: Buffer.alloc(0) },
          90_000,
        ),
      );
      console.log(`hyper: QEMU start to agent hello under TCG: ${(performance.now() - t0).toFixed(0)} ms`);
      expect(hello.protocolVersion).toBe(PROTOCOL_VERSION);
      expect(hello.kernelRelease).toBe(manifest.kernelRelease);
      expect(hello.containers).toEqual([]);
      await ok(client.request('Shutdown', {}, 10_000));
      client.close();
      // The agent powers the VM off; QEMU exits by itself.
      await eventually(async () => (driver.isAlive(handle) ? null : true), 15_000, 'QEMU to exit after Shutdown');
      expect(readFileSync(handle.consoleLog, 'utf8')).toContain('hcr-agent');
    } finally {
      await driver.kill(handle);
    }
    expect(driver.isAlive(handle)).toBe(false);
    expect(existsSync(join(dir, 'qemu.pid'))).toBe(false);
  });
});

describe('hyper engine: VM start failures and the accelerator', () => {
  let h: Harness;
  let hangingInitrd: string;

  beforeAll(async () => {
    h = await Harness.open();
    // An initramfs whose init never starts an agent: busybox-static printing a line, then sleeping.
    const root = join(h.dir, 'hang-root');
    mkdirSync(join(root, 'bin'), { recursive: true });
    mkdirSync(join(root, 'dev'), { recursive: true });
    execFileSync('cp', ['/bin/busybox', join(root, 'bin', 'busybox')]);
    writeFileSync(
      join(root, 'init'),
      '#!/bin/busybox sh\n/bin/busybox mount -t devtmpfs dev /dev\necho hanging-on-purpose > /dev/console\nexec /bin/busybox sleep 100000\n',
    );
    chmodSync(join(root, 'init'), 0o755);
    hangingInitrd = join(h.dir, 'hang.cpio');
    execFileSync('sh', ['-c', 'cd "$1" && find . | cpio -o -H newc --quiet > "$2"', 'sh', root, hangingInitrd]);
  });

  afterAll(async () => {
    // The harness goes even when teardown or the leak check fails, so a failed run leaves nothing.
    try {
      expect(await h.leaks()).toEqual([]);
    } finally {
      await closeHarness(h);
    }
  });

  it('kills a VM whose agent does not say hello in time and shows its console', async () => {
    const engine = await h.engine({ initrd: hangingInitrd, boot_timeout_seconds: 8 });
    const pod = await h.sandbox();
    const t0 = performance.now();
    const r = await engine.createSandbox(pod);
    const elapsed = performance.now() - t0;
    expect(r.isErr()).toBe(true);
    if (r.isErr()) {
      expect(r.error.code).toBe('Unavailable');
      expect(r.error.message).toMatch(/did not come up within 8 s/);
      expect(r.error.message).toContain('hanging-on-purpose');
    }
    expect(elapsed).toBeLessThan(30_000);
    expect((await ok(engine.inventory())).sandboxIds).toEqual([]);
    await h.dropNetwork(pod);
    await engine.close();
  });

  it('settles KVM or TCG within the probe bound and never hangs', async () => {
    const engine = await h.engine({ kvm: 'auto', kvm_probe_timeout_seconds: 4 });
    const t0 = performance.now();
    const health = await eventually(
      async () => {
        const hh = await ok(engine.health());
        return hh.info['accel'] === 'probing' ? null : hh;
      },
      20_000,
      'the accelerator verdict',
    );
    console.log(
      `hyper: accelerator ${health.info['accel']} after ${(performance.now() - t0).toFixed(0)} ms: ${health.info['accelReason']}`,
    );
    expect(['kvm', 'tcg']).toContain(health.info['accel']);
    expect(health.ready).toBe(true);
    expect(performance.now() - t0).toBeLessThan(15_000);
    await engine.close();
  });
});

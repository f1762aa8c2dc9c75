/**
 * Milestone (a): the project's guest assets boot on QEMU's microvm under TCG
 * and the agent answers Hello over virtio-serial. No pod, no network.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { AgentClient } from '../src/agent/client.js';
import { PROTOCOL_VERSION } from '../src/protocol/wire.gen.js';
import { QemuDriver } from '../src/vm/qemu.js';
import { ASSETS, bootKernel } from './helpers.js';

describe('guest assets boot', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hcr-hyper-boot-'));
  const driver = new QemuDriver();

  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('boots to a hello from the agent, then powers off on Shutdown', async () => {
    const manifest = JSON.parse(readFileSync(join(ASSETS, 'manifest.json'), 'utf8')) as { kernelRelease: string };
    const t0 = performance.now();
    const handle = (
      await driver.start({
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
      })
    )._unsafeUnwrap();
    try {
      const client = (await AgentClient.connect(driver.agentTransport(handle), 5_000))._unsafeUnwrap();
      const hello = (
        await client.request('Hello', { hostTime: BigInt(Date.now()) * 1_000_000n, resume: [] }, 90_000)
      )._unsafeUnwrap();
      const bootMs = performance.now() - t0;
      console.log(`hyper: QEMU start to agent hello under TCG: ${bootMs.toFixed(0)} ms`);
      expect(hello.protocolVersion).toBe(PROTOCOL_VERSION);
      expect(hello.kernelRelease).toBe(manifest.kernelRelease);
      expect(hello.containers).toEqual([]);
      (await client.request('Shutdown', {}, 10_000))._unsafeUnwrap();
      client.close();
      // The agent powers the VM off; QEMU exits by itself.
      const deadline = Date.now() + 15_000;
      while (driver.isAlive(handle) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(driver.isAlive(handle)).toBe(false);
      expect(readFileSync(handle.consoleLog, 'utf8')).toContain('hcr-agent');
    } finally {
      await driver.kill(handle);
    }
    expect(driver.isAlive(handle)).toBe(false);
    expect(existsSync(join(dir, 'qemu.pid'))).toBe(false);
  });
});

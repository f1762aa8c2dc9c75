import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { arch, tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { gvisorConfigSchema } from '../src/config.js';
import { overlayUpperDir, parseNetDev } from '../src/host.js';
import { installPauseRootfs, pauseProgram } from '../src/pause.js';
import { isNotFound, parseStats, runscError, runscMessage } from '../src/runsc.js';

describe('runsc output', () => {
  it('keeps the message a person needs from runsc stderr', () => {
    const stderr = [
      'I1125 22:42:55.752046   15433 main.go:217] Args: [runsc start sb1]',
      'W1125 22:42:55.753467   15433 util.go:64] FATAL ERROR: starting container: setting up network: boom',
      'starting container: setting up network: boom',
    ].join('\n');
    expect(runscMessage(stderr)).toBe('starting container: setting up network: boom');
    expect(runscMessage('loading container "x": file does not exist\n')).toBe(
      'loading container "x": file does not exist',
    );
  });

  it('classifies a missing container as NotFound and the rest as Internal', () => {
    expect(isNotFound('loading container "ab": file does not exist')).toBe(true);
    expect(isNotFound('signaling container "c3": no such process')).toBe(false);
    expect(
      runscError('state of ab', 'loading container "ab": file does not exist', { code: 128, signal: null }).code,
    ).toBe('NotFound');
    const err = runscError('start c', '', { code: 128, signal: null });
    expect(err.code).toBe('Internal');
    expect(err.message).toBe('runsc start c: exit 128 without a message');
  });

  it('reads cpu, sandbox memory and pids from events --stats', () => {
    const line =
      '{"type":"stats","id":"c3","data":{"cpu":{"usage":{"total":307007000}},"memory":{"usage":{"limit":0,"usage":6041600,"failcnt":0}},"pids":{"current":2}}}';
    expect(parseStats(`${line}\n`)).toEqual({ cpuNanos: 307007000n, sandboxMemoryBytes: 6041600, pids: 2 });
    expect(() => parseStats('')).toThrow(/no stats/);
  });
});

describe('host tables', () => {
  it("finds the overlay upper dir of a container's root filesystem", async () => {
    const mountinfo = [
      '25 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw',
      '300 25 0:90 / /var/lib/hcr/images/rootfs/c1/merged rw,relatime - overlay overlay rw,lowerdir=l/A:l/B,upperdir=/var/lib/hcr/images/rootfs/c1/upper,workdir=/var/lib/hcr/images/rootfs/c1/work',
      '301 25 0:91 / /with\\040space rw - overlay overlay rw,upperdir=/up\\040per,workdir=/w',
      '302 25 0:92 / /not-overlay rw - tmpfs tmpfs rw',
    ].join('\n');
    expect(await overlayUpperDir('/var/lib/hcr/images/rootfs/c1/merged', mountinfo)).toBe(
      '/var/lib/hcr/images/rootfs/c1/upper',
    );
    expect(await overlayUpperDir('/with space', mountinfo)).toBe('/up per');
    expect(await overlayUpperDir('/not-overlay', mountinfo)).toBeNull();
    expect(await overlayUpperDir('/absent', mountinfo)).toBeNull();
  });

  it('sums non-loopback traffic from /proc/<pid>/net/dev', () => {
    const netdev = [
      'Inter-|   Receive                                                |  Transmit',
      ' face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed',
      '    lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0',
      '  eth0:    5000      50    0    0    0     0          0         0     7000      70    0    0    0     0       0          0',
    ].join('\n');
    expect(parseNetDev(netdev)).toEqual({ rxBytes: 5000, txBytes: 7000 });
  });
});

describe('config', () => {
  it('fills defaults and refuses unknown keys and wrong types by name', () => {
    const parsed = gvisorConfigSchema.parse({});
    expect(parsed).toMatchObject({ ok: true, value: { runsc: '/usr/bin/runsc', platform: 'ptrace', root: '' } });
    expect(gvisorConfigSchema.parse({ network: 'host' })).toMatchObject({
      ok: false,
      error: expect.stringContaining('network'),
    });
    expect(gvisorConfigSchema.parse({ probeTimeoutMs: '1s' })).toMatchObject({
      ok: false,
      error: expect.stringContaining('probeTimeoutMs'),
    });
  });
});

describe('pause program', () => {
  it('is a minimal static x86-64 ELF executable', () => {
    const elf = pauseProgram('x64')!;
    expect(elf.subarray(0, 4)).toEqual(Buffer.from([0x7f, 0x45, 0x4c, 0x46]));
    expect(elf.readUInt16LE(16)).toBe(2); // ET_EXEC
    expect(elf.readUInt16LE(18)).toBe(0x3e); // x86-64
    expect(elf.readBigUInt64LE(24)).toBe(0x400000n + 120n); // entry: right after the headers
    expect(elf.readUInt32LE(64)).toBe(1); // PT_LOAD
    expect(elf.readBigUInt64LE(64 + 32)).toBe(BigInt(elf.length)); // maps the whole file
    expect(elf.length).toBe(129);
    expect(pauseProgram('arm64')).toBeNull();
  });

  it.runIf(arch() === 'x64')('runs, sleeps, and dies of SIGKILL on the host too', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hcr-gvisor-pause-'));
    try {
      const rootfs = await installPauseRootfs(dir);
      const path = join(rootfs, 'pause');
      expect(readFileSync(path)).toEqual(pauseProgram());
      chmodSync(path, 0o755);
      const child = spawn(path, [], { stdio: 'ignore' });
      await new Promise((r) => setTimeout(r, 200));
      expect(child.exitCode).toBeNull(); // still sleeping
      const exited = new Promise((r) => child.once('exit', (_code, signal) => r(signal)));
      child.kill('SIGKILL');
      expect(await exited).toBe('SIGKILL');
      // Installing again over the same content is a no-op.
      expect(await installPauseRootfs(dir)).toBe(rootfs);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import type { KvmSetting } from '../config.js';
import type { Accel } from './driver.js';

/** Which accelerator pods use, and why (shown in health info). */
export interface AccelVerdict {
  readonly accel: Accel;
  readonly reason: string;
}

/** Inputs of a KVM probe boot. */
export interface ProbeTarget {
  readonly qemuBinary: string;
  readonly kernel: string;
  readonly initrd: string;
  readonly timeoutMs: number;
}

/** The line the agent prints when booted with `hcr.probe` (guest/agent/main.c). */
const PROBE_MARKER = 'HCR-PROBE-OK';

/** One verdict per HCR process and probe target: a hanging KVM costs its timeout once. */
const verdicts = new Map<string, Promise<AccelVerdict>>();

function kvmDeviceUsable(): boolean {
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * Boots the real guest kernel and initramfs under KVM with `hcr.probe`, which
 * makes the agent print a marker and power off at once. Nested KVM on the
 * hosts here starts trivial guests but hangs (or aborts on MSR writes) with a
 * real kernel, so only the real kernel reaching userspace counts. Bounded:
 * the probe VM is stopped at the timeout, and killed a second later by
 * `timeout(1)` whatever happens to HCR.
 */
export function probeKvm(t: ProbeTarget): Promise<{ ok: boolean; detail: string; ms: number }> {
  const started = performance.now();
  const args = [
    '-M',
    'microvm',
    '-accel',
    'kvm',
    '-cpu',
    'host',
    '-m',
    '128M',
    '-smp',
    '1',
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-no-reboot',
    '-kernel',
    t.kernel,
    '-initrd',
    t.initrd,
    '-append',
    'console=ttyS0 quiet panic=-1 pci=off hcr.probe',
    '-serial',
    'stdio',
  ];
  return new Promise((resolve) => {
    let out = '';
    let settled = false;
    // coreutils `timeout` bounds the probe even if HCR dies meanwhile (a hung KVM guest would outlive it);
    // it passes our SIGTERM on to QEMU.
    const bound = String(Math.ceil(t.timeoutMs / 1000) + 1);
    const child = spawn('timeout', ['-s', 'KILL', bound, t.qemuBinary, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const finish = (ok: boolean, detail: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      resolve({ ok, detail, ms: Math.round(performance.now() - started) });
    };
    const timer = setTimeout(
      () => finish(false, `the guest did not reach userspace under KVM within ${t.timeoutMs} ms`),
      t.timeoutMs,
    );
    const onData = (chunk: Buffer) => {
      out += chunk.toString('utf8');
      if (out.includes(PROBE_MARKER)) finish(true, 'the guest reached userspace under KVM');
      if (out.length > 65536) out = out.slice(-4096);
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('error', (e) => finish(false, `cannot run ${t.qemuBinary}: ${e.message}`));
    child.on('exit', (code, signal) => {
      if (out.includes(PROBE_MARKER)) finish(true, 'the guest reached userspace under KVM');
      else
        finish(false, `QEMU exited (${signal ?? code}) before the guest reached userspace: ${out.trim().slice(-300)}`);
    });
  });
}

/** Decides KVM or TCG once per process and target: configured, or by the bounded probe. */
export function chooseAccel(setting: KvmSetting, target: ProbeTarget): Promise<AccelVerdict> {
  if (setting === 'off')
    return Promise.resolve({ accel: 'tcg', reason: 'configured (kvm = "off"): software emulation' });
  if (setting === 'on') return Promise.resolve({ accel: 'kvm', reason: 'configured (kvm = "on")' });
  if (!kvmDeviceUsable()) {
    return Promise.resolve({ accel: 'tcg', reason: '/dev/kvm is absent or not usable: software emulation (TCG)' });
  }
  const key = `${target.qemuBinary}\0${target.kernel}\0${target.initrd}`;
  let v = verdicts.get(key);
  if (v === undefined) {
    v = probeKvm(target).then((p) =>
      p.ok
        ? { accel: 'kvm', reason: `KVM probe booted the guest in ${p.ms} ms` }
        : { accel: 'tcg', reason: `KVM probe failed (${p.detail}): software emulation (TCG)` },
    );
    verdicts.set(key, v);
  }
  return v;
}

import { describe, expect, it } from 'vitest';
import { kernelCmdline, qemuArgs } from './qemu.js';
import type { VmSpec } from './driver.js';

const spec: VmSpec = {
  name: 'hcr-pod',
  dir: '/run/hcr/s,1/vm',
  kernel: '/a/vmlinux',
  initrd: '/a/initrd.img',
  cmdline: ['extra=1'],
  vcpus: 2,
  memoryMiB: 384,
  accel: 'tcg',
  netnsPath: '/run/netns/x',
  nics: [{ tap: 'hcrtap0', mac: '02:00:00:00:00:01' }],
  shares: [{ tag: 'hcrshare', path: '/run/hcr/s,1/share' }],
};

describe('qemuArgs', () => {
  const args = qemuArgs(spec);
  const after = (flag: string) => args.filter((_, i) => args[i - 1] === flag);

  it('boots a microvm directly from the kernel with the agent channel, share and NIC', () => {
    expect(after('-M')).toEqual(['microvm,rtc=on']);
    expect(after('-kernel')).toEqual(['/a/vmlinux']);
    expect(after('-m')).toEqual(['384M']);
    expect(after('-smp')).toEqual(['2']);
    expect(after('-chardev')).toEqual(['socket,id=agent,path=/run/hcr/s,,1/vm/agent.sock,server=on,wait=off']);
    expect(after('-device')).toContain('virtserialport,chardev=agent,name=hcr.agent');
    expect(after('-fsdev')).toEqual([
      'local,id=fs0,path=/run/hcr/s,,1/share,security_model=passthrough,multidevs=remap',
    ]);
    expect(after('-netdev')).toEqual(['tap,id=net0,ifname=hcrtap0,script=no,downscript=no']);
    expect(after('-device')).toContain('virtio-net-device,netdev=net0,mac=02:00:00:00:00:01');
    expect(args).toContain('-daemonize');
    expect(after('-pidfile')).toEqual(['/run/hcr/s,1/vm/qemu.pid']);
    expect(args).not.toContain('-cpu');
  });

  it('puts a template VM RAM in a shared file and a clone in a private mapping of it, waiting for its state', () => {
    const template = qemuArgs({ ...spec, memoryFile: { path: '/t/k,1/memory', shared: true } });
    const at = (a: string[], flag: string) => a.filter((_, i) => a[i - 1] === flag);
    expect(at(template, '-object')).toEqual(['memory-backend-file,id=ram,size=384M,mem-path=/t/k,,1/memory,share=on']);
    expect(at(template, '-machine')).toEqual(['memory-backend=ram']);
    expect(template).not.toContain('-incoming');
    const clone = qemuArgs({ ...spec, memoryFile: { path: '/t/k/memory', shared: false }, incoming: true });
    expect(at(clone, '-object')).toEqual(['memory-backend-file,id=ram,size=384M,mem-path=/t/k/memory,share=off']);
    expect(at(clone, '-incoming')).toEqual(['defer']);
    // Everything but the RAM backend and -incoming is the same as a booted VM's: the saved state must fit it.
    const rest = clone.filter(
      (a, i) =>
        !['-object', '-machine', '-incoming'].includes(a) &&
        !['-object', '-machine', '-incoming'].includes(clone[i - 1] ?? ''),
    );
    expect(rest).toEqual(args);
  });

  it('uses the host CPU under KVM', () => {
    const kvm = qemuArgs({ ...spec, accel: 'kvm' });
    expect(kvm.slice(kvm.indexOf('-cpu'), kvm.indexOf('-cpu') + 2)).toEqual(['-cpu', 'host']);
  });
});

describe('kernelCmdline', () => {
  it('adds the TSC workaround only under TCG, and the caller words last', () => {
    expect(kernelCmdline(spec)).toMatch(/^console=ttyS0 .*tsc_early_khz=2000000 no_timer_check extra=1$/);
    expect(kernelCmdline({ ...spec, accel: 'kvm' })).not.toContain('tsc_early_khz');
  });
});
